"""The README's first command: `crosslink demo` runs on its embedded default and ends in a match."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e
# The story syncs at Planfix's 1 request/s per account: about a minute.
DEMO_TIMEOUT_S = 400


def test_demo_runs_without_a_system_redis_and_both_sides_match():
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    done = subprocess.run([sys.executable, "-m", "crosslink.cli", "demo"], env=env, capture_output=True,
                          text=True, timeout=DEMO_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Both sides match." in done.stdout
    assert "0 lost, 0 duplicated" in done.stdout
    assert ", 0 over the limit" in done.stdout and "at most 1 in any second" in done.stdout
