"""The sync job's run (workers.runner.sync_one: begin, run, close) on the emulator over loopback and
a real Redis, called in this process: what one run of a task pair leaves for the pair's other
runs. (Celery itself is exercised by the e2e suite.)"""

from __future__ import annotations

import copy
import time
from collections import Counter
from types import SimpleNamespace

import pytest
import yaml
from prometheus_client import REGISTRY

from crosslink.base.settings import Settings
from crosslink.lab.demo import example
from crosslink.lab.stack import integration_token
from crosslink.operations.status import link_status
from crosslink.queue.names import BUT_CHECKLIST, CHECKLIST_HINT, dirty_key, synced_stamp
from planfix.emulator.server import EmulatorServer
from planfix.emulator.world import World
from planfix.limiter import AccountLimiter
from producers import reconcile
from schemas.links import load_links
from workers import batch, runner, telemetry
from workers.canonical import task_fields
from workers.hints import Hints
from workers.runtime import Runtime
from workers.state import LinkState
from workers.sync import call_key, gateway

PAVEL = 2


@pytest.fixture
def runtime(redis_url, tmp_path, monkeypatch):
    config = example("emulator.yaml")
    for account in config["accounts"].values():
        account["limits"] = {"rate_per_s": None, "daily_quota": None}
        account["scenarios"] = []   # the runs are made by hand here
    world = World.from_config(config)
    try:
        with EmulatorServer(world) as server:
            links = copy.deepcopy(example("links.yaml"))
            env = {}
            for conf in links["links"][0]["sides"].values():
                conf["base_url"] = server.base_url(conf["account"])
                env[conf["token_env"]] = integration_token(config, conf["account"], conf["integration_user"])
            path = tmp_path / "links.yaml"
            path.write_text(yaml.safe_dump(links, allow_unicode=True), encoding="utf-8")
            settings = Settings(redis_url=redis_url, links_path=str(path), producer_host="127.0.0.1",
                                producer_port=0, time_scale=0.01, log_level="INFO", log_json=False,
                                rate_per_s=1000.0, daily_quota=0)
            made = Runtime(settings=settings, config=load_links(path), env=env)
            sent = []
            monkeypatch.setattr(runner, "runtime", lambda: made)
            monkeypatch.setattr(batch, "runtime", lambda: made)
            monkeypatch.setattr(runner, "requeue", lambda *args, **kwargs: sent.append(args))
            yield SimpleNamespace(world=world, rt=made, link=made.config.links[0], sent=sent)
            made.http.close()
    finally:
        world.close()


def test_a_run_that_writes_to_a_pair_voids_the_reads_a_waiting_run_of_it_kept(runtime):
    """A client run read its task, then waited for its account's turn, keeping the read. The
    partner's run then wrote to that task. The waiting run must read again: resuming from its
    kept read it took the old priority for a client change and carried it back over the
    partner's (the quick chaos run saw such rollbacks; the webhook of the partner run's write,
    which would also stop the resume, can be lost or late)."""
    world, link = runtime.world, runtime.link
    number = world.create_task("partner", {"name": "Kept", "processId": 1, "project": {"id": 10}}, author=PAVEL)
    assert runner.sync_one(link.name, "partner", number, 0, None) == "created"
    copy_ = runtime.rt.state(link.name).counterpart("task", "partner", number)
    stale = world.get_task("client", copy_, ",".join(task_fields(link, "client")))
    runner.keep_reads(runtime.rt.redis, link.name, "client", copy_,
                     {call_key("client", "get_task", copy_, fields=task_fields(link, "client")): stale})
    world.update_task("partner", number, {"priority": "Urgent"}, author=PAVEL)
    assert runner.sync_one(link.name, "partner", number, 0, None) == "updated"
    waiting = Hints(full=False, task_events=1).waited(wrote=False)
    runner.sync_one(link.name, "client", copy_, 1, waiting)
    assert world.get_task("partner", number, "priority")["priority"] == "Urgent"
    assert world.get_task("client", copy_, "priority")["priority"] == "Urgent"


def test_a_run_that_outlives_its_pair_lock_writes_nothing_more_and_starts_over(runtime, monkeypatch):
    """A run slower than its lock's TTL (a worker stalled, Planfix slow) must not write, or save
    what it agreed on, once another run may have taken the pair: its next request finds the lock
    lapsed, and the run is queued again to start over."""
    world, link = runtime.world, runtime.link
    number = world.create_task("partner", {"name": "Slow", "processId": 1, "project": {"id": 10}}, author=PAVEL)
    assert runner.sync_one(link.name, "partner", number, 0, None) == "created"
    copy_ = runtime.rt.state(link.name).counterpart("task", "partner", number)
    world.update_task("partner", number, {"priority": "Urgent"}, author=PAVEL)
    begin = runner.begin_runs
    taken: list[str] = []

    def begin_then_lapse(*args, **kwargs):
        [(number_, begun)] = begin(*args, **kwargs)
        # The lock lapses and another run takes the pair, as after a stall past the TTL.
        runtime.rt.redis.delete(*begun.lock.keys)
        runtime.rt.redis.set(begun.lock.keys[0], "another run")
        taken.append(begun.lock.keys[0])
        return [(number_, begun)]

    monkeypatch.setattr(runner, "begin_runs", begin_then_lapse)
    snapshots = runtime.rt.redis.hgetall(f"crosslink:snap:{link.name}")
    assert runner.sync_one(link.name, "partner", number, 0, None) == "lock-lost"
    assert world.get_task("client", copy_, "priority")["priority"] != "Urgent"
    assert runtime.rt.redis.hgetall(f"crosslink:snap:{link.name}") == snapshots
    assert runtime.sent and runtime.sent[-1][:3] == (link.name, "partner", number)
    assert runtime.rt.redis.get(taken[0]) == b"another run"   # the other run's lock is left alone


