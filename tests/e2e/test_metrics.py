"""What an operator sees of a sync run, end to end: a real `celery worker` process (prefork, two
pool processes) syncs a task a person created through the emulator, then its main process's
/metrics (its pool's counters) and the producer's (the gauges read from Redis, served there
only) are scraped over HTTP, and the worker's JSON log lines are read as it printed them.
"""

from __future__ import annotations

import json
import logging
import uuid

import httpx
import pytest

from tests.e2e.conftest import WAIT_S, eventually, settle
from tests.test_metrics import value

pytestmark = pytest.mark.e2e

LINK = "demo"
IRINA_C, MARAT = 5, 6


def new_client_task(stack, name: str) -> int:
    body = {"name": name, "processId": 3, "project": {"id": 20},
            "assignees": {"users": [{"id": f"user:{IRINA_C}"}]}}
    return stack.world.create_task("client", body, author=MARAT)


def synced(stack, number: int) -> None:
    eventually(lambda: stack.mirror_of(LINK, "client", number), what=f"the mirror of client #{number}")
    settle(stack)


def scrape(stack) -> str:
    response = httpx.get(stack.worker_processes[0].metrics_url, timeout=10)
    assert response.status_code == 200
    return response.text


def scrape_producer(stack) -> str:
    response = httpx.get(f"{stack.producer.url}/metrics", timeout=10)
    assert response.status_code == 200
    return response.text


def total(text: str, name: str, **labels: str) -> float:
    """The sum of NAME's samples whose labels include LABELS."""
    from prometheus_client.parser import text_string_to_metric_families

    return sum(sample.value for family in text_string_to_metric_families(text)
               for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def tokens(stack) -> list[str]:
    return [stack.env[side.token_env] for link in stack.config.links for side in link.sides.values()]


def test_the_worker_counts_the_run_and_its_requests_and_the_producer_shows_queue_lag_and_accounts(stack):
    before = scrape(stack)
    synced(stack, new_client_task(stack, "Metrics: count this sync"))
    after = scrape(stack)

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    # The run that mirrored the client's task, counted in a pool process, summed by the main one.
    assert moved("crosslink_sync_runs_total", link=LINK, side="client", kind="created", outcome="done") >= 1
    assert moved("crosslink_sync_run_duration_seconds_count", link=LINK) >= 1
    # It read the client's task and wrote the partner's: both accounts' requests, by status.
    assert moved("crosslink_planfix_requests_total", account="client", status="200") >= 1
    assert moved("crosslink_planfix_requests_total", account="partner", status="201") >= 1
    # And by the link they served, on both accounts.
    assert moved("crosslink_link_planfix_requests_total", link=LINK, account="client") >= 1
    assert moved("crosslink_link_planfix_requests_total", link=LINK, account="partner") >= 1
    # Read from Redis when the producer is scraped: the queue is empty again, the link was synced
    # moments ago, and both accounts' requests today include the run's.
    state = scrape_producer(stack)
    assert value(state, "crosslink_redis_up") == 1
    assert value(state, "crosslink_queue_jobs", queue="crosslink.sync") == 0
    assert value(state, "crosslink_queue_oldest_job_age_seconds", queue="crosslink.sync") == 0
    assert 0 <= value(state, "crosslink_link_lag_seconds", link=LINK) < WAIT_S
    assert value(state, "crosslink_dead_letters", link=LINK) == 0
    assert value(state, "crosslink_link_oldest_change_age_seconds", link=LINK) == 0  # nothing waits now
    assert [value(state, "crosslink_side_severed", link=LINK, side=side) for side in ("partner", "client")] == [0, 0]
    assert value(state, "crosslink_workers_beating") >= 1  # the worker's heartbeat, told by the producer
    link = next(link for link in stack.config.links if link.name == LINK)
    for side in link.sides.values():
        assert value(state, "crosslink_account_requests_today", account=side.account) >= 1
        assert value(state, "crosslink_account_requests_forecast", account=side.account) >= 1
    # Served by the producer alone: a worker serving them too would double every sum over targets.
    assert value(after, "crosslink_redis_up") is None and value(after, "crosslink_queue_jobs",
                                                                   queue="crosslink.sync") is None
    for token in tokens(stack):
        assert token not in after and token not in state


def test_a_sync_runs_log_lines_carry_link_side_task_and_the_job_id_and_no_token(stack, caplog):
    caplog.set_level(logging.INFO, logger="crosslink.producer")
    number = new_client_task(stack, "Logs: follow this event")
    synced(stack, number)

    accepted = [record for record in caplog.records if record.getMessage() == "webhook accepted"
                and (record.link, record.side, record.task) == (LINK, "client", number)]
    assert accepted, "the producer logged no accepted webhook for the task"
    assert accepted[0].event == "task_created"
    lines = [json.loads(line) for line in stack.worker_processes[0].lines if line.startswith("{")]
    run = [line for line in lines if line["msg"].startswith("synced:")
           and (line.get("link"), line.get("side"), line.get("task")) == (LINK, "client", number)]
    assert run, "no worker line says the task was synced"
    uuid.UUID(run[0]["job"])  # the Celery job's id, not a placeholder

    # Every line logged while the producer's job ran carries its id, link and side, and every
    # line of the task's run its task; the job's received and end lines (in place of Celery's,
    # which named neither) too. (A lone event's job is its side's batch job: its lines outside a
    # run name no task.)
    of_job = [line for line in lines if line.get("job") == accepted[0].job]
    assert any(line["msg"].startswith("job crosslink.sync.batch received") for line in of_job), of_job
    assert any(line["msg"].startswith("job crosslink.sync.batch succeeded") for line in of_job), of_job
    assert all((line["link"], line["side"]) == (LINK, "client") for line in of_job)
    assert all(line["task"] == number for line in of_job if "task" in line)
    assert run[0]["job"] == accepted[0].job
    for token in tokens(stack):
        assert not [line for line in stack.worker_processes[0].lines if token in line]
