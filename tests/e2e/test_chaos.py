"""The chaos suite's quick mode as CI runs it, `crosslink chaos --quick --json out.json`: workers
SIGKILLed, Redis restarted, Planfix answering 500/202/429/403 and slowly, webhooks twice, out of
order, late and not at all, and still nothing lost, nothing duplicated, and every link converged
(judged by the independent checker)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from crosslink.chaos import FAULT_KINDS
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
    assert summary["lost"] == 0, summary["problems"]
    assert summary["duplicates"] == 0, summary["problems"]
    assert summary["converged"] is True, (summary["problems"], summary["diagnostics"])
    assert done.returncode == 0 and "PASS" in done.stdout, done.stdout
    assert summary["events"] == 300
    # Every kind of fault was really injected, as many process faults as planned ...
    assert all(summary["faults_injected"][kind] > 0 for kind in FAULT_KINDS), summary["faults_injected"]
    assert summary["worker_kills"] >= 2 and summary["redis_restarts"] >= 1
    # ... and the emulator really answered with the faults whose answers leave a status.
    for kind in ("error_500", "rate_429", "quota"):
        assert summary["fault_hits"].get(kind, 0) > 0, summary["fault_hits"]
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