def test_runs_waiting_for_their_accounts_turn_cost_one_job_per_turn_not_a_requeue_each(runtime, monkeypatch):
    """Five tasks wait for a slow account (5 requests/s, and no run may wait inline for a later
    turn). Each run that must wait goes back among its side's waiting tasks; the side's one batch
    job is sent again due at the turn the limiter reserved. Before, every waiting run re-queued a
    job of its own for every turn (87 Celery executions per sync were counted with 60 waiting)."""
    world, link, rt = runtime.world, runtime.link, runtime.rt
    rt.__dict__["limiter"] = AccountLimiter(rt.redis, rate_per_s=5.0)
    monkeypatch.setattr(gateway, "FOLLOW_UP_LIMIT_WAIT_S", 0.0)
    due: list[tuple[float, str, str]] = []     # (when, side, job id) of the batch jobs sent
    monkeypatch.setattr(rt.enqueuer, "_send_batch_job",
                        lambda link_, side, job_id, countdown_s=0.0, retries=0: due.append((time.monotonic() + countdown_s, side, job_id)))
    numbers = [world.create_task("partner", {"name": f"Wait {n}", "processId": 1, "project": {"id": 10}},
                                 author=PAVEL) for n in range(5)]
    for number in numbers:
        rt.enqueuer.sync(link.name, "partner", number, "task_created")
    jobs = 0
    while due and jobs < 100:
        due.sort()
        when, side, job_id = due.pop(0)
        time.sleep(max(0.0, when - time.monotonic()))
        batch.sync_side(link.name, side, job_id)
        jobs += 1
        if due:  # runs wait for a later turn: `crosslink status` counts them
            [row] = link_status(rt.settings.links_path, rt.settings.redis_url)
            assert row["runs_waiting"] == rt.redis.zcard(dirty_key(link.name, "partner")) > 0
    state = rt.state(link.name)
    assert all(state.counterpart("task", "partner", number) is not None for number in numbers)
    assert runtime.sent == []                 # no run re-queued a job of its own
    requests = len(world.requests("partner")) + len(world.requests("client"))
    # At most one job per request made, and far fewer than one per waiting run and turn.
    assert jobs <= requests, (jobs, requests)
    assert not rt.redis.exists(dirty_key(link.name, "partner")), rt.redis.zrange(dirty_key(link.name, "partner"), 0, -1)


def test_a_backlog_on_a_slow_account_begins_only_the_runs_its_slots_allow(runtime, monkeypatch):
    """Eight paired tasks change at once while their accounts allow 4 requests/s. A batch job
    begins only the runs the link's slots allow in its turn (their sources read in one request),
    and when they are taken hands its side on, due at the next slot, beginning nothing: about one
    run per finished sync, and fewer jobs.
    Before, each job began up to ten runs and put all but one or two back (the quick bench
    counted 4.3 runs and 1.5 Celery executions per sync while a backlog waited)."""
    world, link, rt = runtime.world, runtime.link, runtime.rt
    numbers = [world.create_task("partner", {"name": f"Backlog {n}", "processId": 1, "project": {"id": 10}},
                                 author=PAVEL) for n in range(8)]
    for number in numbers:  # paired with the limits off
        assert runner.sync_one(link.name, "partner", number, 0, None) == "created"
    state = rt.state(link.name)
    copies = {number: state.counterpart("task", "partner", number) for number in numbers}
    for conf in link.sides.values():
        rt.limiter.set_account_limits(conf.account, rate_per_s=4.0)
    outcomes: Counter = Counter()
    monkeypatch.setattr(telemetry, "count_run", lambda _link, _side, result: outcomes.update([result]))
    due: list[tuple[float, str, str]] = []     # (when, side, job id) of the batch jobs sent
    monkeypatch.setattr(rt.enqueuer, "_send_batch_job",
                        lambda link_, side, job_id, countdown_s=0.0, retries=0: due.append((time.monotonic() + countdown_s, side, job_id)))
    for number in numbers:
        world.update_task("partner", number, {"name": f"Backlog {number}, renamed"}, author=PAVEL)
        rt.enqueuer.sync(link.name, "partner", number, "task_changed")
    claims: list[list[int]] = []                # the tasks each batch claimed and began together
    real_begin = batch.begin_runs
    monkeypatch.setattr(batch, "begin_runs", lambda link_, side, numbers, job_id="": (
        claims.append(list(numbers)), real_begin(link_, side, numbers, job_id))[1])
    reads_before = len(world.requests("partner"))
    jobs = 0
    while due and jobs < 100:
        due.sort()
        when, side, job_id = due.pop(0)
        time.sleep(max(0.0, when - time.monotonic()))
        batch.sync_side(link.name, side, job_id)
        jobs += 1
    for number, copy_ in copies.items():
        assert world.get_task("client", copy_, "name")["name"] == f"Backlog {number}, renamed"
    synced = outcomes["updated"]
    assert synced == len(numbers), outcomes
    assert sum(outcomes.values()) <= 1.2 * synced, outcomes   # runs begun, put back ones too
    assert jobs <= 1.2 * synced, (jobs, outcomes)             # Celery executions
    # Several tasks a claim as the turn's slots allow, their sources read in one request a batch
    # (a field edit's run reads nothing else there: workers.hints).
    assert len(world.requests("partner")) - reads_before <= len(claims) < synced, claims
    assert runtime.sent == []
    assert not rt.redis.exists(dirty_key(link.name, "partner")), rt.redis.zrange(dirty_key(link.name, "partner"), 0, -1)


