"""crosslink.lab.chaos, the parts that need no stack: the fault windows it opens in the emulator, the
hits it counts from the emulator's request log (and the verdict they gate), and the generator's
record, which must always give the oracle a well-defined expected state."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import yaml

import crosslink.lab.chaos as chaos
from crosslink.lab import oracle
from crosslink.lab.chaos import (
    EMULATOR_FAULTS,
    FAULT_KINDS,
    MIN_SHARE,
    Chaos,
    ChaosPlan,
    ChaosReport,
    build_configs,
    client_account,
)
from crosslink.lab.journal_check import JournalCheck
from planfix.emulator.world import World
from schemas.links import parse_links


def fake_stack(plan: ChaosPlan) -> tuple[SimpleNamespace, World]:
    """The parts of a LocalStack the generator and the injector use: the world and the links."""
    emulator, links = build_configs(plan.links)
    for link in links["links"]:
        for side in link["sides"].values():
            side["base_url"] = f"http://127.0.0.1:9/{side.get('account', 'partner')}/rest"
    world = World.from_config(emulator)
    return SimpleNamespace(world=world, config=parse_links(yaml.safe_dump(links))), world


def test_overlapping_fault_windows_keep_each_others_faults(tmp_path, monkeypatch):
    """The emulator replaces an account's faults as a whole: a busy_202 window opening inside a
    quota window once turned the quota fault off for good, and the quota window met no request."""
    monkeypatch.setattr(chaos, "FAULT_WINDOW_S", (0.3, 0.3))
    monkeypatch.setattr(chaos, "FAULT_WINDOW_HOLD_S", 0.0)
    plan = ChaosPlan.quick()
    run = Chaos(plan, tmp_path)
    run.stack, world = fake_stack(plan)
    try:
        quota = threading.Thread(target=run._emulator_window, args=("quota",), kwargs={"quota_exhausted": True})
        quota.start()
        time.sleep(0.1)
        busy = threading.Thread(target=run._emulator_window, args=("busy_202",), kwargs={"busy_202": 0.3})
        busy.start()
        time.sleep(0.1)
        for account in run.accounts():  # both open
            assert world.faults(account)["quota_exhausted"] and world.faults(account)["busy_202"] == 0.3
        quota.join()
        for account in run.accounts():  # the quota window closed, the other one is still open
            assert not world.faults(account)["quota_exhausted"] and world.faults(account)["busy_202"] == 0.3
        busy.join()
        assert all(not world.faults(account)["busy_202"] for account in run.accounts())
    finally:
        world.close()


def test_a_window_is_held_open_until_its_kind_met_requests_in_the_emulator(tmp_path, monkeypatch):
    """Hits are what the emulator answered, not windows opened: a window that met no request
    stays open (up to the hold), and closes once the log shows its share of the plan's minimum."""
    monkeypatch.setattr(chaos, "FAULT_WINDOW_S", (0.1, 0.1))
    plan = ChaosPlan.quick()
    run = Chaos(plan, tmp_path)
    run.stack, world = fake_stack(plan)
    try:
        window = threading.Thread(target=run._emulator_window, args=("timeout",), kwargs={"timeout": 0.3})
        window.start()
        time.sleep(0.6)
        assert window.is_alive() and world.faults("partner")["timeout"] == 0.3
        for _ in range(run._window_target()):
            world.log_request("client1", t=time.time(), method="POST", path="/task/", status=201, user=1,
                              over_limit=False, fault="timeout")
        window.join(timeout=2)
        assert not window.is_alive() and not world.faults("partner")["timeout"]
    finally:
        world.close()


def test_every_fault_kind_gets_the_plans_windows():
    for plan in (ChaosPlan.quick(), ChaosPlan.full()):
        run = Chaos(plan, None)
        counts = {kind: 0 for kind in FAULT_KINDS}
        for at, kind in run.fault_schedule():
            assert 0 < at < plan.events_s * 0.8
            counts[kind] += 1
        assert counts["worker_kill"] == plan.worker_kills and counts["redis_restart"] == plan.redis_restarts
        assert all(counts[kind] == plan.windows_per_kind for kind in FAULT_KINDS
                   if kind not in ("worker_kill", "redis_restart"))
    assert ChaosPlan.full().min_hits >= 20  # the floor for the full run


