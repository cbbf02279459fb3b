"""The producer's spool on a real filesystem: durable appends, replay in order, the cap, and a
producer killed (SIGKILL, a real process) in the middle of a replay.

What it must never do is lose a webhook it answered 200 for, or replay them out of order; what it
may do is replay a few twice after a crash (producers/spool.py says why that is harmless).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from producers import spool as spool_module
from producers.spool import REPLAY_COMMIT_EVERY, Spool, SpoolFull, spool_directory, spooled_webhooks


def record(n: int, link: str = "alpha") -> dict:
    return {"kind": "event", "link": link, "side": "partner", "task": n, "event": "task_changed"}


def test_append_is_written_and_fsynced_before_it_returns(tmp_path, monkeypatch):
    synced: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(spool_module.os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd))[1])
    spool = Spool(tmp_path)
    try:
        synced.clear()
        spool.append(record(1))
        assert synced == [spool._file.fileno()]
        # Another reader (a restarted process) sees the whole line.
        assert json.loads((tmp_path / "webhooks.jsonl").read_text()) == record(1)
        assert spool.pending == 1
    finally:
        spool.close()


def test_replay_hands_over_every_record_in_order_then_empties_the_spool(tmp_path):
    spool = Spool(tmp_path)
    try:
        for n in range(1, 251):
            spool.append(record(n))
        applied: list[int] = []
        assert spool.replay(lambda r: applied.append(r["task"])) == 250
        assert applied == list(range(1, 251))
        assert spool.pending == 0 and (tmp_path / "webhooks.jsonl").stat().st_size == 0
        assert spool.replay(lambda r: applied.append(r["task"])) == 0 and len(applied) == 250
        spool.append(record(251))  # and it takes more after being emptied
        assert spool.replay(lambda r: applied.append(r["task"])) == 1 and applied[-1] == 251
    finally:
        spool.close()


def test_a_failing_replay_keeps_what_is_left_and_resumes_at_the_record_that_failed(tmp_path):
    spool = Spool(tmp_path)
    try:
        for n in range(1, 11):
            spool.append(record(n))
        applied: list[int] = []

        def redis_goes_away_at_7(r: dict) -> None:
            if r["task"] == 7:
                raise ConnectionError("Redis went away again")
            applied.append(r["task"])

        with pytest.raises(ConnectionError):
            spool.replay(redis_goes_away_at_7)
        assert applied == [1, 2, 3, 4, 5, 6] and spool.pending == 4
        spool.append(record(11))  # arrives while Redis is still away: behind the rest
        spool.replay(lambda r: applied.append(r["task"]))
        assert applied == list(range(1, 12)) and spool.pending == 0
    finally:
        spool.close()


def test_the_cap_refuses_more_and_frees_up_once_replayed(tmp_path):
    spool = Spool(tmp_path, max_webhooks=3)
    try:
        for n in range(3):
            spool.append(record(n))
        assert spool.full
        with pytest.raises(SpoolFull):
            spool.append(record(99))
        assert spool.pending == 3
        spool.replay(lambda r: None)
        spool.append(record(4))
        assert spool.pending == 1 and not spool.full
    finally:
        spool.close()


def test_a_line_cut_short_by_a_crash_is_dropped_and_the_rest_kept(tmp_path):
    first = Spool(tmp_path)
    first.append(record(1))
    first.append(record(2))
    first.close()
    with open(tmp_path / "webhooks.jsonl", "ab") as file:  # a write the crash cut off: never answered 200
        file.write(b'{"kind":"event","link":"alpha","task":3')
    again = Spool(tmp_path)
    try:
        assert again.pending == 2
        again.append(record(4))
        applied: list[int] = []
        again.replay(lambda r: applied.append(r["task"]))
        assert applied == [1, 2, 4]
    finally:
        again.close()


def test_a_crash_between_resetting_the_count_and_cutting_the_file_replays_rather_than_skips(tmp_path):
    spool = Spool(tmp_path)
    for n in (1, 2):
        spool.append(record(n))
    spool.close()
    # The replayed count says more bytes than the file holds: the file was cut after it was written.
    (tmp_path / "webhooks.jsonl.replayed").write_text("100000")
    again = Spool(tmp_path)
    try:
        applied: list[int] = []
        again.replay(lambda r: applied.append(r["task"]))
        assert applied == [1, 2]
    finally:
        again.close()


def test_two_producers_on_one_directory_write_separate_files_and_status_counts_both(tmp_path):
    first, second = Spool(tmp_path), Spool(tmp_path)
    try:
        assert first.path != second.path
        first.append(record(1, "alpha"))
        second.append(record(2, "alpha"))
        second.append(record(3, "beta"))
        assert spooled_webhooks(tmp_path) == {"alpha": 2, "beta": 1}
        second.replay(lambda r: None)
        assert spooled_webhooks(tmp_path) == {"alpha": 1}
    finally:
        first.close()
        second.close()
    # A producer started later takes over the first free file, left by one that stopped.
    third = Spool(tmp_path)
    try:
        assert third.path == first.path and third.pending == 1
    finally:
        third.close()


def test_spool_directory_is_the_setting_else_beside_the_links_file(tmp_path):
    links = tmp_path / "links.yaml"
    links.write_text("links: []\n")
    assert spool_directory("/var/lib/crosslink/spool", str(links)) == Path("/var/lib/crosslink/spool")
    assert spool_directory("", str(links)) == tmp_path / "spool"
    assert spool_directory("", "<string>") is None


# A producer replaying its spool, one record at a time into a sink file (fsynced, as Redis would
# hold it), slowly enough to be killed in the middle.
REPLAYER = textwrap.dedent("""
    import json, os, sys, time
    from producers.spool import Spool
    spool = Spool(sys.argv[1])
    sink = open(sys.argv[2], "ab")
    def apply(record):
        sink.write((json.dumps(record["task"]) + "\\n").encode()); sink.flush(); os.fsync(sink.fileno())
        time.sleep(0.002)
    spool.replay(apply)
