"""Every `crosslink ...` command the README and the guides name is one the command line has.

An operator types what the docs show. A command renamed, a subcommand merged into another or an
option dropped leaves the docs promising something `crosslink` answers with "No such command",
and nobody notices until an operator does. So each command named in backticks or on a line of a
code block is resolved through the click group in crosslink/cli, and each `--option` it shows
must be one the resolved command takes.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from crosslink.cli import main

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / ".env.example"]
# `crosslink status [--json]` inline; in a table, alternatives are written `show\|export`.
_INLINE = re.compile(r"`(crosslink [^`]+)`")
_FENCE = re.compile(r"```\w*\n(.*?)```", re.DOTALL)
# A code line that runs crosslink, on the host or inside a compose container.
_CODE_LINE = re.compile(r"^\s*(?:\$ )?(?:docker compose exec \S+ )?(crosslink [^#\n]+)", re.MULTILINE)


def named_commands(path: Path) -> list[str]:
    text = path.read_text(encoding="utf-8")
    found = [match.replace("\\|", "|") for match in _INLINE.findall(text)]
    for block in _FENCE.findall(text):
        found += _CODE_LINE.findall(block)
    return found


def problems(command: str) -> list[str]:
    """What is wrong with COMMAND as `crosslink` would take it; empty when it parses."""
    words = [word.strip("[]") for word in shlex.split(command)]
    current: click.Command = main
    where, rest = words[:1], words[1:]
    while isinstance(current, click.Group) and rest and not rest[0].startswith("-"):
        choices = rest[0].split("|")
        unknown = [choice for choice in choices if choice not in current.commands]
        if unknown:
            return [f"`{' '.join(where)}` has no subcommand {', '.join(unknown)}"]
        if len(choices) > 1:
            return []  # alternatives: each exists; options, if any, are not shown for them
        current, where, rest = current.commands[choices[0]], [*where, choices[0]], rest[1:]
    if isinstance(current, click.Group):
        return []
    known = {opt for param in current.params for opt in param.opts} | {"--help"}
    shown = {word.split("=", 1)[0] for word in rest if word.startswith("--")}
    return [f"`{' '.join(where)}` takes no {option}" for option in sorted(shown - known)]


COMMANDS = sorted({(path.relative_to(ROOT).as_posix(), command)
                   for path in DOCS for command in named_commands(path)})


def test_the_scan_finds_the_commands_the_docs_name():
    named = {command for _, command in COMMANDS}
    assert {"crosslink demo", "crosslink status", "crosslink doctor --link acme --config links.yaml"} <= named
    assert any(command.startswith("crosslink dlq list|show") for command in named), "table pipes not read"


@pytest.mark.parametrize("doc,command", COMMANDS, ids=[f"{doc}:{command}" for doc, command in COMMANDS])
def test_each_command_the_docs_name_exists_with_its_options(doc, command):
    assert problems(command) == [], f"{doc} names `{command}`"


@pytest.mark.parametrize("command,problem", [
    ("crosslink statuss", "`crosslink` has no subcommand statuss"),
    ("crosslink dlq list|shw", "`crosslink dlq` has no subcommand shw"),
    ("crosslink backfill --link X [--dry-runn]", "`crosslink backfill` takes no --dry-runn"),
    ("crosslink health producer --url=http://x --wrker N", "`crosslink health producer` takes no --wrker"),
])
def test_a_wrong_command_or_option_is_caught(command, problem):
    assert problems(command) == [problem]