def test_hits_and_shares_are_counted_from_the_request_log(tmp_path):
    plan = ChaosPlan.quick()
    run = Chaos(plan, tmp_path)
    run.stack, world = fake_stack(plan)
    try:
        run.windows = [(100.0, 110.0, "error_500_after_commit"), (200.0, 210.0, "timeout")]
        log = lambda t, fault, jitter=0.0: world.log_request(  # noqa: E731
            "partner", t=t, method="POST", path="/task/1", status=200, user=1, over_limit=False, fault=fault,
            jitter_s=jitter)
        for t, fault in [(101, "error_500_after_commit"), (102, None), (103, None), (104, "quota"),
                         (105, "rate_429"), (150, "error_500_after_commit"), (201, "timeout"), (202, "slow")]:
            log(t, fault, jitter=0.01)
        run.count_hits()
        hits = run.report.fault_hits
        assert hits["error_500_after_commit"] == 2 and hits["timeout"] == 1 and hits["jitter"] == 8
        # In its window: 1 of the 3 requests that reached the fault draw (the 429 and quota did not).
        assert run.report.fault_shares["error_500_after_commit"] == pytest.approx(1 / 3)
        assert run.report.fault_shares["timeout"] == pytest.approx(1 / 2)
    finally:
        world.close()


def clean_report(**changes) -> ChaosReport:
    report = ChaosReport(links=1, min_hits=3, converged=True,
                         fault_shares={"error_500_after_commit": 0.3, "timeout": 0.3},
                         journal=JournalCheck(chains={"chaos1": "ok"}))
    report.fault_hits.update({kind: 3 for kind in EMULATOR_FAULTS})
    for name, value in changes.items():
        setattr(report, name, value)
    return report


def test_a_run_fails_on_a_fault_kind_hit_too_rarely_or_too_thinly():
    assert clean_report().ok
    short = clean_report()
    short.fault_hits["connection_closed"] = 2
    assert not short.ok and short.hits_short == {"connection_closed": 2}
    assert "SHORT" in short.table() and short.as_dict()["fault_hits_short"] == {"connection_closed": 2}
    thin = clean_report(fault_shares={"error_500_after_commit": MIN_SHARE / 2, "timeout": 0.3})
    assert not thin.ok and list(thin.shares_short) == ["error_500_after_commit"]
    for verdict in ({"lost": 1}, {"duplicates": 1}, {"unexpected": 1}, {"converged": False}, {"journal": None},
                    {"journal": JournalCheck(missing=["note client1 3 4"], chains={"chaos1": "ok"})}):
        assert not clean_report(**verdict).ok


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_generator_records_a_well_defined_workload_the_oracle_can_judge(tmp_path, seed):
    """Every kind of person's action is done and recorded; the record never breaks a rule the
    oracle needs (expect() would raise); and with no sync running, the oracle sees every
    original missing on the other side, and nothing wrong on the side where people wrote."""
    plan = ChaosPlan(links=2, events=400, worker_kills=0, redis_restarts=0, seed=seed)
    run = Chaos(plan, tmp_path)
    run.stack, world = fake_stack(plan)
    try:
        done = [run.one_event(index) for index in range(plan.events)]
        assert {kind for kind in done if kind} == set(chaos.EVENT_KINDS) - {"contest"}  # no copies: no contest
        names = run.people_names()
        for index in range(plan.links):
            link = run.link(index)
            expected = oracle.expect(link, run.actions[index])
            dumps = {"partner": world.dump_tasks("partner"), "client": world.dump_tasks(client_account(index))}
            verdict = oracle.judge(link, expected, dumps, names)
            assert expected and verdict.duplicates == 0 and verdict.unexpected == 0
            missing = {(finding.side, finding.task) for finding in verdict.findings if finding.what == "task"}
            assert missing == {(link.other(task.origin), key) for key, task in expected.items()}
            assert all(finding.side != expected[finding.task].origin for finding in verdict.findings
                       if finding.what in ("task", "name", "description", "status", "assignees"))
    finally:
        world.close()


