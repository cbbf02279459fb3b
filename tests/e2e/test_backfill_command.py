"""`crosslink backfill` as an operator runs it, with a real worker: it follows the mirroring to the
end (its JSON report counts the tasks mirrored of those queued, and when it returns the workers are
done: both sides already match), and `--no-wait` returns once the jobs are queued.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import redis

from crosslink.lab.embedded_redis import EmbeddedRedis
from crosslink.lab.stack import LocalStack
from crosslink.operations.check import check_link
from crosslink.queue.inspect import work_waiting
from tests.e2e.conftest import seeds

pytestmark = pytest.mark.e2e

LINK = "demo"
TASKS = 30  # partner tasks older than the link
HAND_COPIES = 10  # of them copied by hand to the client side before it


@pytest.fixture
def stack(tmp_path_factory):
    emulator, links = seeds()
    emulator["accounts"]["partner"]["tasks"] = [
        {"id": n, "name": f"Deliverable {n:02d}", "processId": 1, "status": 1, "project": 10}
        for n in range(1, TASKS + 1)]
    emulator["accounts"]["client"]["tasks"] = [
        {"id": n, "name": f"Deliverable {n:02d}", "processId": 3, "status": 11, "project": 20}
        for n in range(1, HAND_COPIES + 1)]
    server = EmbeddedRedis(persistent=True).start()
    stack = LocalStack(emulator, links, redis_url=server.url, workdir=tmp_path_factory.mktemp("backfill-cli"),
                       workers=1, concurrency=4, time_scale=0.01)
    try:
        yield stack.start()
    finally:
        stack.stop()
        server.cleanup()


def backfill(stack, *args):
    done = subprocess.run([sys.executable, "-m", "crosslink.cli", "backfill", "--link", LINK, *args],
                          env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=300)
    return done, json.loads(done.stdout.strip().splitlines()[-1])


def test_backfill_waits_for_the_mirroring_and_returns_when_the_workers_are_done(stack):
    done, report = backfill(stack)
    print("\n" + done.stderr[-600:])
    assert done.returncode == 0, done.stderr[-3000:]
    # Every task queued: both of each hand-made pair, one per task mirrored anew.
    queued = 2 * HAND_COPIES + (TASKS - HAND_COPIES)
    mirroring = report["mirroring"]
    assert (report["queued"], mirroring["queued"], mirroring["over"], mirroring["mirrored"]) == (queued,) * 4
    assert mirroring["settled"] and mirroring["dead_letters"] == [] and mirroring["not_mirrored"] == []
    assert f"{queued} of {queued} task(s) queued mirrored" in done.stderr
    # It returned only once the workers were done: nothing waits, and both sides already match.
    store = redis.Redis.from_url(stack.redis_url)
    try:
        assert not work_waiting(store, LINK)
    finally:
        store.close()
    result = check_link(stack.config.links[0], stack.dumps(LINK))
    assert result.ok and result.pairs == TASKS, result.problems[:5]


def test_no_wait_returns_once_queued(stack):
    done, report = backfill(stack, "--no-wait")
    assert done.returncode == 0, done.stderr[-3000:]
    assert report["queued"] == 2 * HAND_COPIES + (TASKS - HAND_COPIES) and "mirroring" not in report
    assert stack.wait_quiet(120.0), "the workers did not mirror what was queued"
    assert check_link(stack.config.links[0], stack.dumps(LINK)).ok
