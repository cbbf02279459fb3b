"""crosslink.journal.versions and `crosslink mapping`: a link's rule versions stored with the
journal, on SQLite and on PostgreSQL, and the read-only commands over them.

The store keeps events and lets crosslink.journal.approvals.decide say what state each version is
in; these tests check what it refuses (rules already in force, a proposal naming too few sides, a
person who is not an approver, a verdict on a version that no longer waits), that a version
activates only with every side it needs, and that two sides approving at the same moment on
PostgreSQL activate it once.
"""

from __future__ import annotations

import dataclasses
import json
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from crosslink.base.settings import get_settings
from crosslink.cli import main
from crosslink.journal.approvals import ACTIVE, BOTH, PROPOSED, REJECTED, RETIRED, SUPERSEDED, WITHDRAWN
from crosslink.journal.chain import rule_version, rules_of
from crosslink.journal.rules import link_from_rules
from crosslink.journal.store import Journal
from crosslink.journal.versions import SETUP_PERSON, MappingVersions, VersionRefused
from schemas.links import Link, Scope, SendControls, load_links

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
LINK = load_links(EXAMPLE).links[0]
# The approvers version 2 names: with it in force, they decide for their sides.
GOVERNED = dataclasses.replace(LINK, sides={
    "partner": dataclasses.replace(LINK.sides["partner"], approvers=("user:2",)),
    "client": dataclasses.replace(LINK.sides["client"], approvers=("user:5",))})


def with_side(link: Link, side: str, **changes) -> Link:
    return dataclasses.replace(link, sides={**link.sides, side: dataclasses.replace(link.sides[side], **changes)})


def remapped(link: Link, client_status: int) -> Link:
    return dataclasses.replace(link, statuses=dataclasses.replace(
        link.statuses, partner_to_client={**link.statuses.partner_to_client, 2: client_status}))


@pytest.fixture
def sqlite_url(tmp_path):
    return f"sqlite:///{tmp_path / 'journal.sqlite3'}"


@pytest.fixture(params=["sqlite", "postgresql"])
def versions(request, tmp_path):
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "postgres_url")
    journal = Journal(url)
    try:
        yield MappingVersions(journal)
    finally:
        journal.close()


def governed(versions: MappingVersions) -> None:
    """The example set up (version 1), then approvers named by both (version 2, in force)."""
    versions.ensure_first(LINK, at="t1")
    versions.propose("demo", rules_of(GOVERNED), by="operator", at="t2")
    versions.approve("demo", 2, "partner", "user:2", at="t3")
    versions.approve("demo", 2, "client", "user:5", at="t4")


def test_version_1_is_the_links_rules_as_set_up_approved_by_both(versions):
    first = versions.ensure_first(LINK, at="t1")
    assert (first.number, first.state, first.needs, first.activated_at) == (1, ACTIVE, BOTH, "t1")
    assert first.rules_hash == rule_version(LINK) and first.rules == rules_of(LINK)
    assert {side: verdict.person for side, verdict in first.approvals().items()} == {
        "partner": SETUP_PERSON, "client": SETUP_PERSON}
    assert versions.ensure_first(remapped(LINK, 13)) == first    # set up once: a later file is a proposal
    assert link_from_rules(versions.active("demo").rules, LINK) == LINK


def test_a_proposal_takes_over_only_once_every_side_it_needs_approved(versions):
    versions.ensure_first(LINK, at="t1")
    proposal = versions.propose("demo", rules_of(GOVERNED), by="operator", at="t2")
    assert (proposal.number, proposal.state, proposal.needs, proposal.proposed_by) == (2, PROPOSED, BOTH, "operator")
    one = versions.approve("demo", 2, "partner", "user:2", at="t3")
    assert not one.activated and versions.active("demo").number == 1 and versions.pending("demo").number == 2
    both = versions.approve("demo", 2, "client", "user:5", at="t4")
    assert both.activated and both.retired == 1 and both.version.activated_at == "t4"
    assert [(version.number, version.state) for version in versions.history("demo")] == [(1, RETIRED), (2, ACTIVE)]
    assert versions.history("demo")[0].closed_at == "t4"
    assert link_from_rules(versions.active("demo").rules, LINK) == GOVERNED


def test_what_is_refused_says_why(versions):
    with pytest.raises(VersionRefused, match="no version in force yet"):
        versions.propose("demo", rules_of(GOVERNED))
    governed(versions)
    with pytest.raises(VersionRefused, match="version 2's, in force"):
        versions.propose("demo", rules_of(GOVERNED))
    with pytest.raises(VersionRefused, match="rules of link 'demo', not 'acme'"):
        versions.propose("acme", rules_of(GOVERNED))
    with pytest.raises(VersionRefused, match="needs the approval of client, partner"):
        versions.propose("demo", rules_of(remapped(GOVERNED, 13)), needs={"client"})
    versions.propose("demo", rules_of(remapped(GOVERNED, 13)))
    with pytest.raises(VersionRefused, match="not an approver of the client side"):
        versions.approve("demo", 3, "client", "user:9")
    with pytest.raises(VersionRefused, match="integration user"):
        versions.approve("demo", 3, "partner", "user:1")
    with pytest.raises(VersionRefused, match="version 1 of link demo is retired"):
        versions.approve("demo", 1, "partner", "user:2")
    with pytest.raises(VersionRefused, match="no version 9"):
        versions.reject("demo", 9, "partner", "user:2")
    with pytest.raises(VersionRefused, match="only a proposal that waits for approvals can be withdrawn"):
        versions.withdraw("demo", 2)