def test_the_generator_contests_owned_fields_only_when_both_copies_exist(tmp_path):
    """A contest writes both copies at once; the copy on the other side is found by content."""
    plan = ChaosPlan(links=1, events=50, worker_kills=0, redis_restarts=0, seed=5)
    run = Chaos(plan, tmp_path)
    run.stack, world = fake_stack(plan)
    try:
        run._event_create(0, 0, "partner", 3)
        key = next(iter(run.originals[0]))
        assert run._event_contest(1, 0, "client", 5) is None  # no client copy yet
        world.create_task("client1", {"name": f"[{key}] made by hand", "project": {"id": 20}}, author=5)
        assert run._event_contest(2, 0, "client", 5) == "contest"
        action = run.actions[0][-1]
        assert action.kind == oracle.CONTEST and set(action.values["values"]) == {"partner", "client"}
        field = action.values["field"]
        assert world.account("partner").tasks[1][field] == action.values["values"]["partner"]
        assert world.account("client1").tasks[1][field] == action.values["values"]["client"]
        oracle.expect(run.link(0), run.actions[0])
    finally:
        world.close()


def test_comments_are_edited_and_deleted_where_webhooks_are_dropped(tmp_path):
    """The one case once known to lose data is part of every run, not avoided: while an
    account's scenarios are off, people there edit and delete comments, and the run counts it."""
    plan = ChaosPlan(links=2, events=200, worker_kills=0, redis_restarts=0, seed=4)
    run = Chaos(plan, tmp_path)
    run.stack, world = fake_stack(plan)
    try:
        for index in range(120):
            run.one_event(index)
        run.scenarios_off.add("client2")
        kinds = [run.one_event(index) for index in range(120, 200)]
        dropped = {kind: count for kind, count in run.report.events_by_kind.items() if "(webhooks dropped)" in kind}
        assert dropped.get("comment_edit (webhooks dropped)", 0) > 10, dropped
        assert run.dropped_edits() == sum(dropped.values())
        edited = [action for action in run.actions[1] if action.kind in (oracle.COMMENT_EDIT, oracle.COMMENT_DELETE)
                  and action.side == "client" and action.t >= run.actions[1][-1].t - 60]
        assert len(edited) >= run.dropped_edits()
        assert kinds.count("comment_edit") > 10
        oracle.expect(run.link(1), run.actions[1])
    finally:
        world.close()


def test_a_finding_names_the_actions_behind_it_and_the_faults_open_around_them(tmp_path):
    plan = ChaosPlan(links=1, events=10, worker_kills=0, redis_restarts=0)
    run = Chaos(plan, tmp_path)
    run.actions[0] = [oracle.Action(100.0, "partner", "user:3", oracle.CREATE, "T1", {}),
                      oracle.Action(150.0, "client", "user:6", oracle.COMMENT, "T1", {"comment": "C1", "text": "[C1] x"}),
                      oracle.Action(151.0, "client", "user:6", oracle.COMMENT, "T1", {"comment": "C2", "text": "[C2] y"})]
    run.windows = [(90.0, 95.0, "quota"), (160.0, 170.0, "timeout"), (400.0, 410.0, "slow")]
    finding = oracle.Finding(oracle.DUPLICATE, "partner", "chaos1 T1", "mirror of C1", "2 mirrors", (4,))
    found = run.attributed(finding)
    assert [action["comment"] for action in found["actions"]] == ["C1"]
    assert found["faults_around"] == ["timeout"]
    whole = run.attributed(oracle.Finding(oracle.LOST, "client", "chaos1 T1", "task", "no copy"))
    assert len(whole["actions"]) == 3 and whole["faults_around"] == ["timeout"]


# -- the journal check: entries against the crossings the emulator's log shows ------------------

def journal_world(tmp_path):
    """A chaos link's world behind the emulator's app, a journal, and the robot's REST calls."""
    from starlette.testclient import TestClient

    from crosslink.journal.store import Journal
    from crosslink.lab.stack import integration_token
    from planfix.emulator.app import create_app

    plan = ChaosPlan(links=1, events=0, worker_kills=0, redis_restarts=0)
    emulator, _ = build_configs(plan.links)
    stack, world = fake_stack(plan)
    client = TestClient(create_app(world))
    tokens = {account: integration_token(emulator, account, "user:1") for account in ("partner", "client1")}

    def rest(account, path, body=None, files=None):
        headers = {"Authorization": f"Bearer {tokens[account]}"}
        if files is not None:
            return client.post(f"/{account}/rest{path}", files=files, headers=headers)
        return client.post(f"/{account}/rest{path}", json=body or {}, headers=headers)

    return SimpleNamespace(world=world, link=stack.config.links[0], rest=rest, client=client,
                           journal=Journal(f"sqlite:///{tmp_path / 'journal.sqlite3'}"))


