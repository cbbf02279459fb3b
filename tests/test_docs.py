"""The operator docs say what the code does: the scenario bodies an admin pastes, the links.yaml
example they start from, the files they are pointed at, and the journal's kinds and commands.

An admin copies docs/planfix-setup.md into Planfix by hand; a body template that drifted from
producers/scenarios.py would be answered 200 and then rejected, event after event, and an example
that no longer lints would be the first thing a newcomer trips on.
"""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner

from crosslink.cli import main
from crosslink.journal.approvals import ACTIVE, APPROVED_VERDICT, BOTH, PROPOSED
from crosslink.journal.chain import KINDS, rule_version, rules_of
from crosslink.journal.rules_diff import readable_diff
from crosslink.journal.versions import Verdict, Version
from crosslink.operations.doctor import RULE_LEVELS, Finding
from crosslink.operations.rules_check import standing
from producers.scenarios import EVENT_BODIES
from schemas.links import Scope, SendControls, lint_file, load_links

ROOT = Path(__file__).resolve().parents[1]
SETUP = ROOT / "docs" / "planfix-setup.md"
JOURNAL = ROOT / "docs" / "journal.md"
MAPPING = ROOT / "docs" / "mapping.md"
EXAMPLE = ROOT / "crosslink" / "examples" / "links.yaml"
DOCS = [ROOT / "README.md", SETUP, ROOT / "docs" / "architecture.md", JOURNAL, MAPPING,
        ROOT / "docs" / "monitoring.md", ROOT / "docs" / "planfix.md"]
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


def test_the_mapping_guides_commands_parse():
    commands = [shlex.split(line) for body in blocks(MAPPING, "sh") for line in body.splitlines() if line.strip()]
    assert {words[2] for words in commands if words[1] == "mapping"} == {"show", "history", "diff", "propose"}
    assert {words[1] for words in commands} == {"mapping", "lint-config", "doctor"}
    for words in commands:
        assert words[0] == "crosslink", words
        result = CliRunner().invoke(main, [*words[1:], "--help"])
        assert result.exit_code == 0, f"{shlex.join(words)}: {result.output}"
        bad = CliRunner().invoke(main, [*words[1:], "--no-such-option", "--help"])
        assert bad.exit_code != 0  # the check can fail


def test_the_mapping_guides_rule_warnings_are_what_lint_config_and_doctor_say():
    """The samples: acme's links.yaml changes version 3, in force; or it is proposed version 4,
    approved by the partner only."""
    link = dataclasses.replace(load_links(EXAMPLE).links[0], name="acme")
    in_force = Version(link="acme", number=3, rules_hash="3" * 64, rules={}, state=ACTIVE, needs=BOTH,
                       proposed_at="t1", activated_at="t2")
    proposed = Version(link="acme", number=4, rules_hash=rule_version(link), rules={}, state=PROPOSED, needs=BOTH,
                       proposed_at="t3", verdicts=(Verdict("partner", APPROVED_VERDICT, "user:2", "t4"),))
    changed, waiting = standing(link, [in_force]), standing(link, [in_force, proposed])
    (lint_sample,) = [body for body in blocks(MAPPING, "") if body.startswith("links.yaml: warning")]
    assert lint_sample.splitlines() == [f"links.yaml: warning: link acme: {changed.message}",
                                        f"    fix: {changed.fix}", "links.yaml: OK, 1 warning(s)"]
    (doctor_sample,) = [body for body in blocks(MAPPING, "") if body.startswith("warn rules")]
    assert doctor_sample.strip() == Finding(RULE_LEVELS[waiting.state], "rules", waiting.message, waiting.fix).line()


def test_the_mapping_guides_side_keys_lint_clean_under_a_side(tmp_path):
    (keys,) = blocks(MAPPING, "yaml")
    anchor = "        assignee_note_field: 202"
    text = EXAMPLE.read_text(encoding="utf-8")
    indented = "\n".join(f"        {line}" if line else line for line in keys.splitlines())
    path = tmp_path / "links.yaml"
    path.write_text(text.replace(anchor, f"{anchor}\n{indented}"), encoding="utf-8")
    assert lint_file(path) == []
    client = load_links(path).links[0].sides["client"]
    assert client.send.exclude_tasks and client.approvers == ("user:5",)


def test_the_mapping_guides_diff_is_what_the_diff_says():
    """The sample: version 2 maps the partner's 2 to the client's 13, and the client pauses and
    holds back project 21."""
    (sample,) = [body for body in blocks(MAPPING, "") if body.startswith("version ")]
    link = load_links(EXAMPLE).links[0]
    proposed = dataclasses.replace(link, statuses=dataclasses.replace(
        link.statuses, partner_to_client={**link.statuses.partner_to_client, 2: 13}))
    proposed = dataclasses.replace(proposed, sides={**link.sides, "client": dataclasses.replace(
        link.sides["client"], send=SendControls(paused=True, exclude_tasks=(Scope("project", 21),)))})
    lines = sample.strip().splitlines()
    assert lines[1:] == readable_diff(rules_of(link), rules_of(proposed))
