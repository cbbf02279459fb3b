"""`crosslink journal audit`: the journal held against both accounts (crosslink/operations/journal_audit.py).

Real parts: the emulator over loopback, the real client, a real Redis, and the sync's own run
(TaskSync with the link's Recorder) making the writes and the entries; then the journal or an
account is damaged the ways the audit must catch: a mirror written with no entry, an entry whose
target never was, an entry row removed; and a person's deletion, which is no fault.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from crosslink.base.settings import get_settings
from crosslink.cli import main
from crosslink.journal.store import SQLITE_FILE, Journal
from crosslink.lab.demo import example
from crosslink.lab.stack import integration_token
from crosslink.operations.journal_audit import GONE, UNFOUNDED, UNRECORDED, audit_journal
from planfix.client import PlanfixClient
from planfix.emulator.server import EmulatorServer
from planfix.emulator.world import World
from schemas.links import load_links
from workers.anchors import SETUP, AnchorParts, anchor_link
from workers.idempotency import WriteOnce
from workers.record import Recorder
from workers.state import LinkState, mirror_marker, mirror_source_id
from workers.sync import TaskSync
from workers.sync.notices import post_note

PAVEL, IRINA_CLIENT = 2, 5


@pytest.fixture
def linked(redis_client, redis_url, tmp_path, monkeypatch) -> Iterator[SimpleNamespace]:
    """The demo link on the emulator (no scenarios: the runs are driven by hand), its journal in
    SQLite beside the links file, and the environment `crosslink journal audit` reads."""
    config = example("emulator.yaml")
    for account in config["accounts"].values():
        account["limits"] = {"rate_per_s": None, "daily_quota": None}
        account["scenarios"] = []
    world = World.from_config(config)
    server = EmulatorServer(world).start()
    links = copy.deepcopy(example("links.yaml"))
    for conf in links["links"][0]["sides"].values():
        conf["base_url"] = server.base_url(conf["account"])
        monkeypatch.setenv(conf["token_env"], integration_token(config, conf["account"], conf["integration_user"]))
    path = tmp_path / "links.yaml"
    path.write_text(yaml.safe_dump(links, allow_unicode=True), encoding="utf-8")
    for name, value in {"REDIS_URL": redis_url, "CROSSLINK_LINKS": str(path), "CROSSLINK_RATE_PER_S": "1000"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("CROSSLINK_JOURNAL_URL", raising=False)
    get_settings.cache_clear()
    link = load_links(path).links[0]
    clients = {side: PlanfixClient(conf.base_url, integration_token(config, conf.account, conf.integration_user),
                                   account=conf.account) for side, conf in link.sides.items()}
    journal = Journal(f"sqlite:///{tmp_path / SQLITE_FILE}")
    state, writes, recorder = LinkState(redis_client, link.name), WriteOnce(redis_client), Recorder(journal, link)
    env = SimpleNamespace(world=world, link=link, clients=clients, journal=journal, path=str(path),
                          anchor=lambda: anchor_link(AnchorParts(clients, writes, state, journal), link, SETUP),
                          sync=lambda side, number: TaskSync(link, side, number, clients, state, writes,
                                                             recorder=recorder).run(),
                          note=lambda side, number, text: post_note(
                              lambda method, *args, **kwargs: getattr(clients[side], method)(*args, **kwargs),
                              writes, link, side, number, text, f"test:{text}", recorder))
    try:
        yield env
    finally:
        for client in clients.values():
            client.close()
        journal.close()
        server.stop()
        world.close()
        get_settings.cache_clear()


def synced_pair(env) -> tuple[int, int, int, int]:
    """A partner task mirrored to the client, a comment each way, a note: all by the sync's run."""
    number = env.world.create_task("partner", {"name": "Audited", "processId": 1, "project": {"id": 10}},
                                   author=PAVEL)
    report = env.sync("partner", number)
    assert report.outcome == "created"
    copy_ = report.counterpart
    env.world.add_comment("partner", number, {"description": "from the partner"}, author=PAVEL)
    env.sync("partner", number)
    mine = env.world.add_comment("client", copy_, {"description": "from the client"}, author=IRINA_CLIENT)
    env.sync("client", copy_)
    env.note("client", copy_, "a note for the client")
    return number, copy_, mine, mirror_of(env, "partner", number, mine)


