"""`crosslink lint-config` and `crosslink doctor` know about approvals: links.yaml holding rules the
sides have not approved is a warning naming the command that proposes them, a proposal waiting
is named with the sides it waits for, and the rules in force say nothing (lint) or ok (doctor).

lint-config must stay usable offline: with no journal at hand it says nothing about approvals,
and it never makes a journal file (opening an SQLite URL would).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from crosslink.base.settings import get_settings
from crosslink.cli import main
from crosslink.journal.chain import rules_of
from crosslink.journal.store import SQLITE_FILE, Journal
from crosslink.journal.versions import MappingVersions
from crosslink.operations.doctor import NOTE, OK, WARN, rules_findings
from crosslink.operations.rules_check import FIRST, IN_FORCE, UNAPPROVED, WAITING, standing
from tests.test_mapping_versions import EXAMPLE, GOVERNED, LINK, remapped

# A journal server nobody listens on: lint-config must take it as out of reach, and soon.
NOBODY_LISTENS = "postgresql+psycopg://crosslink:pw@127.0.0.1:1/crosslink"


@pytest.fixture
def links_file(tmp_path, monkeypatch):
    """The example links file in a folder of its own; the journal, when a test makes one, beside it."""
    monkeypatch.delenv("CROSSLINK_JOURNAL_URL", raising=False)
    get_settings.cache_clear()
    path = tmp_path / "links.yaml"
    shutil.copy(EXAMPLE, path)
    yield path
    get_settings.cache_clear()


@pytest.fixture
def journal_beside() -> Iterator[Callable[[Path], MappingVersions]]:
    """Opens (and so makes) the journal beside a links file; closed after the test."""
    opened: list[Journal] = []

    def open_beside(links_file: Path) -> MappingVersions:
        opened.append(Journal(f"sqlite:///{links_file.parent / SQLITE_FILE}"))
        return MappingVersions(opened[-1])

    yield open_beside
    for journal in opened:
        journal.close()


def lint(links_file):
    result = CliRunner().invoke(main, ["lint-config", str(links_file)])
    assert result.exit_code == 0, result.output   # a rule change waiting for approval is not an error
    return result


def test_where_the_file_stands_against_the_versions(tmp_path):
    journal = Journal(f"sqlite:///{tmp_path / 'journal.sqlite3'}")
    versions = MappingVersions(journal)
    assert standing(LINK, []).state == FIRST and "version 1" in standing(LINK, []).message
    versions.ensure_first(GOVERNED, at="t1")
    found = standing(LINK, versions.history("demo"))
    assert found.state == UNAPPROVED
    assert found.message == "links.yaml changes the rules in force (v1): not approved yet"
    assert found.fix.startswith("propose it with: crosslink mapping propose --link demo")
    assert standing(GOVERNED, versions.history("demo")).message == "links.yaml holds the rules in force (v1)"

    versions.propose("demo", rules_of(LINK), by="operator", at="t2")
    versions.approve("demo", 2, "partner", "user:2", at="t3")
    waiting = standing(LINK, versions.history("demo"), "acme.yaml")
    assert waiting.state == WAITING
    assert waiting.message.startswith("acme.yaml holds proposed v2: waiting for approval by client (partner approved)")
    other = standing(remapped(LINK, 13), versions.history("demo"))
    assert other.state == UNAPPROVED and "proposing it supersedes pending v2" in other.message

    versions.approve("demo", 2, "client", "user:5", at="t4")
    assert standing(LINK, versions.history("demo")).state == IN_FORCE
    back = standing(GOVERNED, versions.history("demo"))
    assert back.state == UNAPPROVED and back.message.startswith("links.yaml changes the rules in force (v2) back to those of v1 (retired): not approved")
    journal.close()


def test_lint_config_says_nothing_of_rules_in_force(links_file, journal_beside):
    journal_beside(links_file).ensure_first(LINK)
    result = lint(links_file)
    assert result.output == f"{links_file}: OK\n"


def test_lint_config_warns_of_a_change_nobody_approved_with_the_command_that_proposes_it(links_file, journal_beside):
    journal_beside(links_file).ensure_first(GOVERNED)   # the file has since dropped the approvers
    result = lint(links_file)
    assert (f"{links_file}: warning: link demo: links.yaml changes the rules in force (v1): not approved yet\n"
            "    fix: propose it with: crosslink mapping propose --link demo") in result.output
    assert result.stdout.splitlines()[-1] == f"{links_file}: OK, 1 warning(s)"


def test_lint_config_names_a_proposal_waiting_and_whom_it_waits_for(links_file, journal_beside):
    versions = journal_beside(links_file)
    versions.ensure_first(GOVERNED)
    versions.propose("demo", rules_of(LINK), by="operator")
    result = lint(links_file)
    assert (f"{links_file}: warning: link demo: links.yaml holds proposed v2: waiting for approval by client and "
            "partner; the rules in force (v1) stay until then") in result.output
    versions.approve("demo", 2, "client", "user:5")
    assert "waiting for approval by partner (client approved)" in lint(links_file).output


def test_lint_config_names_the_set_up_to_come_of_a_link_with_no_version(links_file, journal_beside):
    journal_beside(links_file)   # a journal, but this link never started
    result = lint(links_file)
    assert f"{links_file}: note: link demo: no rule version recorded yet" in result.output
    assert "version 1" in result.output and "first worker start" in result.output
    assert result.stdout.splitlines()[-1] == f"{links_file}: OK"


def test_lint_config_offline_neither_needs_nor_makes_a_journal(links_file, monkeypatch):
    assert lint(links_file).output == f"{links_file}: OK\n"
    assert not (links_file.parent / SQLITE_FILE).exists()

    elsewhere = links_file.parent / "elsewhere" / "journal.sqlite3"
    monkeypatch.setenv("CROSSLINK_JOURNAL_URL", f"sqlite:///{elsewhere}")
    get_settings.cache_clear()
    assert lint(links_file).output == f"{links_file}: OK\n"
    assert not elsewhere.exists() and not elsewhere.parent.exists()

    monkeypatch.setenv("CROSSLINK_JOURNAL_URL", NOBODY_LISTENS)
    get_settings.cache_clear()
    started = time.monotonic()
    assert lint(links_file).output == f"{links_file}: OK\n"
    assert time.monotonic() - started < 10


def test_the_doctor_reports_the_rules_ok_warn_or_not_checked(links_file, journal_beside):
    (unread,) = rules_findings(LINK, str(links_file))
    assert unread.level == NOTE and unread.message.startswith("approvals not checked: no journal database at sqlite:")
    assert not (links_file.parent / SQLITE_FILE).exists()

    versions = journal_beside(links_file)
    (first,) = rules_findings(LINK, str(links_file))
    assert first.level == NOTE and "first worker start" in first.message

    versions.ensure_first(GOVERNED)
    (changed,) = rules_findings(LINK, str(links_file))
    assert changed.level == WARN
    assert changed.line() == ("warn rules: links.yaml changes the rules in force (v1): not approved yet (fix: propose "
                              "it with: crosslink mapping propose --link demo (what it changes: crosslink mapping "
                              "diff --link demo))")
    assert [(found.level, found.message) for found in rules_findings(GOVERNED, str(links_file))] == [
        (OK, "links.yaml holds the rules in force (v1)")]


def test_the_doctor_names_a_journal_server_that_does_not_answer_without_its_password(links_file, monkeypatch):
    monkeypatch.setenv("CROSSLINK_JOURNAL_URL", NOBODY_LISTENS)
    get_settings.cache_clear()
    (unread,) = rules_findings(LINK, str(links_file))
    assert unread.level == NOTE and "postgresql+psycopg://crosslink:***@127.0.0.1:1/crosslink does not answer" in \
        unread.message
    assert ":pw@" not in unread.line()
