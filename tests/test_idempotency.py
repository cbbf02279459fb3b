"""Write-once leases and done markers, and the per-pair lock, on a real Redis."""

from __future__ import annotations

import multiprocessing
import os
import threading
import time

import pytest
import redis

from planfix.errors import InvalidRequest, TransientError
from workers.idempotency import LeaseBusy, LockLost, TaskLock, WriteOnce, maybe_applied
from workers.sync import SideFailure


def transient(maybe_applied: bool) -> TransientError:
    return TransientError("boom", http_status=500, code=None, operation="POST /task/",
                          maybe_applied=maybe_applied)


def test_second_run_returns_the_first_remote_id_without_writing(redis_client):
    writes = WriteOnce(redis_client)
    calls = []
    assert writes.run("k", lambda: calls.append(1) or 41) == 41
    assert writes.run("k", lambda: calls.append(1) or 99) == 41
    assert calls == [1] and writes.done("k") == 41


def test_a_failed_write_frees_the_lease_so_the_retry_writes(redis_client):
    writes = WriteOnce(redis_client)

    def fail() -> int:
        raise InvalidRequest("bad", http_status=400, code=41, operation="POST /task/")

    with pytest.raises(InvalidRequest):
        writes.run("k", fail)
    assert writes.run("k", lambda: 7) == 7


def test_a_transient_failure_before_commit_frees_the_lease(redis_client):
    writes = WriteOnce(redis_client)
    found = []

    def fail() -> int:
        raise transient(maybe_applied=False)

    with pytest.raises(TransientError):
        writes.run("k", fail)
    assert writes.run("k", lambda: 8, find_existing=lambda: found.append(1)) == 8
    assert found == []  # nothing ambiguous: no need to look


def test_an_ambiguous_failure_makes_the_next_attempt_check_before_creating(redis_client):
    writes = WriteOnce(redis_client)

    def lost_answer() -> int:
        raise transient(maybe_applied=True)

    with pytest.raises(TransientError):
        writes.run("k", lost_answer)
    created = []
    assert writes.run("k", lambda: created.append(1) or 5, find_existing=lambda: 12) == 12
    assert created == [] and writes.done("k") == 12


def test_an_ambiguous_failure_not_found_in_planfix_creates(redis_client):
    writes = WriteOnce(redis_client)
    with pytest.raises(TransientError):
        writes.run("k", lambda: (_ for _ in ()).throw(transient(True)))
    assert writes.run("k", lambda: 5, find_existing=lambda: None) == 5


def test_a_lost_answer_wrapped_as_the_sync_raises_it_is_still_ambiguous(redis_client):
    """A sync run tags every failure with its side (SideFailure around the client's error): the
    write is still looked up before it is repeated."""
    writes = WriteOnce(redis_client)

    def lost_answer() -> int:
        try:
            raise transient(maybe_applied=True)
        except TransientError as exc:
            raise SideFailure("client", exc) from exc

    with pytest.raises(SideFailure):
        writes.run("k", lost_answer)
    created = []
    assert writes.run("k", lambda: created.append(1) or 5, find_existing=lambda: 12) == 12
    assert created == []


def test_a_failed_lookup_keeps_the_write_ambiguous(redis_client):
    """The check itself failing (a read timed out) must not let the next attempt write blindly."""
    writes = WriteOnce(redis_client)
    with pytest.raises(TransientError):
        writes.run("k", lambda: (_ for _ in ()).throw(transient(True)))

    def read_fails() -> int | None:
        raise transient(maybe_applied=False)

    with pytest.raises(TransientError):
        writes.run("k", lambda: 5, find_existing=read_fails)
    assert writes.run("k", lambda: 5, find_existing=lambda: 12) == 12


@pytest.mark.parametrize("wrapped, expected", [
    (transient(True), True), (transient(False), False), (InvalidRequest("x"), False)])
def test_maybe_applied_looks_through_wrappers(wrapped, expected):
    assert maybe_applied(wrapped) is expected
    assert maybe_applied(SideFailure("partner", wrapped)) is expected
    try:
        try:
            raise wrapped
        except Exception as exc:
            raise RuntimeError("outer") from exc
    except RuntimeError as outer:
        assert maybe_applied(outer) is expected


