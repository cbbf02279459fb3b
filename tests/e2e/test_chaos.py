"""The chaos suite's quick mode as CI runs it, `crosslink chaos --quick --json out.json`: workers
SIGKILLed, Redis restarted, Planfix answering 500 before and after applying a write, timing out
past the workers' read timeout, closing the connection after applying, answering 202 and applying
late or very late, slowly, with jitter, 429 and quota errors, webhooks twice, out of order, late
and not at all (with comment edits and deletions while they are dropped), and still nothing lost,
nothing duplicated, nothing unexpected, judged by the oracle against what people did; every
emulator fault kind met requests by the emulator's own log, as often as the plan asks."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crosslink.lab.chaos import EMULATOR_FAULTS, EVENT_KINDS, FAULT_KINDS, SHARE_CHECKED
from tests.e2e.conftest import eventually

pytestmark = pytest.mark.e2e

# The quick mode promises "a few minutes"; beyond this the command is stuck, not slow.
COMMAND_TIMEOUT_S = 600


def test_quick_chaos_loses_nothing_duplicates_nothing_and_converges(tmp_path):
    out = tmp_path / "out.json"
    done = subprocess.run([sys.executable, "-m", "crosslink.cli", "chaos", "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert out.exists(), done.stderr[-3000:]
    summary = json.loads(out.read_text(encoding="utf-8"))
    # The run is a test worth passing: the whole workload was done ...
    assert summary["events"] == 300
    assert all(summary["events_by_kind"].get(kind, 0) > 0 for kind in EVENT_KINDS), summary["events_by_kind"]
    dropped = sum(count for kind, count in summary["events_by_kind"].items() if "(webhooks dropped)" in kind)
    assert dropped > 0, summary["events_by_kind"]
    assert all(summary["expected"][what] > 0 for what in ("tasks", "comments", "checklist items", "files"))
    # ... every kind of fault was injected, as many process faults as planned ...
    assert all(summary["faults_injected"][kind] > 0 for kind in FAULT_KINDS), summary["faults_injected"]
    assert summary["worker_kills"] >= 2 and summary["redis_restarts"] >= 1
    # ... and the emulator's own log shows each of its fault kinds answered as often as the plan
    # asks, the writes of unknown outcome at their share of the requests in their windows.
    assert summary["fault_min_hits"] >= 3
    for kind in EMULATOR_FAULTS:
        assert summary["fault_hits"][kind] >= summary["fault_min_hits"], (kind, summary["fault_hits"])
    for kind in SHARE_CHECKED:
        assert summary["fault_shares"][kind] >= summary["fault_min_share"], summary["fault_shares"]
    # The product's verdict, by the oracle.
    findings = [f"{item['kind']} {item['side']} {item['task']} {item['what']}: {item['detail']} "
                f"(faults around: {item['faults_around']})" for item in summary["findings"]]
    assert summary["duplicates"] == 0, findings
    assert summary["lost"] == 0 and summary["unexpected"] == 0, findings
    assert summary["converged"], summary["diagnostics"]
    assert done.returncode == 0 and "PASS" in done.stdout, done.stdout
    assert summary["convergence_s"] is not None


def processes_naming(marker: str) -> list[int]:
    """Pids of the processes whose command line holds MARKER."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(entry.name))
        except OSError:
            continue  # gone meanwhile
    return found


def test_a_terminated_chaos_run_leaves_no_process_behind():
    """SIGTERM (CI's timeout, an operator) stops the run's stack too: its workers, beat and Redis
    run in sessions of their own, and would otherwise live on (a quick run's processes were found
    still running after their command had been killed)."""
    seed = 900_000 + os.getpid() % 10_000  # names its workers chaos<seed>w<n>: only this run's
    run = subprocess.Popen([sys.executable, "-m", "crosslink.cli", "chaos", "--quick", "--seed", str(seed)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # Both workers up (each a main process and two pool processes), or the second starting:
        # the run is under way, and may be anywhere in starting its stack.
        eventually(lambda: len(processes_naming(f"chaos{seed}w")) >= 5, timeout=120, what="the run's workers")
        run.send_signal(signal.SIGTERM)
        assert run.wait(timeout=60) == 128 + signal.SIGTERM
        eventually(lambda: not processes_naming(f"chaos{seed}w"), timeout=30, what="its workers to stop")
    finally:
        if run.poll() is None:
            run.kill()