def test_a_narrowing_of_one_sides_sending_needs_that_side_alone(versions):
    governed(versions)
    paused = with_side(GOVERNED, "client", send=SendControls(paused=True, exclude_tasks=(Scope("project", 21),)))
    proposal = versions.propose("demo", rules_of(paused), by="user:5")
    assert proposal.needs == frozenset({"client"})
    assert versions.propose("demo", rules_of(paused), needs=BOTH) == proposal   # the same proposal, as it stands
    recorded = versions.approve("demo", 3, "client", "user:5")
    assert recorded.activated and versions.active("demo").number == 3
    # Lifting it lets more into the partner's account: both decide.
    assert versions.propose("demo", rules_of(GOVERNED)).needs == BOTH


def test_rejected_withdrawn_and_superseded_proposals_leave_the_version_in_force(versions):
    governed(versions)
    versions.propose("demo", rules_of(remapped(GOVERNED, 13)), at="t5")
    versions.approve("demo", 3, "partner", "user:2", at="t6")
    rejected = versions.reject("demo", 3, "client", "user:5", at="t7")
    assert rejected.version.state == REJECTED and rejected.version.closed_at == "t7" and not rejected.activated
    versions.propose("demo", rules_of(remapped(GOVERNED, 13)), at="t8")
    versions.propose("demo", rules_of(remapped(GOVERNED, 14)), at="t9")
    withdrawn = versions.withdraw("demo", 5, by="operator", at="t10")
    assert withdrawn.state == WITHDRAWN and withdrawn.withdrawn_by == "operator"
    states = {version.number: version.state for version in versions.history("demo")}
    assert states == {1: RETIRED, 2: ACTIVE, 3: REJECTED, 4: SUPERSEDED, 5: WITHDRAWN}
    assert versions.active("demo").number == 2 and versions.pending("demo") is None


def test_a_verdict_read_twice_is_recorded_once(versions):
    governed(versions)
    versions.propose("demo", rules_of(remapped(GOVERNED, 13)))
    versions.approve("demo", 3, "client", "user:5")
    again = versions.approve("demo", 3, "client", "user:5")
    assert not again.activated and len(again.version.verdicts) == 1
    versions.approve("demo", 3, "partner", "user:2")
    assert versions.approve("demo", 3, "partner", "user:2").version.state == ACTIVE   # after it took over, too


def test_links_keep_their_own_versions(versions):
    versions.ensure_first(LINK)
    other = dataclasses.replace(LINK, name="acme")
    versions.ensure_first(other)
    versions.propose("acme", rules_of(remapped(other, 13)))
    assert [version.number for version in versions.history("demo")] == [1]
    assert [version.number for version in versions.history("acme")] == [1, 2]


def test_both_sides_approving_at_once_on_postgresql_activate_the_version_once(postgres_url):
    journal = Journal(postgres_url)
    try:
        versions = MappingVersions(journal)
        governed(versions)
        for round_ in range(5):
            number = versions.propose("demo", rules_of(remapped(GOVERNED, 20 + round_))).number
            results = {}
            barrier = threading.Barrier(2)

            def approve(side, person, number=number, results=results, barrier=barrier):
                barrier.wait()
                results[side] = versions.approve("demo", number, side, person)

            threads = [threading.Thread(target=approve, args=args) for args in (("partner", "user:2"),
                                                                                 ("client", "user:5"))]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert sorted(result.activated for result in results.values()) == [False, True]
            assert versions.active("demo").number == number
    finally:
        journal.close()


# --- the commands -----------------------------------------------------------------------------


@pytest.fixture
def mapping_env(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'journal.sqlite3'}"
    monkeypatch.setenv("CROSSLINK_JOURNAL_URL", url)
    get_settings.cache_clear()
    links = tmp_path / "links.yaml"
    links.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    yield url, links
    get_settings.cache_clear()


def run(*words: str) -> str:
    result = CliRunner().invoke(main, list(words))
    assert result.exit_code == 0, result.output
    return result.output


