"""A job that waits continues as itself (workers.continuation): its next run goes out under its own
id and the job ends in Celery's RETRY state, so Flower shows one row per waiting job, not a new
row per wait. Anything else (a run of a batch job, another task's run, code outside a worker)
still gets a job of its own."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace

import pytest
from celery import Task
from celery._state import _task_stack
from celery.exceptions import Retry

from crosslink.queue.names import PROBE_LINK, SYNC_BATCH, SYNC_TASK, batch_key
from tests.test_coalesce import config, sides, spend_the_quota  # noqa: F401 - fixtures
from workers import batch, runner, telemetry
from workers import tasks as _tasks  # noqa: F401 - registers the tasks on the app
from workers.app import app
from workers.continuation import as_itself, finish_job
from workers.retry import Action, Decision


@contextmanager
def running(name: str, job_id: str, args: list, retries: int = 0) -> Iterator[Task]:
    """Make NAME the Celery job running in this process, as a worker's pool child does."""
    task = app.tasks[name]
    task.push_request(id=job_id, args=args, retries=retries, called_directly=False)
    _task_stack.push(task)
    try:
        yield task
    finally:
        _task_stack.pop()
        task.pop_request()


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, list, dict]]:
    """(name, args, options) of every message the workers' app sends."""
    messages: list[tuple[str, list, dict]] = []
    monkeypatch.setattr(runner.app, "send_task", lambda name, args=None, **options: messages.append((name, args, options)))
    return messages


BUSY = Decision(Action.WAIT, 1.5, "busy", 0)


def test_a_sync_job_whose_own_task_must_wait_continues_as_itself(sent):
    with running(SYNC_TASK, "job-7", ["demo", "client", 5], retries=2) as task:
        with pytest.raises(Retry) as raised:
            finish_job(task, lambda: (runner._again("demo", "client", 5, BUSY, None), "locked")[1])
    [(name, args, options)] = sent
    assert (name, args, options["task_id"], options["retries"], options["countdown"]) == (
        SYNC_TASK, ["demo", "client", 5], "job-7", 3, 1.5)
    assert (raised.value.message, raised.value.when) == ("locked", 1.5)


def test_another_tasks_run_or_code_outside_a_worker_sends_a_job_of_its_own(sent):
    with running(SYNC_TASK, "job-7", ["demo", "client", 6]) as task:
        assert finish_job(task, lambda: (runner._again("demo", "client", 5, BUSY, None), "locked")[1]) == "locked"
    runner._again("demo", "client", 5, BUSY, None)
    assert [options.get("task_id") for _, _, options in sent] == [None, None]
    with running(SYNC_BATCH, "batch-1", ["demo", "client"]):      # a batch job's run of task 5
        assert as_itself(SYNC_TASK, "demo", "client", 5) is None


def test_a_probe_of_a_link_still_severed_continues_as_itself(sent, monkeypatch):
    class Severed:
        def ping(self):
            raise ConnectionError("still no access")

    monkeypatch.setattr(runner, "runtime", lambda: SimpleNamespace(
        link=lambda name: SimpleNamespace(name=name), settings=SimpleNamespace(time_scale=1.0),
        state=lambda name: SimpleNamespace(severed=lambda: {"client": {"reason": "token revoked"}}),
        client=lambda link, side: Severed()))
    with running(PROBE_LINK, "probe-1", ["demo"]) as task:
        with pytest.raises(Retry) as raised:
            finish_job(task, lambda: runner.probe("demo"))
    assert [(name, options["task_id"]) for name, _, options in sent] == [(PROBE_LINK, "probe-1")]
    assert raised.value.message == "severed"


def test_a_batch_job_that_only_waits_hands_its_side_to_itself(redis_client, sides):  # noqa: F811
    """Only a held task waits: the job that found it is the side's next job, due at the hold's end."""
    spend_the_quota(redis_client)
    sides.enqueuer.queue("demo", "client", 5, "task_changed")
    held_until, first_job = sides.due.pop()
    with running(SYNC_BATCH, first_job, ["demo", "client"]) as task:
        with pytest.raises(Retry) as raised:
            finish_job(task, lambda: batch.sync_side("demo", "client", first_job))
    assert raised.value.message.startswith("synced none; the rest are held")
    assert [job for _, job in sides.due] == [first_job]
    assert redis_client.get(batch_key("demo", "client")) == first_job
    # Outside a worker (or as a job that synced something) the side goes to a new job.
    [(_, again)] = sides.due
    sides.due.clear()
    assert batch.sync_side("demo", "client", again).startswith("synced none")
    assert [job for _, job in sides.due] != [first_job] and len(sides.due) == 1


def test_a_waiting_jobs_run_is_counted_by_what_it_returned_not_as_an_error(monkeypatch):
    counted: list[tuple[str, str, str]] = []
    monkeypatch.setattr(telemetry, "count_run", lambda link, side, result: counted.append((link, side, result)))
    errors = telemetry.metrics.SYNC_RUNS.labels(link="demo", side="client", kind="retry", outcome="error")
    before = errors._value.get()
    telemetry._job_finished(task_id="job-7", task=app.tasks[SYNC_TASK], args=["demo", "client", 5],
                            retval=Retry("lease-busy", when=1.0), state="RETRY")
    assert counted == [("demo", "client", "lease-busy")]
    assert errors._value.get() == before


def test_batch_results_name_their_tasks():
    assert batch.synced_text([]) == "synced none"
    assert batch.synced_text([12, 15]) == "synced #12 #15"
    many = batch.synced_text(list(range(1, batch.SHOWN_TASKS + 4)))
    assert many.endswith(f"#{batch.SHOWN_TASKS} and 3 more")
