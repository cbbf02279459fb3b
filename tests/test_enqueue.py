"""producers.enqueue: one pending job per task, the events' hints beside it, bursts coalesced."""

from __future__ import annotations

import json
import time

import pytest

from producers.enqueue import COALESCE_DELAY_S, HOT_WINDOW_MS, Enqueuer
from workers.names import FULL_HINT, SYNC_QUEUE, hints_key, pending_key
from workers.tasks import take_hints


@pytest.fixture
def enqueuer(redis_url):
    made = Enqueuer(redis_url)
    yield made
    made.close()


def queued_jobs(redis_client) -> list[dict]:
    return [json.loads(raw) for raw in redis_client.lrange(SYNC_QUEUE, 0, -1)]


def test_events_while_a_job_waits_join_it_with_their_hints(enqueuer, redis_client):
    assert enqueuer.sync("demo", "partner", 5, "task_changed")
    assert not enqueuer.sync("demo", "partner", 5, "comment_added:9")
    assert len(queued_jobs(redis_client)) == 1
    # The job takes both hints as it clears the flag, in one transaction.
    assert take_hints(redis_client, "demo", "partner", 5) == ["task_changed", "comment_added:9"]
    assert not redis_client.exists(pending_key("demo", "partner", 5), hints_key("demo", "partner", 5))


def test_callers_that_do_not_say_ask_for_a_full_look(enqueuer, redis_client):
    enqueuer.sync("demo", "client", 7)
    assert take_hints(redis_client, "demo", "client", 7) == [FULL_HINT]


def test_a_lone_event_queues_at_once_and_a_bursts_next_one_late(enqueuer, redis_client):
    enqueuer.sync("demo", "partner", 5, "task_changed")
    first = queued_jobs(redis_client)[-1]
    assert first["headers"].get("eta") is None
    take_hints(redis_client, "demo", "partner", 5)          # the first job started
    enqueuer.sync("demo", "partner", 5, "task_changed")      # within the hot window: a burst
    second = queued_jobs(redis_client)[0]
    assert second["headers"]["eta"] is not None
    # Another task's event is not part of the burst.
    enqueuer.sync("demo", "partner", 6, "task_changed")
    assert queued_jobs(redis_client)[0]["headers"].get("eta") is None


def test_after_the_hot_window_an_event_is_lone_again(enqueuer, redis_client):
    enqueuer.sync("demo", "partner", 5, "task_changed")
    take_hints(redis_client, "demo", "partner", 5)
    time.sleep(HOT_WINDOW_MS / 1000 + 0.1)
    enqueuer.sync("demo", "partner", 5, "task_changed")
    assert queued_jobs(redis_client)[0]["headers"].get("eta") is None
    assert COALESCE_DELAY_S > 0
