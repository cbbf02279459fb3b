"""The sync job's answer to losing Redis, on a real Redis server that goes away under it: the job
waits for Redis and hands its message back to the queue (Reject with requeue), never acks it as
failed and never turns the outage into a dead letter. The sync itself is replaced by a run that
stops the server, since only what the task wrapper does with the outage is under test here."""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pytest
import redis
from celery.exceptions import Reject

from crosslink.lab.embedded_redis import EmbeddedRedis
from schemas.links import SIDES
from workers import batch, runner, tasks
from workers.state import LinkState

# The stand-in restart: the server comes back after this long.
RESTART_S = 0.5


@pytest.fixture
def own_redis(monkeypatch):
    server = EmbeddedRedis().start()
    store = redis.Redis.from_url(server.url, socket_connect_timeout=0.2)
    monkeypatch.setattr(tasks, "runtime", lambda: SimpleNamespace(redis=store))
    try:
        yield server, store
    finally:
        store.close()
        server.cleanup()


def test_a_job_that_loses_redis_waits_for_it_then_goes_back_to_the_queue(own_redis, monkeypatch):
    server, store = own_redis

    def run_during_a_restart(*_args):
        server.stop()
        threading.Timer(RESTART_S, server.start).start()
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(tasks, "sync_one", run_during_a_restart)
    started = time.monotonic()
    with pytest.raises(Reject) as caught:
        tasks.sync_task("demo", "partner", 1)
    assert caught.value.requeue
    assert time.monotonic() - started >= RESTART_S * 0.8  # it waited for the server ...
    assert store.ping()  # ... which is back when the message is handed back


def test_a_job_gives_redis_a_bounded_wait(own_redis, monkeypatch):
    server, _ = own_redis
    monkeypatch.setattr(tasks, "REDIS_OUTAGE_WAIT_S", 0.3)

    def run_as_redis_dies(*_args):
        server.stop()
        raise redis.ConnectionError("Connection refused")

    monkeypatch.setattr(tasks, "sync_one", run_as_redis_dies)
    started = time.monotonic()
    with pytest.raises(Reject):
        tasks.sync_task("demo", "client", 2)
    assert time.monotonic() - started < 5


def test_a_parked_event_keeps_its_flag_but_is_not_taken_for_a_lost_job(redis_url, redis_client, monkeypatch):
    """While a link is severed its events park, and the task's flag stays so that later events
    queue no jobs that would only park too; the tick must not send it jobs either."""
    from crosslink.queue.enqueue import Enqueuer
    from crosslink.queue.names import pending_key, pending_since_key
    from workers.state import LinkState

    enqueuer = Enqueuer(redis_url)
    try:
        enqueuer.sync("demo", "partner", 5, "task_changed")
        LinkState(redis_client, "demo").sever("client", "token revoked", time.time())
        monkeypatch.setattr(runner, "runtime", lambda: SimpleNamespace(
            redis=redis_client, settings=SimpleNamespace(time_scale=1.0), state=lambda name: LinkState(redis_client, name)))
        link = SimpleNamespace(name="demo", other=lambda side: "client" if side == "partner" else "partner",
                               sides={side: SimpleNamespace(send=SimpleNamespace(paused=False)) for side in SIDES})
        assert runner.begin_runs(link, "partner", [5]) == [(5, "parked")]
        assert redis_client.exists(pending_key("demo", "partner", 5))
        time.sleep(0.1)
        assert enqueuer.recover_pending("demo", "partner", stale_s=0.05) == []
        assert redis_client.zscore(pending_since_key("demo", "partner"), 5) is None
    finally:
        enqueuer.close()


@pytest.mark.parametrize("read, blocks", [(True, False), (False, True)])
def test_only_a_failed_write_makes_a_letter_that_holds_the_tasks_later_events(redis_client, monkeypatch,
                                                                               read, blocks):
    """A permanent failure is a dead letter either way; it holds the task's later events only
    when the failed call was a write, which those events must not overtake."""
    from crosslink.queue.dead_letters import DeadLetters
    from planfix.errors import InvalidRequest
    from workers.hints import Hints
    from workers.state import LinkState
    from workers.sync import SideFailure

    monkeypatch.setattr(runner, "runtime", lambda: SimpleNamespace(
        redis=redis_client, state=lambda name: LinkState(redis_client, name)))
    failure = SideFailure("client", InvalidRequest("HTTP 400 code 41", http_status=400, code=41), read=read)
    assert runner._handle_failure("demo", "partner", 5, 0, failure, 1.0, Hints(full=True)) == "dead"
    letters = DeadLetters(redis_client, "demo")
    [letter] = letters.letters()
    assert letter["task"] == 5 and "code 41" in letter["reason"] and letter["blocks"] is blocks
    assert (letters.blocked_by("partner", 5) is not None) is blocks


def test_a_failure_while_reading_retries_like_any_transient_one(redis_client, monkeypatch):
    """Reading is not written off sooner: a timeout on a read is retried, not a letter."""
    from crosslink.queue.dead_letters import DeadLetters
    from planfix.errors import TransientError
    from workers.hints import Hints
    from workers.state import LinkState
    from workers.sync import SideFailure

    sent = []
    monkeypatch.setattr(runner, "runtime", lambda: SimpleNamespace(
        redis=redis_client, state=lambda name: LinkState(redis_client, name)))
    monkeypatch.setattr(runner, "requeue", lambda *args, **kwargs: sent.append(args))
    failure = SideFailure("partner", TransientError("timed out"), read=True)
    assert runner._handle_failure("demo", "partner", 5, 0, failure, 0.01, Hints(full=True)) == "retrying"
    assert sent and DeadLetters(redis_client, "demo").letters() == []


