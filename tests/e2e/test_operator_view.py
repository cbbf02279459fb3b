"""What an operator watches, on a stack of real processes: Flower names every job's link, side and
task, and every line any process prints (the producer, a worker, beat, Flower) is a JSON line with
a UTC timestamp when JSON logs are on (the stack turns them on, as compose's .env does)."""

from __future__ import annotations

import json
import socket
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from crosslink.lab.embedded_redis import EmbeddedRedis
from crosslink.lab.stack import LocalStack
from crosslink.queue.names import SYNC_BATCH, SYNC_TASK
from tests.e2e.conftest import eventually, seeds, settle
from tests.e2e.test_metrics import new_client_task, synced

pytestmark = pytest.mark.e2e

# Flower turns the workers' task events on every few seconds (its events_enable_interval, 5 s):
# the test makes jobs until Flower shows one whole.
EVENTS_ON_S = 20.0


def flower_rows(stack: LocalStack) -> list[dict]:
    """Every job on Flower's tasks page, as the page's own table asks for them."""
    answer = httpx.get(f"http://127.0.0.1:{stack.flower_port}/tasks/datatable", timeout=10, params={
        "draw": 1, "start": 0, "length": 1000, "search[value]": "",
        "order[0][column]": 0, "order[0][dir]": "asc", "columns[0][data]": "received"})
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def lines_of(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").splitlines() if path.exists() else []


def test_flower_names_every_job_and_every_line_is_json_in_utc(tmp_path_factory):
    server = EmbeddedRedis().start()
    emulator, links = seeds()
    stack = LocalStack(emulator, links, redis_url=server.url, workdir=tmp_path_factory.mktemp("stack"),
                       workers=1, concurrency=2, time_scale=0.01, producer_process=True)
    try:
        stack.start()
        worker_lines = stack.worker_processes[0].lines     # kept as the stack stops (and clears its list)
        stack.start_flower()
        stack.start_beat(period_s=2.0)

        def a_whole_row() -> bool:
            synced(stack, new_client_task(stack, "Watch me in Flower"))
            return any(row["name"] == SYNC_BATCH for row in flower_rows(stack))
        eventually(a_whole_row, timeout=EVENTS_ON_S, what="Flower to show a job received")
        synced(stack, new_client_task(stack, "And me"))
        # Something uvicorn itself logs (not our code): a request that is not HTTP.
        with socket.create_connection(("127.0.0.1", int(stack.producer.url.rsplit(":", 1)[1])), timeout=5) as raw:
            raw.sendall(b"NOT HTTP AT ALL\r\n\r\n")
            raw.recv(1024)
        settle(stack)
        rows = flower_rows(stack)
    finally:
        stack.stop()      # the shutdown lines too must be JSON
        server.cleanup()

    sync_rows = [row for row in rows if row["name"] in (SYNC_TASK, SYNC_BATCH)]
    assert sync_rows, rows
    for row in sync_rows:
        link, side, what = row["args"].split(" · ")
        assert (link, side) in {("demo", "partner"), ("demo", "client")}, row
        assert what == "batch" if row["name"] == SYNC_BATCH else what.startswith("#"), row
    assert any(row["result"] and "synced #" in row["result"] for row in sync_rows), sync_rows

    outputs = {"worker": worker_lines,
               **{name: lines_of(stack.workdir / f"{name}.log") for name in ("producer", "beat", "flower")}}
    for name, lines in outputs.items():
        assert lines, f"{name} printed nothing: the check would prove nothing"
        for line in lines:
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError:
                pytest.fail(f"{name} printed a line that is not JSON: {line!r}")
            when = datetime.fromisoformat(record["ts"])
            assert when.utcoffset() == timedelta(0), f"{name}: {line}"
    worker = [json.loads(line) for line in outputs["worker"] if line.strip()]
    # Celery's per-job lines gave way to ours, which name the job's link, side and task.
    ends = [line for line in worker if line["msg"].startswith(f"job {SYNC_BATCH} succeeded")]
    assert ends and all(line.get("job") and line.get("link") == "demo" for line in ends), ends
    assert not [line for line in worker if line["logger"] == "celery.app.trace" and line["level"] == "info"]
    assert any("Invalid HTTP request" in json.loads(line)["msg"] for line in outputs["producer"] if line.strip())
