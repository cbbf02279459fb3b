"""`crosslink reconcile` as an operator runs it on a link of 50 tasks a side at Planfix's 1 request/s:
its progress and estimate show at once, and a run stopped by SIGINT or SIGTERM prints what it found
so far, marked partial, and exits non-zero. A real subprocess of the command against the emulator
over loopback (its limits at 1 request/s, as Planfix's) and the private Redis; no workers.
"""

from __future__ import annotations

import copy
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from crosslink.lab.demo import example
from crosslink.lab.stack import integration_token
from crosslink.operations.rest_read import ReadProgress, RestRead, progress_text
from planfix.emulator.server import EmulatorServer
from planfix.emulator.world import World
from schemas.links import load_links
from workers.state import mirror_marker

LINK = "demo"
TASKS = 50
RATE_PER_S = 1.0  # Planfix's own rate: the figures the issue sets are for it
# The bound: progress shows within this long of the command's start.
PROGRESS_WITHIN_S = 2.0
# A partner task whose mirror carries another name, and a client task with no mirror at all.
RENAMED, UNMIRRORED = 7, TASKS


def seeded_world() -> dict[str, Any]:
    """The demo accounts holding TASKS partner tasks, 49 of them mirrored on the client side (one
    mirror renamed), and one client task of its own with no mirror: 50 tasks a side."""
    emulator = copy.deepcopy(example("emulator.yaml"))
    emulator["time_scale"] = 0.001
    for account in emulator["accounts"].values():
        account["limits"] = {"rate_per_s": RATE_PER_S, "daily_quota": 100_000}
        account["scenarios"] = []
    emulator["accounts"]["partner"]["tasks"] = [
        {"id": n, "name": f"Deliverable {n:02d}", "processId": 1, "status": 1, "project": 10}
        for n in range(1, TASKS + 1)]
    emulator["accounts"]["client"]["tasks"] = [
        {"id": n, "name": f"Deliverable {n:02d}" + (" (renamed)" if n == RENAMED else ""), "processId": 3,
         "status": 11, "project": 20, "sourceDataVersion": mirror_marker(LINK, "partner", n)}
        for n in range(1, TASKS)] + [
        {"id": UNMIRRORED, "name": "The client's own request", "processId": 3, "status": 11, "project": 20}]
    return emulator


@pytest.fixture
def fifty_a_side(tmp_path: Path, redis_url: str) -> Iterator[dict[str, str]]:
    """The emulator serving seeded_world on loopback, a links file pointing at it, and the
    environment the command runs with (private Redis, the accounts' tokens, 1 request/s)."""
    emulator = seeded_world()
    world = World.from_config(copy.deepcopy(emulator))
    server = EmulatorServer(world).start()
    try:
        links = copy.deepcopy(example("links.yaml"))
        env = {"REDIS_URL": redis_url, "CROSSLINK_RATE_PER_S": str(RATE_PER_S), "CROSSLINK_LOG_LEVEL": "WARNING"}
        for side in links["links"][0]["sides"].values():
            side["base_url"] = server.base_url(side["account"])
            env[side["token_env"]] = integration_token(emulator, side["account"], side["integration_user"])
            env[side["webhook_secret_env"]] = "unused-here"
        path = tmp_path / "links.yaml"
        path.write_text(yaml.safe_dump(links, sort_keys=False), encoding="utf-8")
        env["CROSSLINK_LINKS"] = str(path)
        yield env
    finally:
        server.stop()
        world.close()