def test_show_history_and_diff_read_the_versions_and_the_file(mapping_env):
    url, links = mapping_env
    config = ("--config", str(links))
    assert "no version recorded yet" in run("mapping", "show", "--link", "demo", *config)
    journal = Journal(url)
    versions = MappingVersions(journal)
    governed(versions)
    versions.propose("demo", rules_of(remapped(GOVERNED, 13)), by="operator", at="t5")
    versions.approve("demo", 3, "client", "user:5", at="t6")
    journal.close()

    shown = run("mapping", "show", "--link", "demo", *config)
    assert f"version 2 in force since t4, rules sha256:{rule_version(GOVERNED)}" in shown
    assert "approved for partner by user:2 at t3" in shown and "approved for client by user:5 at t4" in shown
    assert "pending: version 3, proposed t5 by operator" in shown and "awaiting: partner" in shown
    assert "differ from those in force and are not proposed" in shown   # the file still holds version 1's rules

    history = run("mapping", "history", "--link", "demo", *config)
    assert "version 1   retired" in history and "in force from t1 until t4" in history
    assert "version 3   proposed" in history and "approved for client by user:5 at t6" in history

    diff = run("mapping", "diff", "--link", "demo", *config).splitlines()
    assert diff[0] == "version 2 (active) -> links.yaml"
    assert "  partner approvers: none (were user:2)" in diff and "  client approvers: none (were user:5)" in diff
    between = run("mapping", "diff", "--link", "demo", "--from", "2", "--to", "3", "--lang", "ru", *config)
    assert between.splitlines() == ["version 2 (active) -> version 3 (proposed)", "Статусы:",
                                    "  статус партнёра 2 теперь соответствует статусу клиента 13 (было: 12)"]


def test_the_file_in_force_and_a_missing_version_are_named(mapping_env):
    url, links = mapping_env
    config = ("--config", str(links))
    journal = Journal(url)
    MappingVersions(journal).ensure_first(LINK)
    journal.close()
    assert "links.yaml: the rules in force (version 1)" in run("mapping", "show", "--link", "demo", *config)
    assert run("mapping", "diff", "--link", "demo", *config).splitlines()[1:] == ["no change"]
    missing = CliRunner().invoke(main, ["mapping", "diff", "--link", "demo", "--from", "7", *config])
    assert missing.exit_code == 1 and "no version 7" in missing.output
    unknown = CliRunner().invoke(main, ["mapping", "diff", "--link", "nope", *config])
    assert unknown.exit_code == 1 and "no version in force" in unknown.output


def test_journal_show_names_the_version_each_entry_crossed_under(mapping_env):
    url, links = mapping_env
    journal = Journal(url)
    versions = MappingVersions(journal)

    def crossed(at: str, rules: str) -> None:
        journal.append("demo", kind="comment", side="partner", source={"task": 5, "comment": at},
                       target={"task": 12}, content="0" * 64, rules=rules, at=at)

    crossed("t0", rule_version(LINK))       # before versions were kept, under the rules set up as version 1
    governed(versions)                      # version 1 at t1, version 2 (approvers named) in force at t4
    crossed("t2", rule_version(LINK))
    crossed("t5", rule_version(GOVERNED))
    crossed("t6", "7" * 64)                 # rules no version holds
    versions.propose("demo", rules_of(LINK), by="operator", at="t7")   # version 3 undoes version 2
    versions.approve("demo", 3, "partner", "user:2", at="t7")
    versions.approve("demo", 3, "client", "user:5", at="t8")
    crossed("t9", rule_version(LINK))       # version 1's rules again, now as version 3
    journal.close()

    lines = run("journal", "show", "--link", "demo", "--config", str(links)).splitlines()
    assert [line.split("  rules ")[1].split()[0] for line in lines] == ["v1", "v1", "v2", "v?", "v3"]
    assert f"rules v2 {rule_version(GOVERNED)[:12]}  hash " in lines[2]
    shown = run("journal", "show", "--link", "demo", "--config", str(links), "--json").splitlines()
    assert [json.loads(line)["version"] for line in shown] == [1, 1, 2, None, 3]
    assert all(json.loads(line)["rules"] for line in shown)


def test_operator_commands_take_the_rules_in_force_not_the_files(tmp_path):
    """reconcile, backfill, pair and mirror compare and queue by the rules the workers run: the
    file's rules while the link has no version, the version in force once it has one, however
    the file was edited meanwhile; a link with no journal yet gets none made."""
    from crosslink.base.settings import Settings
    from crosslink.journal.store import SQLITE_FILE
    from crosslink.operations.session import link_in_force

    links = tmp_path / "links.yaml"
    links.write_text(EXAMPLE.read_text(encoding="utf-8"), encoding="utf-8")
    settings = Settings.from_env({})
    assert link_in_force("demo", str(links), settings) == LINK
    journal_file = tmp_path / SQLITE_FILE   # beside links.yaml, where the workers keep it
    assert not journal_file.exists()
    journal = Journal(f"sqlite:///{journal_file}")
    governed(MappingVersions(journal))
    journal.close()
    # The file edited (status 2 now maps to 13) and not proposed: version 2's rules stay in force.
    edited = EXAMPLE.read_text(encoding="utf-8")
    assert edited.count("2: 12") == 1
    links.write_text(edited.replace("2: 12", "2: 13"), encoding="utf-8")
    assert load_links(links).links[0].statuses == remapped(LINK, 13).statuses
    assert link_in_force("demo", str(links), settings) == GOVERNED
    with pytest.raises(KeyError):
        link_in_force("nowhere", str(links), settings)