def test_links_sharing_an_account_take_turns_and_no_run_waits(redis_client, redis_url, monkeypatch):
    """Two links write to one partner account, each with a backlog on its own client account, and
    a turn holds one of the account's slots (as at Planfix's 1 request/s; time shrunk here to 10
    requests/s and turns of 50 ms). Each side's batch job begins only the run its link's slot
    allows and hands its side on, due at the link's next slot: the links' turns at the shared
    account alternate (the limiter's lanes), no run is put back, and there is about one job a
    run. The runs are stand-ins that make a run's requests through the real limiter as the
    client would (its read, admitted, then its write)."""
    from collections import Counter

    from crosslink.queue.enqueue import Enqueuer
    from crosslink.queue.names import dirty_key
    from planfix.limiter import AccountLimiter
    from workers.sync import ADMISSION_LIMIT_WAIT_S, FOLLOW_UP_LIMIT_WAIT_S

    monkeypatch.setattr(batch, "BATCH_TURN_S", 0.05)
    limiter = AccountLimiter(redis_client, rate_per_s=10.0, daily_quota=0)
    enqueuer = Enqueuer(redis_url)
    due: list[tuple[float, str, str]] = []          # (when, link, job id) of the batch jobs sent
    monkeypatch.setattr(enqueuer, "_send_batch_job", lambda link, side, job_id, countdown_s=0.0, retries=0: due.append(
        (time.monotonic() + (countdown_s or 0.0), link, job_id)))

    def link_named(name: str) -> SimpleNamespace:
        return SimpleNamespace(name=name, sides={"client": SimpleNamespace(account=f"client-{name}"),
                                                 "partner": SimpleNamespace(account="partner")},
                               other=lambda side: "partner" if side == "client" else "client",
                               # The stand-in runs read and write once each: no checklist to list.
                               fields=SimpleNamespace(checklist=SimpleNamespace(direction="none")))

    links = {name: link_named(name) for name in ("alpha", "beta")}
    monkeypatch.setattr(batch, "runtime", lambda: SimpleNamespace(
        redis=redis_client, limiter=limiter, enqueuer=enqueuer, settings=SimpleNamespace(time_scale=1.0),
        link=lambda name: links[name]))
    outcomes: Counter = Counter()
    monkeypatch.setattr(batch.telemetry, "count_run", lambda link, side, result: outcomes.update([result]))
    writes: list[tuple[int, str]] = []

    def begin(link, side, numbers, job_id):
        return [(number, SimpleNamespace(link=link, number=number, waits_s=None, hints=SimpleNamespace(reads_no_task=False),
                                         lock=SimpleNamespace(release=lambda: None))) for number in numbers]

    def finish(run, prefetched=None):
        lane, source = run.link.name, run.link.sides["client"].account
        if not limiter.acquire_blocking(source, ADMISSION_LIMIT_WAIT_S, lane).go:
            return "waiting"
        permit = limiter.acquire_blocking("partner", FOLLOW_UP_LIMIT_WAIT_S, lane)
        if not permit.go:
            return "waiting"
        writes.append((permit.at_us, lane))
        return "updated"

    monkeypatch.setattr(batch, "begin_runs", begin)
    monkeypatch.setattr(batch, "finish", finish)
    try:
        for name in links:
            for number in range(1, 7):
                enqueuer.sync(name, "client", number, "task_changed")
        jobs = 0
        while due and jobs < 100:
            due.sort()
            when, name, job_id = due.pop(0)
            time.sleep(max(0.0, when - time.monotonic()))
            batch.sync_side(name, "client", job_id)
            jobs += 1
    finally:
        enqueuer.close()
    assert outcomes == Counter(updated=12), outcomes
    assert not any(redis_client.exists(dirty_key(name, "client")) for name in links)
    # While both links wait, their writes alternate.
    order = [lane for _, lane in sorted(writes)]
    both_wait = order[:min(max(i for i, lane in enumerate(order) if lane == name) for name in links) + 1]
    assert sum(1 for one, next_ in zip(both_wait, both_wait[1:]) if one == next_) <= 1, order
    assert jobs <= 12 + 2, jobs    # one a run, and each link's first finds the account's slot taken


def test_a_run_whose_begin_meets_a_bug_is_a_dead_letter_and_frees_its_pair(redis_client, monkeypatch):
    """A run begins the same way in a job of its own and in a batch (workers.runner.begin_runs);
    an unexpected error while it is being begun keeps its event as a dead letter and releases
    the pair's lock, rather than failing the whole job (a batch's other runs go on)."""
    from crosslink.queue.dead_letters import DeadLetters
    from crosslink.queue.names import hints_key, lock_key, resume_key
    from workers.hints import RESUME

    monkeypatch.setattr(runner, "runtime", lambda: SimpleNamespace(
        redis=redis_client, settings=SimpleNamespace(time_scale=1.0), state=lambda name: LinkState(redis_client, name)))
    link = SimpleNamespace(name="demo", other=lambda side: "client" if side == "partner" else "partner",
                           sides={side: SimpleNamespace(send=SimpleNamespace(paused=False)) for side in SIDES})
    redis_client.rpush(hints_key("demo", "partner", 5), RESUME, "task_changed")
    redis_client.set(resume_key("demo", "partner", 5), "{kept reads cut short")   # not JSON: a bug's trace
    redis_client.rpush(hints_key("demo", "partner", 6), "task_changed")
    results = dict(runner.begin_runs(link, "partner", [5, 6]))
    assert results[5] == "dead"
    [letter] = DeadLetters(redis_client, "demo").letters()
    assert letter["task"] == 5
    assert not redis_client.exists(lock_key("demo", "partner", 5))
    assert isinstance(results[6], runner.Begun)                   # the other run is begun as usual
    results[6].lock.release()