def mirror_of(env, side: str, number: int, original: int) -> int:
    """The comment on SIDE's task NUMBER that mirrors the other side's comment ORIGINAL."""
    marker = mirror_marker(env.link.name, env.link.other(side), original)
    found = [comment["id"] for comment in env.world.list_task_comments(side, number, {"fields": "id,sourceDataVersion"})
             if comment.get("sourceDataVersion") == marker]
    assert len(found) == 1, found
    return found[0]


def kinds(audit) -> list[tuple[str, str, str]]:
    return sorted((finding.kind, finding.side, finding.what) for finding in audit.findings)


def test_what_the_sync_wrote_and_recorded_passes_the_audit(linked):
    synced_pair(linked)
    # The head posted on the record tasks: the sync's comments, kept as anchors, not entries.
    assert linked.anchor().posted == ["partner", "client"]
    audit = audit_journal(linked.link, linked.journal, linked.clients)
    assert audit.ok and audit.findings == [], [str(finding) for finding in audit.findings]
    assert (audit.mirror_tasks, audit.mirror_comments, audit.notes, audit.chain) == (1, 2, 1, "ok")
    assert audit.entries == len(linked.journal.entries(linked.link.name))


def test_a_mirror_written_with_no_entry_and_an_entry_with_no_mirror_are_caught(linked):
    number, copy_, _, _ = synced_pair(linked)
    # The robot's comment on the client copy, marked as the mirror of partner comment 999: no entry.
    stray = linked.clients["client"].create_comment(copy_, {
        "description": "unrecorded", "sourceObjectId": mirror_source_id("demo", "partner", "comment", 999),
        "sourceDataVersion": mirror_marker("demo", "partner", 999)})
    # An entry for a client comment that never was.
    Recorder(linked.journal, linked.link).crossed("comment", "partner", source={"task": number, "comment": 998,
                                                                                "version": 1},
                                                  target={"task": copy_, "comment": 99999}, content={}, key="x")
    audit = audit_journal(linked.link, linked.journal, linked.clients)
    assert kinds(audit) == [(UNFOUNDED, "client", f"entry {audit.entries} (comment)"),
                            (UNRECORDED, "client", f"comment {stray} on task #{copy_}")]
    assert not audit.ok and audit.chain == "ok"


def test_a_removed_entry_row_is_an_unrecorded_mirror_and_a_broken_chain(linked):
    number, copy_, _, _ = synced_pair(linked)
    created = next(entry for entry in linked.journal.entries(linked.link.name) if entry.kind == "task created")
    with linked.journal.engine.begin() as connection:
        connection.execute(sa.text("DELETE FROM journal_entries WHERE seq = :seq"), {"seq": created.seq})
    audit = audit_journal(linked.link, linked.journal, linked.clients)
    assert (UNRECORDED, "client", f"task #{copy_}") in kinds(audit)
    assert audit.chain.startswith("FAILED") and not audit.ok


def test_a_mirror_a_person_deleted_is_listed_apart_and_fails_nothing(linked):
    _, copy_, mine, mirror = synced_pair(linked)
    linked.world.delete_comment("partner", mirror, author=PAVEL)  # a partner person deletes our copy
    audit = audit_journal(linked.link, linked.journal, linked.clients)
    assert [(finding.kind, finding.side) for finding in audit.findings] == [(GONE, "partner")]
    assert "deleted by a person" in audit.findings[0].detail and audit.ok


def test_the_command_prints_the_findings_and_exits_by_them(linked):
    _, copy_, _, _ = synced_pair(linked)
    run = CliRunner().invoke(main, ["journal", "audit", "--link", "demo", "--config", linked.path])
    assert run.exit_code == 0, run.output
    assert run.output.strip().endswith("unrecorded 0, unfounded 0, gone 0 (by people, no fault)")
    assert "1 mirror tasks, 2 mirror comments, 1 notes" in run.output
    stray = linked.clients["client"].create_comment(copy_, {
        "description": "unrecorded", "sourceObjectId": "s", "sourceDataVersion": mirror_marker("demo", "partner", 7)})
    run = CliRunner().invoke(main, ["journal", "audit", "--link", "demo", "--config", linked.path])
    assert run.exit_code == 1, run.output
    assert f"unrecorded: client comment {stray} on task #{copy_}: mirrors partner comment 7" in run.output
    run = CliRunner().invoke(main, ["journal", "audit", "--link", "demo", "--config", linked.path, "--json"])
    assert run.exit_code == 1 and '"ok": false' in run.output