def check_of(env):
    from crosslink.lab.journal_check import journal_check

    run = SimpleNamespace(stack=SimpleNamespace(world=env.world))
    attached = {account: Chaos.attached_files(run, account) for account in ("partner", "client1")}
    requests = {account: env.world.requests(account) for account in ("partner", "client1")}
    journals = {env.link.name: (env.journal.entries(env.link.name), env.journal.anchors(env.link.name))}
    return journal_check([env.link], requests, attached, journals)


def record(env, kind, side, source, target, content="x"):
    from crosslink.journal.chain import content_hash

    return env.journal.append(env.link.name, kind=kind, side=side, source=source, target=target,
                              content=content if kind == "file" else content_hash(content), rules="r")


def test_each_crossing_the_log_shows_is_matched_with_its_entry(tmp_path):
    """A create applied under a 500 after commit, a comment edit sent twice after a lost answer, a
    note, a file (its first upload lost and attached nowhere), a checklist item, a status and a
    field: each one entry, each one crossing; the writes the world refused count for nothing."""
    import hashlib

    from workers.comment_policy import EARLIER_MARK

    env = journal_world(tmp_path)
    try:
        world, rest = env.world, env.rest
        world.set_faults("client1", error_500_after_commit=1.0)
        assert rest("client1", "/task/", {"name": "[T1] x", "sourceObjectId": "s",
                                          "sourceDataVersion": "crosslink:chaos1:partner:1"}).status_code == 500
        world.set_faults("client1", error_500=1.0)
        rest("client1", "/task/", {"name": "[T1] never", "sourceObjectId": "s"})  # applied nothing
        world.set_faults("client1")
        task = max(world.account("client1").tasks)
        mirror = rest("client1", f"/task/{task}/comments", {"description": "m", "sourceObjectId": "c",
                                                            "sourceDataVersion": "crosslink:chaos1:partner:5"}).json()["id"]
        edit = {"description": f"m2<br><br>{EARLIER_MARK}<i>earlier</i><blockquote>m</blockquote>"}
        rest("client1", f"/task/{task}/comments/{mirror}", edit)
        rest("client1", f"/task/{task}/comments/{mirror}", edit)  # the same version again: one crossing
        world.create_task("partner", {"name": "[T1] x", "project": {"id": 100}}, author=2)  # by a person
        note = rest("partner", "/task/1/comments", {"description": "note", "sourceObjectId": "n"})
        lost_copy = rest("client1", "/file", files={"file": ("F1-a.txt", b"bytes")}).json()["id"]
        copy_id = rest("client1", "/file", files={"file": ("F1-a.txt", b"bytes")}).json()["id"]
        env.client.post(f"/client1/rest/file/{copy_id}/attach/task?id={task}",
                        headers={"Authorization": "Bearer chaos-client1-sync"})
        item = rest("client1", f"/task/{task}/checklist", {"name": "[K1] i"}).json()["id"]
        rest("client1", f"/task/{task}", {"description": "d", "name": "[T1] y"})

        record(env, "task created", "partner", {"task": 1, "version": "v"}, {"task": task})
        record(env, "comment", "partner", {"task": 1, "comment": 5, "version": 1}, {"task": task, "comment": mirror})
        record(env, "comment version", "partner", {"task": 1, "comment": 5, "version": 2},
               {"task": task, "comment": mirror})
        record(env, "note", "partner", {"task": 1, "occasion": "o"}, {"task": 1, "comment": note.json()["id"]})
        record(env, "file", "partner", {"task": 1, "file": 3, "name": "F1-a.txt"}, {"file": copy_id},
               content=hashlib.sha256(b"bytes").hexdigest())
        record(env, "checklist item", "partner", {"task": 1, "item": 2, "version": "v"}, {"task": task, "item": item})
        record(env, "field change", "partner", {"task": 1, "version": "v", "fields": ["description", "name"]},
               {"task": task})
        record(env, "severed", "client", {"side": "client"}, {})

        check = check_of(env)
        assert (check.missing, check.extra, check.chain_ok, check.ok) == ([], [], True, True), check.as_dict()
        assert check.entries == 8 and check.unattached_uploads == 1 and lost_copy != copy_id
        assert check.crossings == 8  # task, comment, version, note, file, item, two fields
        assert check.by_family["field"] == {"crossings": 2, "entries": 2, "missing": 0, "extra": 0}
        assert check.line() == "journal: 8 entries, 8 crossings, missing 0, extra 0, chain ok"
        assert set(check.by_family) == {"task created", "comment", "comment version", "note", "file",
                                        "checklist item", "field"}
    finally:
        env.journal.close()
        env.world.close()


