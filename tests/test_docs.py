"""The operator docs say what the code does: the scenario bodies an admin pastes, the links.yaml
example they start from, the files they are pointed at, and the journal's kinds and commands.

An admin copies docs/planfix-setup.md into Planfix by hand; a body template that drifted from
producers/scenarios.py would be answered 200 and then rejected, event after event, and an example
that no longer lints would be the first thing a newcomer trips on.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from crosslink.cli import main
from crosslink.journal.chain import KINDS
from producers.scenarios import EVENT_BODIES
from schemas.links import lint_file

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "docs" / "planfix-setup.md"
JOURNAL = ROOT / "docs" / "journal.md"
DOCS = [ROOT / "README.md", SETUP, ROOT / "docs" / "architecture.md", JOURNAL]
_BLOCK = re.compile(r"```(?P<lang>\w*)\n(?P<body>.*?)```", re.DOTALL)
# A repository path in backticks: `crosslink/queue/enqueue.py`, `deploy/demo/`, `docker-compose.yml`.
_PATH = re.compile(r"`([A-Za-z0-9_.-]+(?:/[A-Za-z0-9_.-]*)*)`")


def blocks(path: Path, lang: str) -> list[str]:
    return [m.group("body") for m in _BLOCK.finditer(path.read_text(encoding="utf-8"))
            if m.group("lang") == lang]


@pytest.mark.parametrize("event", sorted(EVENT_BODIES))
def test_setup_guide_gives_each_scenario_body_verbatim(event):
    assert EVENT_BODIES[event] in [body.strip() for body in blocks(SETUP, "text")]


def test_setup_guide_gives_no_other_body():
    assert len(blocks(SETUP, "text")) == len(EVENT_BODIES)


def test_setup_guides_links_example_lints_clean(tmp_path):
    (example,) = blocks(SETUP, "yaml")
    path = tmp_path / "links.yaml"
    path.write_text(example, encoding="utf-8")
    assert lint_file(path) == []


@pytest.mark.parametrize("doc", DOCS, ids=[doc.name for doc in DOCS])
def test_files_the_docs_name_exist(doc):
    top = {entry.name for entry in ROOT.iterdir()}
    named = [path for path in _PATH.findall(doc.read_text(encoding="utf-8"))
             if path.split("/")[0] in top and ("/" in path or "." in path)]
    assert named, "the scan finds no paths: the pattern is broken"
    missing = [path for path in named if not (ROOT / path).exists()]
    assert not missing, f"{doc.name} names files that do not exist: {missing}"


def test_the_journal_guide_names_every_kind_an_entry_can_have():
    rows = re.findall(r"^\| `([^|]+)` \|", JOURNAL.read_text(encoding="utf-8"), re.MULTILINE)
    named = {kind.strip() for row in rows for kind in row.replace("`", "").split(",")}
    assert set(KINDS) <= named, f"docs/journal.md does not name: {sorted(set(KINDS) - named)}"


def test_the_journal_guides_commands_parse():
    """Each command the guide shows, with its options, as `crosslink` would parse it (--help stops
    it before it runs)."""
    commands = [shlex.split(line) for body in blocks(JOURNAL, "sh") for line in body.splitlines() if line.strip()]
    assert {words[2] for words in commands} == {"show", "export", "verify"}
    for words in commands:
        assert words[:2] == ["crosslink", "journal"], words
        result = CliRunner().invoke(main, [*words[1:], "--help"])
        assert result.exit_code == 0, f"{shlex.join(words)}: {result.output}"
        bad = CliRunner().invoke(main, [*words[1:], "--no-such-option", "--help"])
        assert bad.exit_code != 0  # the check can fail
