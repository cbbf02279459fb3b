"""producers.enqueue and the batch claims (workers.tasks): one pending run per task, the events'
hints beside it, lone events batched per link side, bursts coalesced."""

from __future__ import annotations

import json
import time

import pytest

from producers.enqueue import COALESCE_DELAY_S, HOT_WINDOW_MS, Enqueuer
from workers.names import (
    FULL_HINT, SYNC_BATCH, SYNC_QUEUE, SYNC_TASK, batch_key, claims_key, dirty_key, hints_key, pending_key,
)
from workers.tasks import claim_batch, settle_batch, take_hints

TTL_MS = 60_000


@pytest.fixture
def enqueuer(redis_url):
    made = Enqueuer(redis_url)
    yield made
    made.close()


def queued_jobs(redis_client) -> list[dict]:
    """Jobs in the queue, oldest first."""
    return [json.loads(raw) for raw in reversed(redis_client.lrange(SYNC_QUEUE, 0, -1))]


def job(message: dict) -> tuple[str, list, str | None]:
    """(task name, args, eta) of a queued Celery message."""
    headers = message["headers"]
    return headers["task"], json.loads(headers["argsrepr"].replace("'", '"')), headers.get("eta")


def test_events_while_a_run_waits_join_it_with_their_hints(enqueuer, redis_client):
    assert enqueuer.sync("demo", "partner", 5, "task_changed")
    assert not enqueuer.sync("demo", "partner", 5, "comment_added:9")
    assert len(queued_jobs(redis_client)) == 1
    # The run takes both hints as it clears the flag, in one transaction.
    assert take_hints(redis_client, "demo", "partner", 5) == ["task_changed", "comment_added:9"]
    assert not redis_client.exists(pending_key("demo", "partner", 5), hints_key("demo", "partner", 5))


def test_callers_that_do_not_say_ask_for_a_full_look(enqueuer, redis_client):
    enqueuer.sync("demo", "client", 7)
    assert take_hints(redis_client, "demo", "client", 7) == [FULL_HINT]


def test_lone_events_of_one_side_share_one_batch_job(enqueuer, redis_client):
    first = enqueuer.queue("demo", "partner", 5, "task_changed")
    second = enqueuer.queue("demo", "partner", 6, "task_changed")
    other_side = enqueuer.queue("demo", "client", 6, "task_changed")
    assert first == second != other_side
    jobs = [job(message) for message in queued_jobs(redis_client)]
    assert jobs == [(SYNC_BATCH, ["demo", "partner"], None), (SYNC_BATCH, ["demo", "client"], None)]
    assert queued_jobs(redis_client)[0]["headers"]["id"] == first
    assert redis_client.zrange(dirty_key("demo", "partner"), 0, -1) == ["5", "6"]   # in order of arrival


def test_a_bursts_next_event_queues_the_tasks_own_job_late(enqueuer, redis_client):
    batch = enqueuer.queue("demo", "partner", 5, "task_changed")
    claim_batch(redis_client, "demo", "partner", batch, TTL_MS)     # the batch job started
    take_hints(redis_client, "demo", "partner", 5)                  # ...and began the task's run
    enqueuer.sync("demo", "partner", 5, "task_changed")              # within the hot window: a burst
    name, args, eta = job(queued_jobs(redis_client)[-1])
    assert (name, args) == (SYNC_TASK, ["demo", "partner", 5]) and eta is not None
    assert redis_client.zscore(dirty_key("demo", "partner"), "5") is None
    # Another task's event is not part of the burst: it goes to a new batch job, at once.
    enqueuer.sync("demo", "partner", 6, "task_changed")
    assert job(queued_jobs(redis_client)[-1]) == (SYNC_BATCH, ["demo", "partner"], None)


def test_after_the_hot_window_an_event_is_lone_again(enqueuer, redis_client):
    batch = enqueuer.queue("demo", "partner", 5, "task_changed")
    claim_batch(redis_client, "demo", "partner", batch, TTL_MS)
    take_hints(redis_client, "demo", "partner", 5)
    time.sleep(HOT_WINDOW_MS / 1000 + 0.1)
    enqueuer.sync("demo", "partner", 5, "task_changed")
    assert job(queued_jobs(redis_client)[-1]) == (SYNC_BATCH, ["demo", "partner"], None)
    assert COALESCE_DELAY_S > 0