""")


def test_a_producer_killed_mid_replay_loses_nothing_and_replays_at_most_a_commit_again(tmp_path):
    directory, sink = tmp_path / "spool", tmp_path / "sink"
    total = 3 * REPLAY_COMMIT_EVERY + 50
    spool = Spool(directory)
    for n in range(1, total + 1):
        spool.append(record(n))
    spool.close()
    replayer = subprocess.Popen([sys.executable, "-c", REPLAYER, str(directory), str(sink)],
                                cwd=Path(__file__).resolve().parents[1])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # kill it past the first commit, before the end
        if sink.exists() and sink.read_text().count("\n") >= REPLAY_COMMIT_EVERY + 30:
            break
        time.sleep(0.01)
    os.kill(replayer.pid, signal.SIGKILL)
    replayer.wait()
    before_restart = [int(line) for line in sink.read_text().splitlines()]
    assert REPLAY_COMMIT_EVERY < len(before_restart) < total, "killed in the middle"
    restarted = Spool(directory)
    try:
        applied = list(before_restart)
        restarted.replay(lambda r: applied.append(r["task"]))
    finally:
        restarted.close()
    first_seen = list(dict.fromkeys(applied))
    assert first_seen == list(range(1, total + 1)), "every record, in order"
    assert 0 < len(applied) - total <= REPLAY_COMMIT_EVERY, "only what followed the last commit again"
    # Each record after the restart comes in order from where the last commit was.
    resumed = applied[len(before_restart):]
    assert resumed == list(range(resumed[0], total + 1))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(st.tuples(st.just("append"), st.integers(1, 5)),
                          st.tuples(st.just("replay"), st.integers(0, 8)),
                          st.tuples(st.just("reopen"), st.just(0))), max_size=25))
def test_whatever_happens_every_record_is_applied_in_order_at_least_once(tmp_path_factory, steps):
    """Appends, replays that fail after N records (Redis going away), and restarts in any order."""
    directory = tmp_path_factory.mktemp("spool")
    spool = Spool(directory)
    appended: list[int] = []
    applied: list[int] = []
    try:
        for action, n in steps:
            if action == "append":
                for _ in range(n):
                    appended.append(len(appended) + 1)
                    spool.append(record(appended[-1]))
            elif action == "replay":
                budget = [n]

                def apply(r: dict) -> None:
                    if budget[0] == 0:
                        raise ConnectionError("Redis away")
                    budget[0] -= 1
                    applied.append(r["task"])

                try:
                    spool.replay(apply)
                except ConnectionError:
                    pass
            else:
                spool.close()
                spool = Spool(directory)
        spool.replay(lambda r: applied.append(r["task"]))
    finally:
        spool.close()
    assert list(dict.fromkeys(applied)) == appended
    assert applied == appended, "no restart mid-replay here, so nothing twice"
