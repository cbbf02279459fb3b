"""The chaos suite's quick mode as CI runs it, `crosslink chaos --quick --json out.json`: workers
SIGKILLed, Redis restarted, Planfix answering 500/202/429/403 and slowly, webhooks twice, out of
order, late and not at all, and still nothing lost, nothing duplicated, and every link converged
(judged by the independent checker)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from crosslink.chaos import FAULT_KINDS

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