def test_a_crossing_with_no_entry_an_entry_with_no_crossing_and_a_broken_chain_fail_the_check(tmp_path):
    import sqlalchemy as sa

    from crosslink.journal.chain import content_hash

    env = journal_world(tmp_path)
    try:
        rest = env.rest
        task = rest("client1", "/task/", {"name": "[T1] x", "sourceObjectId": "s",
                                          "sourceDataVersion": "crosslink:chaos1:partner:1"}).json()["id"]
        rest("client1", f"/task/{task}", {"status": {"id": 12}})
        # Recorded, never written: a comment, and a status the task never was moved to.
        record(env, "comment", "partner", {"task": 1, "comment": 5, "version": 1}, {"task": task, "comment": 99})
        record(env, "status", "partner", {"task": 1, "version": "v"}, {"task": task, "status": 13})
        check = check_of(env)
        # A status is compared by the hash of what its entry holds, {"status": id}.
        moved = {status: content_hash({"status": status})[:12] for status in (12, 13)}
        assert check.missing == [f"status client1 {task} {moved[12]}", f"task created client1 {task}"]
        assert check.extra == [f"comment client1 {task} 99", f"status client1 {task} {moved[13]}"]
        assert not check.ok and check.chain_ok
        with env.journal.engine.begin() as connection:
            connection.execute(sa.text("UPDATE journal_entries SET content = 'forged' WHERE seq = 1"))
        check = check_of(env)
        assert not check.chain_ok and "edited" in check.chains["chaos1"]
        report = clean_report(journal=check)
        assert not report.ok and "chain FAILED" in report.table() and report.as_dict()["journal"]["missing"] == 2
    finally:
        env.journal.close()
        env.world.close()


def test_fields_one_entry_each_a_status_by_its_content_and_anchors_are_matched(tmp_path):
    """Entries as the writer records them now (one per field; a status by the hash of
    {"status": id}) and the anchors (a record task and its comments, kept as the journal's
    anchors, not entries) meet their writes."""
    from crosslink.journal.chain import Anchor, content_hash
    from workers.state import record_source_id

    env = journal_world(tmp_path)
    try:
        rest = env.rest
        task = rest("client1", "/task/", {"name": "[T1] x", "sourceObjectId": "s",
                                          "sourceDataVersion": "crosslink:chaos1:partner:1"}).json()["id"]
        rest("client1", f"/task/{task}", {"name": "[T1] y", "description": "d"})
        rest("client1", f"/task/{task}", {"status": {"id": 12}})
        record_task = rest("client1", "/task/", {"name": "Crosslink record: chaos1",
                                            "sourceObjectId": record_source_id("chaos1", "client")}).json()["id"]
        posted = rest("client1", f"/task/{record_task}/comments", {"description": "head", "sourceObjectId": "a"}).json()["id"]
        created = record(env, "task created", "partner", {"task": 1, "version": "v"}, {"task": task})
        for name, value in (("name", "[T1] y"), ("description", "d")):
            record(env, "field change", "partner", {"task": 1, "version": "v", "field": name},
                   {"task": task, "outcome": "applied"}, content={name: value})
        record(env, "status", "partner", {"task": 1, "version": "v", "field": "status"},
               {"task": task, "outcome": "applied"}, content={"status": 12})
        env.journal.add_anchor(Anchor("chaos1", created.seq, created.hash, "now", "client", record_task, posted))
        check = check_of(env)
        assert (check.missing, check.extra) == ([], []), check.as_dict()
        assert check.by_family["anchor"]["crossings"] == 2 and check.by_family["field"]["crossings"] == 2
        assert check.by_family["status"] == {"crossings": 1, "entries": 1, "missing": 0, "extra": 0}
        assert content_hash({"status": 12}) == env.journal.entries("chaos1")[-1].content
    finally:
        env.journal.close()
        env.world.close()
