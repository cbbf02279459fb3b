"""Anchors (workers/anchors.py): the journal's head posted on the link's record task in both
accounts, and an export checked against them (`crosslink journal verify --live`).

Real parts throughout: the Planfix emulator over HTTP on loopback with the demo's two accounts
(the client side's notes in Russian), the test session's Redis, an SQLite journal in tmp_path.
Answers are lost the way Planfix loses them (the emulator applies the write, then answers 500),
and an anchor comment is edited the way a person would edit it, through the emulator's world.
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import json
import time
from pathlib import Path

import pytest
import redis
import yaml
from click.testing import CliRunner

from crosslink.base.settings import Settings, get_settings
from crosslink.cli import main
from crosslink.journal.chain import GENESIS, Entry, rule_version, seal
from crosslink.journal.store import Journal
from crosslink.lab.demo import example
from crosslink.lab.stack import integration_token
from crosslink.queue.names import ANCHOR_LINK, SYNC_QUEUE
from planfix.client import PlanfixClient
from planfix.emulator.server import EmulatorServer
from planfix.emulator.world import World
from planfix.errors import TransientError
from schemas.links import load_links
from workers import anchors
from workers.anchors import (
    DAILY,
    MAPPING_VERSION,
    RESUMED,
    RULES_CHECK,
    AnchorParts,
    anchor_job,
    anchor_link,
    check_rules,
    post_anchor,
    record_task,
    stated_head,
)
from workers.app import make_app
from workers.canonical import in_scope
from workers.idempotency import WriteOnce
from workers.record import Recorder
from workers.runtime import reset_runtime
from workers.state import LinkState, record_source_id
from workers.sync import TaskSync

LINK = "demo"
PAVEL, IRINA = 2, 5   # people of the partner's and the client's account


class Accounts:
    """The demo link's two accounts on the emulator, its parts for anchoring, and the environment
    a worker or a command finds them by."""

    def __init__(self, world: World, server: EmulatorServer, store: redis.Redis, tmp_path: Path,
                 redis_url: str, monkeypatch: pytest.MonkeyPatch):
        self.world, self.store = world, store
        emulator = example("emulator.yaml")
        links = copy.deepcopy(example("links.yaml"))
        for conf in links["links"][0]["sides"].values():
            conf["base_url"] = server.base_url(conf["account"])
        links["links"][0]["sides"]["client"]["language"] = "ru"
        self.links = links
        self.links_path = tmp_path / "links.yaml"
        self.write_links(links)
        self.link = load_links(self.links_path).links[0]
        self.journal_url = f"sqlite:///{tmp_path / 'journal.sqlite3'}"
        env = {conf.token_env: integration_token(emulator, conf.account, conf.integration_user)
               for conf in self.link.sides.values()}
        env.update({"REDIS_URL": redis_url, "CROSSLINK_LINKS": str(self.links_path),
                    "CROSSLINK_JOURNAL_URL": self.journal_url, "CROSSLINK_RATE_PER_S": "1000",
                    "CROSSLINK_DAILY_QUOTA": "10000000", "CROSSLINK_TIME_SCALE": "0.01"})
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
        reset_runtime()
        self.clients = {side: PlanfixClient(conf.base_url, env[conf.token_env], account=conf.account)
                        for side, conf in self.link.sides.items()}
        self.journal = Journal(self.journal_url)
        self.state = LinkState(store, LINK)
        self.writes = WriteOnce(store)
        self.parts = AnchorParts(self.clients, self.writes, self.state, self.journal)

    def write_links(self, links: dict) -> None:
        self.links_path.write_text(yaml.safe_dump(links, allow_unicode=True), encoding="utf-8")

    def record(self, count: int, start: int = 1) -> None:
        """COUNT crossings in the journal, as the sync records them."""
        recorder = Recorder(self.journal, self.link)
        for number in range(start, start + count):
            recorder.crossed("task created", "partner", source={"task": number}, target={"task": 100 + number},
                             content={"name": f"task {number}"}, key=f"partner:{number}")

    def comments(self, side: str, task: int) -> list[dict]:
        return list(self.clients[side].list_task_comments(task, fields="id,description,sourceObjectId",
                                                          type_list="All"))

    def record_tasks(self, side: str) -> list[dict]:
        """The tasks of SIDE's account marked as the link's record task."""
        return [task for task in self.world.dump_tasks(side)
                if task.get("sourceObjectId") == record_source_id(LINK, side)]

    def posts(self, side: str, path_end: str) -> int:
        return sum(1 for r in self.world.requests(side) if r["method"] == "POST" and r["path"].endswith(path_end))

    def close(self) -> None:
        for client in self.clients.values():
            client.close()
        self.journal.close()
        get_settings.cache_clear()
        reset_runtime()


@pytest.fixture
def accounts(redis_url, tmp_path, monkeypatch):
    config = example("emulator.yaml")
    for account in config["accounts"].values():
        account["limits"] = {"rate_per_s": None, "daily_quota": None}
    world = World.from_config(config)
    store = redis.Redis.from_url(redis_url)
    try:
        with EmulatorServer(world) as server:
            made = Accounts(world, server, store, tmp_path, redis_url, monkeypatch)
            try:
                yield made
            finally:
                made.close()
    finally:
        store.close()
        world.close()


# --- the record task ----------------------------------------------------------------------------


def test_the_record_task_is_made_once_in_each_account_even_after_a_lost_answer(accounts):
    accounts.world.set_faults("partner", error_500_after_commit=1.0)
    with pytest.raises(TransientError):
        record_task(accounts.parts, accounts.link, "partner")
    accounts.world.set_faults("partner")
    [made] = accounts.record_tasks("partner")      # the lost answer's task: applied, unanswered
    assert record_task(accounts.parts, accounts.link, "partner") == made["id"]    # found, not made again
    assert record_task(accounts.parts, accounts.link, "partner") == made["id"]
    assert len(accounts.record_tasks("partner")) == 1 and accounts.posts("partner", "/task/") == 1
    assert made["name"] == "Crosslink record: demo" and made["project"]["id"] == 10
    assert "Do not delete" in made["description"] and "ACME Consulting / Client Co" in made["description"]

    client_task = record_task(accounts.parts, accounts.link, "client")
    assert record_task(accounts.parts, accounts.link, "client") == client_task
    [made] = accounts.record_tasks("client")
    assert made["id"] == client_task and made["project"]["id"] == 20
    assert made["name"] == "Crosslink, журнал связи: demo" and "Не удаляйте" in made["description"]
    assert accounts.state.record_task("partner") is not None and accounts.state.record_task("client") == client_task


def test_the_record_task_is_nobodys_task_of_the_link_and_its_run_carries_nothing(accounts):
    number = record_task(accounts.parts, accounts.link, "partner")
    [made] = accounts.record_tasks("partner")
    assert not in_scope(accounts.link, "partner", made)
    assert in_scope(accounts.link, "partner", {**made, "sourceObjectId": None})   # in the scope's project
    report = TaskSync(accounts.link, "partner", number, accounts.clients, accounts.state, accounts.writes,
                      None).run()
    assert report.outcome == "out_of_scope" and accounts.state.counterpart("task", "partner", number) is None
    assert accounts.record_tasks("client") == [] and accounts.posts("client", "/task/") == 0


# --- anchors ------------------------------------------------------------------------------------


def test_the_head_is_anchored_in_both_accounts_once_per_head(accounts):
    accounts.record(3)
    first = anchor_link(accounts.parts, accounts.link, DAILY)
    # The link's first anchor records its rules first: that entry is the head it states.
    assert first.reason == "setup" and first.head[0] == 4 and first.head == accounts.journal.head(LINK)
    assert sorted(first.posted) == ["client", "partner"] and not first.failures
    for anchor in first.anchors:
        [comment] = accounts.comments(anchor.side, anchor.task)
        assert comment["id"] == anchor.comment and stated_head(comment["description"]) == first.head
        assert (anchor.seq, anchor.hash) == first.head
    partner, client = (accounts.comments(side, accounts.state.record_task(side))[0]["description"]
                       for side in ("partner", "client"))
    assert f"Crosslink journal head: #4 sha256:{first.head[1]} (setup)" in partner
    assert "(настройка)" in client
    assert accounts.journal.latest(LINK, MAPPING_VERSION).seq == 4

    again = anchor_link(accounts.parts, accounts.link, DAILY)        # nothing crossed since
    assert again.posted == [] and len(again.anchors) == 2 and accounts.posts("partner", "/comments/") == 1
    accounts.record(2, start=4)
    later = anchor_link(accounts.parts, accounts.link, DAILY)
    assert later.reason == DAILY and later.head[0] == 6 and sorted(later.posted) == ["client", "partner"]
    assert [(a.side, a.seq) for a in accounts.journal.anchors(LINK)] == [
        ("partner", 4), ("client", 4), ("partner", 6), ("client", 6)]
    assert accounts.journal.head(LINK)[0] == 6      # an anchor is no entry: it does not move the head


def test_an_anchor_whose_answer_was_lost_is_found_not_posted_twice(accounts):
    accounts.record(1)
    task = record_task(accounts.parts, accounts.link, "client")
    accounts.world.set_faults("client", error_500_after_commit=1.0)
    failed = anchor_link(accounts.parts, accounts.link, DAILY)
    assert failed.posted == ["partner"] and list(failed.failures) == ["client"]
    assert [a.side for a in accounts.journal.anchors(LINK)] == ["partner"]
    accounts.world.set_faults("client")
    [lost] = accounts.comments("client", task)           # applied, its answer lost
    retried = post_anchor(accounts.parts, accounts.link, failed.reason)
    assert retried.posted == ["client"] and accounts.comments("client", task) == [lost]
    assert stated_head(lost["description"]) == failed.head and accounts.posts("client", "/comments/") == 1
    assert sorted((a.side, a.comment) for a in accounts.journal.anchors(LINK)) == [
        ("client", lost["id"]), ("partner", retried.anchors[0].comment)]


def test_a_severed_side_is_skipped_and_anchored_when_access_is_back(accounts):
    accounts.record(2)
    accounts.state.sever("client", "token revoked", time.time())
    cut = anchor_link(accounts.parts, accounts.link, "severed")
    assert cut.posted == ["partner"] and "severed (token revoked)" == cut.skipped["client"]
    assert accounts.record_tasks("client") == [] and accounts.posts("client", "/comments/") == 0
    accounts.state.restore("client")
    resumed = anchor_link(accounts.parts, accounts.link, RESUMED)
    assert resumed.posted == ["client"] and len(resumed.anchors) == 2     # the partner holds this head already
    [comment] = accounts.comments("client", accounts.state.record_task("client"))
    assert "(доступ восстановлен)" in comment["description"]


def test_a_rule_change_is_recorded_once_and_anchored(accounts):
    accounts.record(1)
    # A worker's start sets no link up: the first anchor does.
    assert check_rules(accounts.parts, accounts.link, setup=False) is None
    assert anchor_link(accounts.parts, accounts.link, RULES_CHECK).posted == []
    assert accounts.journal.latest(LINK, MAPPING_VERSION) is None
    set_up = anchor_link(accounts.parts, accounts.link, DAILY)
    assert set_up.reason == "setup"
    assert anchor_link(accounts.parts, accounts.link, RULES_CHECK).posted == []     # the same rules

    changed_links = copy.deepcopy(accounts.links)
    changed_links["links"][0]["fields"]["name"]["owner"] = "client"
    accounts.write_links(changed_links)
    changed = load_links(accounts.links_path).links[0]
    assert rule_version(changed) != rule_version(accounts.link)
    result = anchor_link(accounts.parts, changed, RULES_CHECK)
    assert result.reason == "rules changed" and sorted(result.posted) == ["client", "partner"]
    entry = accounts.journal.latest(LINK, MAPPING_VERSION)
    assert entry.seq == 3 and entry.source == {"rules": rule_version(changed), "previous": rule_version(accounts.link)}
    assert entry.content == entry.rules == rule_version(changed) and result.head == (3, entry.hash)
    [comment] = [c for c in accounts.comments("partner", accounts.state.record_task("partner"))
                 if stated_head(c["description"]) == result.head]
    assert "(rules changed)" in comment["description"]
    assert check_rules(accounts.parts, changed) is None      # recorded once
    # Changed back: a change again, recorded again.
    assert check_rules(accounts.parts, accounts.link) == "rules changed"
    kinds = [entry.kind for entry in accounts.journal.entries(LINK)]
    assert kinds == ["task created", MAPPING_VERSION, MAPPING_VERSION, MAPPING_VERSION]


# --- the job and its schedule --------------------------------------------------------------------


def queued_anchor_jobs(store: redis.Redis) -> list[tuple[list, dict]]:
    """(args, kwargs) of every anchor job in the broker queue, oldest first (kombu LPUSHes)."""
    jobs = []
    for raw in reversed(store.lrange(SYNC_QUEUE, 0, -1)):
        message = json.loads(raw)
        if message["headers"]["task"] == ANCHOR_LINK:
            args, kwargs, _embed = json.loads(base64.b64decode(message["body"]))
            jobs.append((args, kwargs))
    return jobs


def test_the_job_anchors_a_link_sends_one_per_link_and_tries_a_failed_side_again(accounts):
    accounts.record(1)
    assert anchor_job(None, DAILY) == "sent"
    assert queued_anchor_jobs(accounts.store) == [([LINK, DAILY], {"attempt": 0})]
    assert anchor_job(LINK, DAILY) == "anchored"
    assert anchor_job(LINK, DAILY) == "unchanged"
    accounts.record(1, start=2)
    accounts.world.set_faults("client", error_500=1.0)
    assert anchor_job(LINK, DAILY) == "retrying"
    assert queued_anchor_jobs(accounts.store)[-1] == ([LINK, DAILY], {"attempt": 1})
    accounts.world.set_faults("client")
    assert anchor_job(LINK, DAILY, attempt=1) == "anchored"
    assert sorted((a.side, a.seq) for a in accounts.journal.anchors(LINK)) == [
        ("client", 2), ("client", 3), ("partner", 2), ("partner", 3)]


def test_a_starting_worker_sends_each_link_a_check_of_its_rules(accounts):
    anchors.check_rules_on_start()      # worker_ready's receiver, as the worker's main process calls it
    assert queued_anchor_jobs(accounts.store) == [([LINK, RULES_CHECK], {"attempt": 0})]
    accounts.record(1)
    assert anchor_job(LINK, RULES_CHECK) == "unchanged" and accounts.journal.anchors(LINK) == []


def test_the_beat_anchors_every_link_daily_or_as_set():
    schedule = make_app("redis://127.0.0.1:1/0").conf.beat_schedule["crosslink-anchor"]
    assert schedule["task"] == ANCHOR_LINK and schedule["schedule"] == 86400.0
    assert schedule["args"] == [None, DAILY] and schedule["options"]["queue"] == SYNC_QUEUE
    assert make_app("redis://127.0.0.1:1/0", anchor_period_s=3600).conf.beat_schedule["crosslink-anchor"][
        "schedule"] == 3600
    assert Settings.from_env({"CROSSLINK_ANCHOR_PERIOD_S": "43200"}).anchor_period_s == 43200
    with pytest.raises(ValueError, match="CROSSLINK_ANCHOR_PERIOD_S"):
        Settings.from_env({"CROSSLINK_ANCHOR_PERIOD_S": "0"})


# --- the commands --------------------------------------------------------------------------------


def resealed(bundle: dict, seq: int) -> dict:
    """BUNDLE rewritten from entry SEQ on as a forger with the database would: that entry changed,
    every later hash recomputed, the anchors and the manifest made to agree. Offline it passes."""
    forged = copy.deepcopy(bundle)
    entries = [Entry.from_dict(item) for item in forged["entries"]]
    prev = entries[seq - 2].hash if seq > 1 else GENESIS
    for index in range(seq - 1, len(entries)):
        changed = dataclasses.replace(entries[index], prev=prev)
        if index == seq - 1:
            changed = dataclasses.replace(changed, target={"task": 999})
        entries[index] = seal(changed)
        prev = entries[index].hash
    hashes = {entry.seq: entry.hash for entry in entries}
    forged["entries"] = [entry.as_dict() for entry in entries]
    for anchor in forged["anchors"]:
        anchor["hash"] = hashes[anchor["seq"]]
    forged["manifest"]["head"] = {"seq": entries[-1].seq, "hash": entries[-1].hash}
    return forged


def test_anchor_then_verify_live_and_an_edited_anchor_or_a_rewritten_bundle_fails(accounts, tmp_path):
    accounts.record(3)
    runner = CliRunner()
    config = ["--config", str(accounts.links_path)]
    anchored = runner.invoke(main, ["journal", "anchor", "--link", LINK, *config])
    assert anchored.exit_code == 0, anchored.output
    head = accounts.journal.head(LINK)
    assert f"journal head #4 sha256:{head[1]} (setup)" in anchored.output
    partner_task = accounts.state.record_task("partner")
    assert f"partner: record task #{partner_task}, comment #" in anchored.output and "(posted now)" in anchored.output
    again = runner.invoke(main, ["journal", "anchor", "--link", LINK, *config])
    assert again.exit_code == 0 and "posted before" in again.output and "(manual)" in again.output

    out = tmp_path / "demo-journal.json"
    assert runner.invoke(main, ["journal", "export", "--link", LINK, "--out", str(out), *config]).exit_code == 0
    offline = runner.invoke(main, ["journal", "verify", str(out)])
    assert offline.exit_code == 0 and "partner:" not in offline.output          # no --live: nothing read
    live = runner.invoke(main, ["journal", "verify", str(out), "--live", *config])
    assert live.exit_code == 0, live.output
    assert "partner: OK, 1 anchor(s) match" in live.output and "client: OK, 1 anchor(s) match" in live.output

    # A person edits the client's anchor to another hash.
    [comment] = accounts.comments("client", accounts.state.record_task("client"))
    accounts.world.update_comment("client", comment["id"], {"description": comment["description"].replace(
        head[1], "0" * 64)}, author=IRINA)
    edited = runner.invoke(main, ["journal", "verify", str(out), "--live", *config])
    assert edited.exit_code == 1, edited.output
    assert "partner: OK" in edited.output and "client: MISMATCH" in edited.output
    assert f"the account states #4 sha256:{'0' * 64}" in edited.output
    accounts.world.update_comment("client", comment["id"], {"description": comment["description"]}, author=IRINA)

    bundle = json.loads(out.read_text(encoding="utf-8"))
    forged = tmp_path / "forged.json"
    forged.write_text(json.dumps(resealed(bundle, 2)), encoding="utf-8")
    assert runner.invoke(main, ["journal", "verify", str(forged)]).exit_code == 0   # offline, it holds
    caught = runner.invoke(main, ["journal", "verify", str(forged), "--live", *config])
    assert caught.exit_code == 1, caught.output
    assert "partner: MISMATCH" in caught.output and "client: MISMATCH" in caught.output
    bundle["entries"][1]["target"] = {"task": 999}                   # altered without resealing
    forged.write_text(json.dumps(bundle), encoding="utf-8")
    naive = runner.invoke(main, ["journal", "verify", str(forged), "--live", *config])
    assert naive.exit_code == 1 and "FAILED at entry 2 (seq 2)" in naive.output


def test_verify_live_holds_later_heads_apart_from_a_cut_or_rewritten_chain(accounts, tmp_path):
    accounts.record(2)
    runner = CliRunner()
    config = ["--config", str(accounts.links_path)]
    out = tmp_path / "early.json"
    assert runner.invoke(main, ["journal", "anchor", "--link", LINK, *config]).exit_code == 0
    assert runner.invoke(main, ["journal", "export", "--link", LINK, "--out", str(out), *config]).exit_code == 0
    accounts.record(2, start=3)
    assert runner.invoke(main, ["journal", "anchor", "--link", LINK, *config]).exit_code == 0
    # An export older than the latest anchor: that head is later, not a mismatch.
    live = runner.invoke(main, ["journal", "verify", str(out), "--live", *config])
    assert live.exit_code == 0, live.output
    assert "partner: OK, 1 anchor(s) match; 1 later head(s) posted there, the newest #5" in live.output
    # The anchors dropped from a rewritten export: the heads the accounts hold still catch it.
    bundle = resealed(json.loads(out.read_text(encoding="utf-8")), 1)
    bundle["anchors"], bundle["manifest"]["anchors"] = [], 0
    out.write_text(json.dumps(bundle), encoding="utf-8")
    caught = runner.invoke(main, ["journal", "verify", str(out), "--live", *config])
    assert caught.exit_code == 1 and "partner: MISMATCH, 1 problem(s) in 0 anchor(s)" in caught.output
    assert "states #3 sha256:" in caught.output
