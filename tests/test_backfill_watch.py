"""`crosslink backfill`'s wait for the mirroring, against the real private Redis: which state says a
queued task's run is over (its pending flag, its place in the dirty set or a batch's claim, its
lock), how each ended by the workers' records, and when the wait ends. The whole command against a
real worker is tests/e2e/test_backfill_command.py.
"""

from __future__ import annotations

import itertools

import pytest
import redis

from crosslink.operations.backfill_watch import (
    DEAD_LETTER,
    MIRRORED,
    NOT_MIRRORED,
    exit_status,
    follow_mirroring,
    mirror_look,
    mirroring_summary,
)
from crosslink.queue.dead_letters import DeadLetters
from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.inspect import runs_in_flight
from crosslink.queue.names import claims_key, dirty_key, lock_key, pending_key
from workers.state import LinkState

LINK = "demo"


@pytest.fixture
def store(redis_url):
    client = redis.Redis.from_url(redis_url)
    try:
        yield client
    finally:
        client.close()


def test_a_queued_task_is_in_flight_until_its_flag_its_place_and_its_lock_are_gone(redis_url, store):
    enqueuer = Enqueuer(redis_url)
    try:
        enqueuer.sync(LINK, "partner", 7)  # as the backfill queues it: flag set, waiting in the dirty set
    finally:
        enqueuer.close()
    task = ("partner", 7)
    assert runs_in_flight(store, LINK, [task, ("partner", 8)]) == {task}
    # A batch job claims it: out of the dirty set, claimed; the flag stands until the run begins.
    store.zrem(dirty_key(LINK, "partner"), 7)
    store.hset(claims_key(LINK, "partner"), 7, "999:job")
    assert runs_in_flight(store, LINK, [task]) == {task}
    # The run begins: its lock taken and the flag cleared in one step; then the claim settles.
    store.set(lock_key(LINK, "partner", 7), "token")
    store.delete(pending_key(LINK, "partner", 7))
    store.hdel(claims_key(LINK, "partner"), 7)
    assert runs_in_flight(store, LINK, [task]) == {task}
    store.delete(lock_key(LINK, "partner", 7))  # the run closes
    assert runs_in_flight(store, LINK, [task]) == set()


def test_each_task_over_ends_mirrored_as_a_dead_letter_or_neither(store):
    queued = [("partner", 1), ("partner", 2), ("partner", 3), ("client", 4)]
    LinkState(store, LINK).pair("task", "partner", 1, "client", 101)
    DeadLetters(store, LINK).add({"link": LINK, "side": "partner", "task": 2}, "400: bad field", at=1.0)
    store.set(pending_key(LINK, "client", 4), "1")  # still waiting for its run
    look = mirror_look(store, LINK, queued)
    assert (look.queued, look.over, look.mirrored) == (4, 3, 1)
    assert look.ended == {MIRRORED: ["partner:1"], DEAD_LETTER: ["partner:2"], NOT_MIRRORED: ["partner:3"]}


def test_the_wait_ends_once_every_run_is_over_and_the_queue_stays_quiet(store):
    queued = [("partner", 1), ("partner", 2)]
    for side, number in queued:
        store.set(pending_key(LINK, side, number), "1")
    looks = []

    def worker_step(_seconds):
        """Each pause between looks, the 'worker' finishes one more run and pairs its task."""
        if len(looks) <= len(queued):
            side, number = queued[len(looks) - 1]
            store.delete(pending_key(LINK, side, number))
            LinkState(store, LINK).pair("task", side, number, "client", 100 + number)

    done = follow_mirroring(store, LINK, queued, on_progress=looks.append, poll_s=0, sleep=worker_step)
    assert done.settled and not done.stalled and done.mirrored == 2 and exit_status(done) == 0
    assert [look.mirrored for look in looks][:3] == [0, 1, 2]
    assert len(looks) == 2 + 3  # two runs over, then three quiet looks in a row
    assert "2 of 2 task(s) queued mirrored" in mirroring_summary(LINK, done)


def test_the_wait_gives_up_when_nothing_moves_and_says_the_jobs_stay(store):
    store.set(pending_key(LINK, "partner", 1), "1")  # no worker ever runs it
    clock = itertools.count(0.0, 10.0).__next__
    done = follow_mirroring(store, LINK, [("partner", 1)], stall_s=60.0, poll_s=0, clock=clock, sleep=lambda _: None)
    assert done.stalled and not done.settled and exit_status(done) == 1
    assert "nothing moved for" in mirroring_summary(LINK, done) and "stay queued" in mirroring_summary(LINK, done)


@pytest.mark.parametrize("stop, name, status", [(KeyboardInterrupt(), "SIGINT", 130), (SystemExit(143), "SIGTERM", 143)])
def test_a_stopped_wait_returns_what_it_saw(store, stop, name, status):
    store.set(pending_key(LINK, "partner", 1), "1")

    def stopped(_seconds):
        raise stop

    done = follow_mirroring(store, LINK, [("partner", 1), ("partner", 2)], poll_s=0, sleep=stopped)
    assert done.interrupted == name and exit_status(done) == status
    assert (done.queued, done.over) == (2, 1)
    assert "the jobs stay queued" in mirroring_summary(LINK, done)


def test_a_dead_letter_fails_the_command(store):
    DeadLetters(store, LINK).add({"link": LINK, "side": "partner", "task": 1}, "400", at=1.0)
    done = follow_mirroring(store, LINK, [("partner", 1)], poll_s=0, sleep=lambda _: None)
    assert done.settled and done.ended[DEAD_LETTER] == ["partner:1"] and exit_status(done) == 1
    assert "crosslink dlq" in mirroring_summary(LINK, done)


def test_the_stopping_signal_is_read_alike_for_every_operator_command():
    from crosslink.operations.session import stopping_signal

    assert stopping_signal(KeyboardInterrupt()) == "SIGINT"
    assert stopping_signal(SystemExit(143)) == "SIGTERM"
    assert stopping_signal(SystemExit(1)) == "exit"