def start_reconcile(env: dict[str, str], report: Path) -> subprocess.Popen:
    """The command as an operator starts it from a terminal. SIGINT is put back to its default
    first: a shell ignores it in the commands it starts in the background (CI's run may be one),
    and Python then leaves Ctrl-C ignored rather than raising KeyboardInterrupt."""
    return subprocess.Popen([sys.executable, "-m", "crosslink.cli", "reconcile", "--link", LINK, "--json", str(report)],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


PROGRESS = re.compile(r"\] (\d+)/(\d+) requests \| about (?:(\d+) min )?(\d+) s left|\| (\d+) requests \| estimating")


def progress_lines(stream, until: int, deadline_s: float) -> list[tuple[float, str, re.Match]]:
    """Progress lines from STREAM as they come, with when (monotonic), up to the first whose
    total reaches UNTIL requests; fails after DEADLINE_S."""
    import selectors

    selector = selectors.DefaultSelector()
    selector.register(stream, selectors.EVENT_READ)
    lines: list[tuple[float, str, re.Match]] = []
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if not selector.select(timeout=max(0.0, deadline - time.monotonic())):
            break
        line = stream.readline()
        found = PROGRESS.search(line)
        assert found, f"not a progress line: {line!r}"
        lines.append((time.monotonic(), line.strip(), found))
        if found.group(2) and int(found.group(2)) >= until:
            return lines
    raise AssertionError(f"no estimate of {until} requests within {deadline_s} s: {lines}")


def python_start_s() -> float:
    """How long Python takes here and now to load the command (what precedes its first word)."""
    started = time.monotonic()
    subprocess.run([sys.executable, "-c", "import crosslink.cli"], check=True)
    return time.monotonic() - started


def seconds(found: re.Match) -> int:
    return int(found.group(3) or 0) * 60 + int(found.group(4))


# A request each for a side's comments, checklist and card files (the demo link carries all three),
# and one list page a side.
REQUESTS = 2 * (TASKS * 3 + 1)


@pytest.mark.parametrize("stop, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["SIGINT", "SIGTERM"])
def test_progress_shows_at_once_with_an_estimate_and_a_stopped_run_prints_a_partial_report(
        fifty_a_side, tmp_path, stop, status):
    report_path = tmp_path / "report.json"
    loading_s = python_start_s()
    started = time.monotonic()
    process = start_reconcile(fifty_a_side, report_path)
    try:
        lines = progress_lines(process.stderr, REQUESTS, 30.0)
        first_at, estimated_at = lines[0][0] - started, lines[-1][0] - started
        print(f"\nloading the command: {loading_s:.2f} s; first progress after {first_at:.2f} s: {lines[0][1]}\n"
              f"estimate of the whole after {estimated_at:.2f} s: {lines[-1][1]}")
        # Within the bound of the command's start, Python's loading aside (over a second on this
        # 2-core machine, more while other tests run): the estimate of the whole needs the two
        # sides' lists, a request each, and shows with the first progress line or just after it.
        assert first_at - loading_s < PROGRESS_WITHIN_S, lines
        assert estimated_at - loading_s < PROGRESS_WITHIN_S, lines
        made, total, found = int(lines[-1][2].group(1)), int(lines[-1][2].group(2)), lines[-1][2]
        assert total == REQUESTS
        # The rest at the accounts' rate: the limiter spaces requests a little wider (its margin).
        assert (total - made) / RATE_PER_S <= seconds(found) <= (total - made) / RATE_PER_S * 1.2, lines[-1]
        # Both lists read and some details: the partial report has something to judge.
        time.sleep(max(0.0, started + 8.0 - time.monotonic()))
        process.send_signal(stop)
        out, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == status, (out, err)
    assert f"interrupted ({stop.name})" in out and "partial" in out, out
    assert "partner: 50 task(s) listed" in out and "client: 50 task(s) listed" in out, out
    assert "partial drift: link demo: 3 task(s) drifted" in out, out
    report = json.loads(report_path.read_text(encoding="utf-8"))
    assert report["partial"] is True and report["interrupted"] == stop.name
    assert sorted((item["kind"], item["side"], item["task"]) for item in report["drift"]) == [
        ("diverged", "partner", RENAMED), ("missing", "client", UNMIRRORED), ("missing", "partner", UNMIRRORED)]
    assert 0 < report["read"]["partner"]["details_read"] < TASKS


class CountingClient:
    """A Planfix client of TASKS tasks in PROJECT that counts the requests made of it."""

    def __init__(self, tasks: int, project: int):
        self.tasks, self.project, self.calls = tasks, project, 0

    def list_tasks(self, **_: Any) -> Iterator[dict[str, Any]]:
        self.calls += 1
        return iter([{"id": n, "name": f"t{n}", "project": {"id": self.project}} for n in range(1, self.tasks + 1)])

    def list_task_comments(self, *_: Any, **__: Any) -> list:
        self.calls += 1
        return []

    list_checklist = list_task_comments
    list_task_files = list_task_comments


def test_the_estimate_counts_what_the_rest_needs_and_ends_at_what_was_made():
    """Before a side is listed its tasks are assumed as many as the registry's pairs (here 40, the
    sides hold 50): the estimate is corrected once the lists are in, and the last step's total is
    the requests made."""
    link = load_links(example_links()).links[0]
    clients = {side: CountingClient(TASKS, conf.scope.value) for side, conf in link.sides.items()}
    steps: list[ReadProgress] = []
    read = RestRead(link, clients, {"partner": 1.0, "client": 0.5}, expected_tasks=40, on_progress=steps.append)
    read.run()
    assert steps[0].requests == 0 and steps[0].total == 2 * (1 + 40 * 3)
    assert steps[0].seconds_left == pytest.approx((1 + 40 * 3) * 1.0 + (1 + 40 * 3) * 0.5)
    listed = next(step for step in steps if step.doing == "client: 50 tasks listed")
    assert listed.total == 2 * (1 + 50 * 3) and listed.seconds_left == pytest.approx(150 * 1.0 + 150 * 0.5)
    made = sum(client.calls for client in clients.values())
    assert steps[-1].requests == steps[-1].total == made and steps[-1].seconds_left == 0
    assert all(a.requests <= b.requests for a, b in zip(steps, steps[1:]))
    assert progress_text(steps[0]).endswith("starting [....................] 0/242 requests | about 3 min 2 s left")
    assert "[##########..........] 152/302 requests" in progress_text(next(step for step in steps if step.requests == 152))
    unknown = RestRead(link, clients, {"partner": 1.0, "client": 1.0}).progress("starting")
    assert progress_text(unknown) == "starting | 0 requests | estimating from the task lists"


def example_links() -> Path:
    return Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