def test_a_run_records_the_stamp_it_looked_at_whole_and_only_that(runtime):
    """The poller skips a task whose change stamp a run recorded (producers/reconcile), so a
    run records it only when nothing the stamp stands for can have escaped it. The example link
    carries checklists: a checklist item added (its webhook lost) before a field edit shows only
    in the update date the edit moved on (the quick chaos run lost one that way). So the edit's
    run, which reads no checklist, records the stamp as seen but for the checklist; the poll
    asks for the checklist alone, and that run mirrors the item with one list and no task read,
    and records the stamp whole: the poller queues nothing more."""
    world, link, store = runtime.world, runtime.link, runtime.rt.redis
    number = world.create_task("partner", {"name": "Stamped", "processId": 1, "project": {"id": 10}}, author=PAVEL)
    assert runner.sync_one(link.name, "partner", number, 0, None) == "created"
    recorded = synced_stamp(store, link.name, "partner", number)
    assert recorded is not None  # the first run looked at everything

    def now_stamp():
        return reconcile.task_stamp(world.get_task("partner", number, "dateOfLastUpdate,dateOfLastComment"))

    def paths():
        return [entry["path"] for entry in world.requests("partner")]

    world.clock = lambda: time.time() + 10  # stamps are to the second: these later changes differ
    world.create_checklist_item("partner", number, {"name": "its webhook lost"}, author=PAVEL)
    world.clock = lambda: time.time() + 20
    world.update_task("partner", number, {"name": "Stamped, renamed"}, author=PAVEL)
    assert now_stamp().text != recorded
    before = paths()
    assert runner.sync_one(link.name, "partner", number, 0, Hints(full=False, task_events=1)) == "updated"
    copy_ = LinkState(store, link.name).counterpart("task", "partner", number)
    assert world.list_checklist("client", copy_, {"fields": "name"}) == []
    assert synced_stamp(store, link.name, "partner", number) == BUT_CHECKLIST + now_stamp().text
    assert not any(path.endswith("/checklist/list") for path in paths()[len(before):])

    verdict = reconcile.classify(now_stamp(), synced_stamp(store, link.name, "partner", number), None)
    hints = reconcile.hints_for(verdict, [], "user:1")
    assert hints == (CHECKLIST_HINT,)
    before = paths()
    runner.sync_one(link.name, "partner", number, 0, Hints.parse(hints))
    assert [item["name"] for item in world.list_checklist("client", copy_, {"fields": "name"})] == ["its webhook lost"]
    assert paths()[len(before):] == [f"/task/{number}/checklist/list"]
    assert synced_stamp(store, link.name, "partner", number) == now_stamp().text
    assert reconcile.classify(now_stamp(), now_stamp().text, None).kind == reconcile.SKIP



def test_a_runs_planfix_requests_are_counted_under_its_link(runtime):
    """Requests by link (crosslink_link_planfix_requests_total) are counted where a run's client
    is made for its link (workers.runtime), on both sides' accounts."""
    world, link = runtime.world, runtime.link
    accounts = {side: conf.account for side, conf in link.sides.items()}

    def counted() -> dict[str, float]:
        return {side: REGISTRY.get_sample_value("crosslink_link_planfix_requests_total",
                                                {"link": link.name, "account": account}) or 0
                for side, account in accounts.items()}

    before = counted()
    number = world.create_task("partner", {"name": "Counted", "processId": 1, "project": {"id": 10}}, author=PAVEL)
    assert runner.sync_one(link.name, "partner", number, 0, None) == "created"
    after = counted()
    assert all(after[side] > before[side] for side in accounts), (before, after)
