"""The README's first command: `crosslink demo` runs on its embedded default and ends in a match,
with the link's journal exported and verified."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parents[2]
# The story syncs at Planfix's 1 request/s per account: about a minute.
DEMO_TIMEOUT_S = 400
VERIFY_TIMEOUT_S = 60
_JOURNAL_LINE = re.compile(r"^journal: (?P<entries>\d+) entries, head #(?P<seq>\d+) (?P<hash>[0-9a-f]{12}), "
                           r"exported to (?P<path>\S+), verified OK$", re.MULTILINE)


def test_demo_runs_without_a_system_redis_and_both_sides_match(tmp_path):
    # A journal the environment names is a deployment's: the demo must keep to its own folder,
    # and never fall back to the current one either.
    elsewhere = tmp_path / "deployment-journal.sqlite3"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(CROSSLINK_JOURNAL_URL=f"sqlite:///{elsewhere}",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-m", "crosslink.cli", "demo"], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=DEMO_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "Both sides match." in done.stdout
    assert "0 lost, 0 duplicated" in done.stdout
    assert ", 0 over the limit" in done.stdout and "at most 1 in any second" in done.stdout

    journal = _JOURNAL_LINE.search(done.stdout)
    assert journal, done.stdout[-3000:]
    export = Path(journal["path"])
    try:
        assert int(journal["entries"]) > 0 and journal["seq"] == journal["entries"]
        assert f"crosslink journal verify {export}" in done.stdout
        assert sorted(path.name for path in tmp_path.iterdir()) == [], "the demo wrote outside its folder"
        # The export is whole and checks again, by the command a party would run.
        bundle = json.loads(export.read_text(encoding="utf-8"))
        assert bundle["manifest"]["link"] == "demo"
        assert bundle["manifest"]["head"]["hash"].startswith(journal["hash"])
        verified = subprocess.run([sys.executable, "-m", "crosslink.cli", "journal", "verify", str(export)], env=env,
                                  cwd=tmp_path, capture_output=True, text=True, timeout=VERIFY_TIMEOUT_S)
        assert verified.returncode == 0, verified.stdout + verified.stderr
        assert f"OK, link demo, {journal['entries']} entries" in verified.stdout
        # Only the export is left behind: the stack's files (its SQLite journal among them) are gone.
        assert [path.name for path in export.parent.iterdir()] == [export.name]
    finally:
        if export.parent.name.startswith("crosslink-demo-"):
            shutil.rmtree(export.parent, ignore_errors=True)