def test_a_held_lease_is_busy_for_others(redis_client):
    writes = WriteOnce(redis_client)
    inside = threading.Event()
    release = threading.Event()
    results = []

    def slow_write() -> int:
        inside.set()
        release.wait(5)
        return 3

    thread = threading.Thread(target=lambda: results.append(writes.run("k", slow_write)))
    thread.start()
    inside.wait(5)
    with pytest.raises(LeaseBusy):
        writes.run("k", lambda: 4)
    release.set()
    thread.join()
    assert results == [3] and writes.run("k", lambda: 4) == 3


def test_many_threads_write_once(redis_client):
    writes = WriteOnce(redis_client)
    calls = []
    results = []

    def attempt() -> None:
        for _ in range(50):
            try:
                results.append(writes.run("k", lambda: calls.append(1) or 77))
                return
            except LeaseBusy:
                pass

    threads = [threading.Thread(target=attempt) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1 and set(results) == {77}


def test_a_write_whose_worker_died_before_the_done_marker_is_checked_for_not_repeated(redis_url):
    """A worker killed between the write and the done marker: once its lease's deadline passes,
    the next attempt must look for the object first (the lease must not simply expire)."""
    writes = WriteOnce(redis.Redis.from_url(redis_url), lease_ttl_ms=300)
    written = multiprocessing.get_context("fork").Value("i", 0)

    def killed_after_writing() -> None:
        child = WriteOnce(redis.Redis.from_url(redis_url), lease_ttl_ms=300)

        def write() -> int:
            written.value += 1
            os._exit(0)  # as SIGKILL would: no except, no finally

        child.run("k", write)

    child = multiprocessing.get_context("fork").Process(target=killed_after_writing)
    child.start()
    child.join(10)
    assert written.value == 1
    with pytest.raises(LeaseBusy):  # the deadline has not passed: the write may be under way
        writes.run("k", lambda: 1, find_existing=lambda: 1)
    time.sleep(0.4)
    created, looked = [], []
    assert writes.run("k", lambda: created.append(1) or 5, find_existing=lambda: looked.append(1) or 9) == 9
    assert created == [] and looked == [1] and writes.done("k") == 9


def test_an_expired_lease_without_a_check_writes_again(redis_client):
    writes = WriteOnce(redis_client, lease_ttl_ms=1)
    redis_client.set("crosslink:idem:k", "lease:dead:1")  # a deadline long past
    assert writes.run("k", lambda: 4) == 4


def test_task_lock_is_exclusive_and_released_only_by_its_holder(redis_client):
    first, second = TaskLock(redis_client, ("lock:a",)), TaskLock(redis_client, ("lock:a",))
    assert first.acquire()
    assert not second.acquire()
    second.release()  # not the holder: must not free the lock
    assert not TaskLock(redis_client, ("lock:a",)).acquire()
    first.release()
    assert second.acquire()


def test_a_pair_lock_takes_all_its_keys_or_none(redis_client):
    """A run that knows only its own task and one that knows the pair exclude each other."""
    before_pairing = TaskLock(redis_client, ("lock:client:7",))
    after_pairing = TaskLock(redis_client, ("lock:client:7", "lock:partner:3"))
    assert before_pairing.acquire()
    assert not after_pairing.acquire()
    # The failed attempt left nothing held: the partner task's key is free.
    assert redis_client.get("lock:partner:3") is None
    assert TaskLock(redis_client, ("lock:partner:3",)).acquire()
    before_pairing.release()
    assert not after_pairing.acquire()  # the partner key is still held by the other lock


def test_holding_a_lock_renews_it_and_a_lapsed_one_is_lost_for_good(redis_client):
    lock = TaskLock(redis_client, ("lock:hold:a", "lock:hold:b"))
    assert lock.acquire(ttl_ms=1_000)
    redis_client.pexpire("lock:hold:a", 50)
    lock.hold()
    assert all(redis_client.pttl(key) > 900 for key in lock.keys)   # both renewed to the TTL
    redis_client.delete("lock:hold:b")                               # lapsed...
    assert TaskLock(redis_client, ("lock:hold:b",)).acquire()        # ...and taken by another run
    with pytest.raises(LockLost):
        lock.hold()
    assert redis_client.pttl("lock:hold:a") <= 1_000                 # nothing renewed for the loser
    never = TaskLock(redis_client, ("lock:hold:c",))
    with pytest.raises(LockLost):
        never.hold()
