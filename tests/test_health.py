"""`crosslink health worker|producer` as docker-compose runs them: a separate process, one JSON
line, exit 0 or 1, against the real private Redis, a real `celery worker` process and the
producer served over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import redis

from crosslink.lab.services import ProducerServer, WorkerProcess
from crosslink.operations.health import OLDEST_JOB_MAX_AGE_S, worker_health
from crosslink.queue.enqueue import Enqueuer
from producers.receiver import create_app
from schemas.links import parse_links
from workers.heartbeat import HEARTBEAT_KEY, record_beat

# Longer than a compose probe would ever wait, shorter than a stuck test.
COMMAND_TIMEOUT_S = 60
# Celery sends a worker heartbeat (and so our beat) this often.
CELERY_BEAT_EVERY_S = 2.0


def crosslink(redis_url: str, *args: str) -> tuple[int, dict]:
    """Run `crosslink ARGS` as its own process with REDIS_URL; (exit code, its JSON line)."""
    done = subprocess.run([sys.executable, "-m", "crosslink.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "REDIS_URL": redis_url}, timeout=COMMAND_TIMEOUT_S)
    return done.returncode, json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def worker(redis_url: str) -> Iterator[WorkerProcess]:
    process = WorkerProcess(env={"REDIS_URL": redis_url}, concurrency=1, name="hb").start()
    try:
        yield process
    finally:
        process.stop()


def wait_for_beat(client: redis.Redis, node_prefix: str) -> str:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        for node in client.zrange(HEARTBEAT_KEY, 0, -1):
            if node.startswith(node_prefix):
                return node
        time.sleep(0.1)
    raise AssertionError(f"no heartbeat from {node_prefix}* in Redis")


def test_a_running_worker_is_healthy_and_a_killed_one_is_not_once_its_beat_is_old(worker, redis_url,
                                                                                 redis_client):
    node = wait_for_beat(redis_client, "hb@")
    first = redis_client.zscore(HEARTBEAT_KEY, node)
    deadline = time.monotonic() + 3 * CELERY_BEAT_EVERY_S
    while redis_client.zscore(HEARTBEAT_KEY, node) == first:  # not only the ready beat: it keeps beating
        assert time.monotonic() < deadline, "the worker's heartbeat did not advance"
        time.sleep(0.2)
    code, report = crosslink(redis_url, "health", "worker")
    assert code == 0, report
    assert report["healthy"] and report["worker"] == node and report["heartbeat_age_s"] < 5
    assert report["redis"] == "ok" and report["queued_jobs"] == 0 and report["problems"] == []

    worker.kill()  # SIGKILL: no clean shutdown, the entry stays and ages
    time.sleep(1.5)
    code, report = crosslink(redis_url, "health", "worker", "--max-heartbeat-age", "1")
    assert code == 1 and not report["healthy"]
    assert report["worker"] == node and report["heartbeat_age_s"] >= 1
    assert any("last beat" in problem for problem in report["problems"]), report


def test_a_worker_stopped_cleanly_leaves_no_heartbeat(worker, redis_url, redis_client):
    node = wait_for_beat(redis_client, "hb@")
    assert crosslink(redis_url, "health", "worker", "--worker", node)[0] == 0
    worker.stop()
    code, report = crosslink(redis_url, "health", "worker", "--worker", node)
    assert code == 1 and report["problems"] == [f"no heartbeat from worker {node}"]


def test_without_any_worker_it_is_unhealthy(redis_url):
    code, report = crosslink(redis_url, "health", "worker")
    assert code == 1 and report["problems"] == ["no heartbeat from any worker"]


def test_another_workers_beat_does_not_count_for_a_named_one(redis_client):
    record_beat(redis_client, "w1@a")
    assert worker_health(redis_client)["healthy"]
    assert not worker_health(redis_client, node="w2@b")["healthy"]


def test_an_old_queued_job_makes_the_worker_side_unhealthy(redis_url, redis_client):
    """A worker that beats but takes nothing: the queue's oldest job shows it."""
    enqueuer = Enqueuer(redis_url)
    try:
        enqueuer.sync("demo", "partner", 7)
        enqueuer.sync("demo", "client", 8)  # a batch job per side
    finally:
        enqueuer.close()
    now = time.time()
    record_beat(redis_client, "w1@a", now)
    young = worker_health(redis_client, now=now)
    assert young["healthy"] and young["queued_jobs"] == 2 and young["oldest_job_age_s"] < 5

    later = now + OLDEST_JOB_MAX_AGE_S + 60
    record_beat(redis_client, "w1@a", later)
    old = worker_health(redis_client, now=later)
    assert not old["healthy"] and old["oldest_job_age_s"] > OLDEST_JOB_MAX_AGE_S
    assert old["problems"] == [f"the oldest of 2 queued jobs has waited {old['oldest_job_age_s']:.0f} s "
                               f"(over {OLDEST_JOB_MAX_AGE_S:g} s)"]


def test_unreachable_redis_is_unhealthy():
    code, report = crosslink("redis://127.0.0.1:1/0", "health", "worker")
    assert code == 1 and report["redis"] == "unreachable"


LINKS_YAML = """\
links:
  - name: demo
    sides:
      partner: {base_url: "https://p.planfix.com/rest", token_env: P_TOKEN, webhook_secret_env: P_SECRET,
                integration_user: "user:1", scope: {project: 1}}
      client: {base_url: "https://c.planfix.com/rest", token_env: C_TOKEN, webhook_secret_env: C_SECRET,
               integration_user: "user:1", scope: {project: 2}}
    statuses: {partner_to_client: {1: 11}, client_to_partner: {11: 1}}
"""


def test_producer_health_reads_readyz(redis_url):
    app = create_app(parse_links(LINKS_YAML), redis_url, {"P_SECRET": "p-secret-1", "C_SECRET": "c-secret-1"})
    producer = ProducerServer(app).start()
    try:
        code, report = crosslink(redis_url, "health", "producer", "--url", producer.url)
        assert code == 0 and report == {"healthy": True, "url": producer.url, "http_status": 200,
                                         "status": "ready"}
    finally:
        producer.stop()
    code, report = crosslink(redis_url, "health", "producer", "--url", producer.url)
    assert code == 1 and report["status"].startswith("unreachable")
