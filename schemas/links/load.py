"""Loading the links file for real: the start-up path, where any problem stops everything.

``lint_file`` reports problems; a worker, the producer or a command that needs the links must
not run on a file with any, so loading raises ``ConfigError`` carrying every issue at once.
"""

from __future__ import annotations

from pathlib import Path

from schemas.links.lint import LintIssue, lint_text
from schemas.links.model import LinksConfig


class ConfigError(Exception):
    """The links file is unusable; ``issues`` lists every problem found."""

    def __init__(self, source: str, issues: list[LintIssue]):
        self.source = source
        self.issues = issues
        listing = "\n".join(f"  {issue}" for issue in issues)
        super().__init__(f"{source}: {len(issues)} problem(s) in the link configuration:\n{listing}")


def parse_links(text: str, source_name: str = "<string>") -> LinksConfig:
    config, issues = lint_text(text, source_name)
    if issues or config is None:
        raise ConfigError(source_name, issues)
    return config


def load_links(path: str | Path) -> LinksConfig:
    return parse_links(Path(path).read_text(encoding="utf-8"), str(path))
