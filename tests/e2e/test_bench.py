"""The benchmark's quick mode as CI runs it, `crosslink bench --quick --json out.json`: the real
pipeline (a producer process, Redis, Celery worker processes, the emulator over HTTP), with the
gate the issue sets: no request over Planfix's limit, at most 2 API calls per synced change.
The other figures are checked for being measured at all and for the floors a small run can show;
the full run's figures are in bench/results/ and the README."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e

# The quick mode takes about a minute and a half here; beyond this it is stuck, not slow.
COMMAND_TIMEOUT_S = 600
HEADLINE = ("pipeline_events_per_s", "e2e_p50_ms", "e2e_p99_ms", "pipeline_workers", "target_events_per_s",
            "target_e2e_p50_ms", "target_e2e_p99_ms", "target_workers", "api_calls_per_change",
            "api_calls_per_event_burst", "limiter_violations", "limit_utilization", "fairness_jain",
            "max_link_lag_s", "idle_latency_p50_s", "idle_latency_p99_s", "workers")


def test_quick_bench_keeps_planfix_limits_and_spends_at_most_two_calls_a_change(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run([sys.executable, "-m", "crosslink.cli", "bench", "--quick", "--json", str(out)],
                          capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert out.exists(), done.stderr[-3000:]
    figures = json.loads(out.read_text(encoding="utf-8"))
    assert set(HEADLINE) <= set(figures), sorted(figures)
    assert done.returncode == 0, done.stdout
    # The gate (also the command's exit status).
    assert figures["limiter_violations"] == 0
    assert figures["api_calls_per_change"] <= 2.0, figures["detail"]["calls_by_kind"]
    # Measured, and as good as a small run can show.
    assert figures["api_calls_per_event_burst"] <= 0.5
    assert figures["fairness_jain"] >= 0.9
    assert figures["limit_utilization"] >= 0.9
    assert figures["idle_latency_p50_s"] <= 2.0
    assert figures["pipeline_events_per_s"] > 0 and figures["e2e_p99_ms"] is not None
    assert figures["pipeline_workers"] in (1, 2) and figures["target_workers"] in (None, 1, 2)
    # Both worker counts were run, the limited phases with several worker processes at once.
    assert [row["workers"] for row in figures["detail"]["pipeline"]] == [1, 2]
    # Every rate's probe says how long its events waited, held or not.
    for row in figures["detail"]["pipeline"]:
        # Each worker count is warmed before its first probe, and the warm-up is not a probe.
        assert list(row["tried"])[0].endswith("(warm-up, not counted)"), row["tried"]
        assert set(row["latency_by_rate"]) == {key for key in row["tried"] if " for " not in key}
        assert all(p50 is not None and p99 >= p50 for p50, p99 in row["latency_by_rate"].values())
        # The fast rate is one held with p99 under the target, or none.
        assert row["target_events_per_s"] == 0 or row["target_p99_ms"] < figures["p99_target_ms"], row
    assert figures["workers"] == 2