def test_a_batch_job_claims_what_waits_and_later_events_send_another(enqueuer, redis_client):
    for task in (7, 5, 6):
        enqueuer.sync("demo", "partner", task, "task_changed")
        time.sleep(0.002)
    first = queued_jobs(redis_client)[0]["headers"]["id"]
    assert claim_batch(redis_client, "demo", "partner", first, TTL_MS, most=2) == ([5, 7], 1)   # the two that waited longest
    # The job started: its flag is gone, so the next lone event sends a job of its own.
    assert not redis_client.exists(batch_key("demo", "partner"))
    enqueuer.sync("demo", "partner", 8, "task_changed")
    assert len(queued_jobs(redis_client)) == 2
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS) == ([6, 8], 0)
    # A job that finds nothing claims nothing.
    assert claim_batch(redis_client, "demo", "partner", "job-3", TTL_MS) == ([], 0)


def test_a_started_job_leaves_another_jobs_flag_alone(enqueuer, redis_client):
    queued = enqueuer.queue("demo", "partner", 5, "task_changed")
    claim_batch(redis_client, "demo", "partner", "an-old-redelivered-job", TTL_MS)
    assert redis_client.get(batch_key("demo", "partner")) == queued


def test_claims_of_a_job_that_died_are_taken_again_once_they_lapse(enqueuer, redis_client):
    enqueuer.sync("demo", "partner", 5, "task_changed")
    assert claim_batch(redis_client, "demo", "partner", "dead-job", 200) == ([5], 0)
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS) == ([], 0)   # claim still live
    time.sleep(0.25)
    assert claim_batch(redis_client, "demo", "partner", "job-3", TTL_MS) == ([5], 0)
    assert redis_client.hget(claims_key("demo", "partner"), "5").endswith(":job-3")


def test_a_job_delivered_again_takes_its_own_claims_back_at_once(enqueuer, redis_client):
    enqueuer.sync("demo", "partner", 5, "task_changed")
    assert claim_batch(redis_client, "demo", "partner", "killed-job", TTL_MS) == ([5], 0)
    assert claim_batch(redis_client, "demo", "partner", "other-job", TTL_MS) == ([], 0)
    assert claim_batch(redis_client, "demo", "partner", "killed-job", TTL_MS) == ([5], 0)


def test_settling_drops_only_the_jobs_own_claims(enqueuer, redis_client):
    for task in (5, 6):
        enqueuer.sync("demo", "partner", task, "task_changed")
    claim_batch(redis_client, "demo", "partner", "job-1", TTL_MS)
    redis_client.hset(claims_key("demo", "partner"), "6", f"{int(time.time() * 1000) + TTL_MS}:job-2")
    settle_batch(redis_client, "demo", "partner", "job-1", [5, 6])
    assert redis_client.hgetall(claims_key("demo", "partner")) == {"6": redis_client.hget(
        claims_key("demo", "partner"), "6")}
    assert redis_client.hget(claims_key("demo", "partner"), "6").endswith(":job-2")


def test_send_batch_only_for_a_side_with_waiting_tasks_and_no_job(enqueuer, redis_client):
    assert enqueuer.send_batch("demo", "partner") is None                 # nothing waits
    redis_client.hset(claims_key("demo", "partner"), "5", "0:dead-job")    # a dead job's claim
    sent = enqueuer.send_batch("demo", "partner")
    assert sent is not None and redis_client.get(batch_key("demo", "partner")) == sent
    assert enqueuer.send_batch("demo", "partner") is None                 # one is queued
    assert [job(message) for message in queued_jobs(redis_client)] == [(SYNC_BATCH, ["demo", "partner"], None)]


def test_a_job_that_could_not_be_sent_leaves_no_flag_behind(enqueuer, redis_client, monkeypatch):
    def refuse(*_, **__):
        raise ConnectionError("broker gone")

    monkeypatch.setattr(enqueuer.celery, "send_task", refuse)
    with pytest.raises(ConnectionError):
        enqueuer.sync("demo", "partner", 5, "task_changed")
    assert not redis_client.exists(pending_key("demo", "partner", 5), batch_key("demo", "partner"))
    monkeypatch.undo()
    # The sender's retry of the webhook queues it after all (the task waits in the dirty set).
    assert enqueuer.sync("demo", "partner", 5, "task_changed")
    assert claim_batch(redis_client, "demo", "partner", "job-1", TTL_MS) == ([5], 0)


def test_a_batch_job_lost_with_its_flag_kept_is_sent_again_once_tasks_waited_too_long(enqueuer, redis_client):
    lost = enqueuer.queue("demo", "partner", 5, "task_changed")
    redis_client.delete(SYNC_QUEUE)                       # the message is gone, the flag is not
    assert enqueuer.send_batch("demo", "partner", stale_s=5) is None     # not waited long enough
    time.sleep(0.3)
    again = enqueuer.send_batch("demo", "partner", stale_s=0.2)
    assert again not in (None, lost) and redis_client.get(batch_key("demo", "partner")) == again
    assert [job(message) for message in queued_jobs(redis_client)] == [(SYNC_BATCH, ["demo", "partner"], None)]
