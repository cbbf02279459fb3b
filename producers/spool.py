"""The producer's local, durable spool: where webhooks wait while Redis is unreachable.

Planfix counts only HTTP 200 as delivered, and any other answer pauses *every* outgoing scenario
request of that account for three minutes. So while Redis is down the producer does not refuse a
webhook: it appends what it took from it (never a secret) to a file here, fsyncs, and only then
answers 200. When Redis answers again, the producer's background task replays the spool into
Redis in the order the webhooks came, and empties it.

The format is one JSON line per webhook (``webhooks.jsonl``) and, beside it, how many bytes of it
have been replayed (``webhooks.jsonl.replayed``, replaced atomically). Why this shape:

- **Append + fsync before 200**: once Planfix holds a 200, the webhook survives a crash or a
  power cut. A line cut short by a crash was never answered 200 (the answer waits for the fsync),
  so it is dropped when the spool is opened again.
- **Replay is at least once, and that is enough**: progress is recorded every
  ``REPLAY_COMMIT_EVERY`` webhooks, so a producer that dies mid-replay replays up to that many
  again when it starts. A webhook queued twice is harmless: the enqueue coalesces per task (a
  second event for a task whose run waits joins it), and a run that finds nothing new writes
  nothing, so nothing is lost and nothing is written twice.
- **Emptied only when fully replayed**: the file is cut back to nothing once every line has been
  replayed and no new one came meanwhile; the replayed count is set to 0 *before* the file is
  cut, so a crash between the two replays the old lines again rather than skipping new ones.
- **Capped** (``CROSSLINK_SPOOL_MAX`` webhooks, DEFAULT_MAX_WEBHOOKS): a Redis outage must not
  fill the producer's disk. When full, ``append`` raises SpoolFull, the receiver logs it once and
  answers 503 (Planfix keeps the event and pauses the account; the reconciliation poller finds
  the changes later anyway).
- **One writer per file**: each producer process takes the first file slot it can lock
  (``flock``), so two producers sharing a directory never interleave lines, and a restarted
  producer takes over (and replays) the file of the one that died.

No Redis, no web code here: the receiver says what a record is and how to replay one.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("crosslink.producer.spool")

# A day of a busy partner's webhooks (a few a minute per link, tens of links) fits many times; at
# about 200 bytes a line, the cap keeps the spool under about 20 MB of disk.
DEFAULT_MAX_WEBHOOKS = 100_000
# Replay records its progress this often: a crash mid-replay replays at most this many again
# (harmless, see the docstring), and a long replay does not fsync once per webhook.
REPLAY_COMMIT_EVERY = 100
# How many producer processes may share one spool directory, each with its own file.
MAX_SLOTS = 32
# The spool's folder beside the links file when CROSSLINK_SPOOL_DIR does not name one.
DEFAULT_SUBDIR = "spool"
FILE_PATTERN = "webhooks*.jsonl"
# A producer stopping waits this long for a running replay to finish before it closes the file.
CLOSE_WAIT_S = 10.0


class SpoolFull(Exception):
    """The spool holds its cap of webhooks; nothing more can be kept."""


class SpoolBusy(Exception):
    """Every file slot of the directory is held by another live process."""


def spool_directory(configured: str | None, links_source: str | None) -> Path | None:
    """Where the spool lives: CONFIGURED (CROSSLINK_SPOOL_DIR) when set, else a ``spool`` folder
    beside the links file (the state directory `crosslink run` and the demo already use); None
    when neither exists (a configuration built in memory, as tests do)."""
    if configured:
        return Path(configured)
    if links_source and Path(links_source).is_file():
        return Path(links_source).resolve().parent / DEFAULT_SUBDIR
    return None


def _slot_name(slot: int) -> str:
    return "webhooks.jsonl" if slot == 0 else f"webhooks.{slot}.jsonl"


def _fsync_directory(directory: Path) -> None:
    """Make a file's creation or rename in DIRECTORY durable too."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_replayed(path: Path) -> int:
    try:
        return int(path.read_text(encoding="ascii").strip() or 0)
    except (FileNotFoundError, ValueError):
        return 0


class Spool:
    """One process's spool file in DIRECTORY, holding at most MAX_WEBHOOKS records."""

    def __init__(self, directory: Path | str, max_webhooks: int = DEFAULT_MAX_WEBHOOKS):
        self.directory = Path(directory)
        self.max_webhooks = max_webhooks
        # A directory made for this spool alone (receiver.open_spool), removed when left empty.
        self.temporary = False
        self.directory.mkdir(parents=True, exist_ok=True)
        self._lock_file = self._take_slot()
        self.path = self.directory / _slot_name(self._slot)
        self._replayed_path = self.path.with_name(self.path.name + ".replayed")
        # Appends and the cut that empties the file; replay holds it only between lines.
        self._lock = threading.Lock()
        self._replay_lock = threading.Lock()
        created = not self.path.exists()
        self._file = open(self.path, "ab")
        if created:
            _fsync_directory(self.directory)
        self._size, self._replayed, self._pending = self._recover()

    def _take_slot(self):
        for slot in range(MAX_SLOTS):
            handle = open(self.directory / (_slot_name(slot) + ".lock"), "a+b")
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            self._slot = slot
            return handle
        raise SpoolBusy(f"all {MAX_SLOTS} spool files in {self.directory} are held by other processes")

    def _recover(self) -> tuple[int, int, int]:
        """Drop a last line a crash cut short; (file size, bytes replayed, records waiting)."""
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            kept = data.rfind(b"\n") + 1
            log.warning("spool %s: dropped %d bytes of a line cut short by a crash (never answered 200)",
                        self.path, len(data) - kept)
            os.ftruncate(self._file.fileno(), kept)
            os.fsync(self._file.fileno())
            data = data[:kept]
        replayed = _read_replayed(self._replayed_path)
        if replayed > len(data):  # the file was cut after the count was written: start over
            replayed = 0
        return len(data), replayed, data.count(b"\n", replayed)

    @property
    def pending(self) -> int:
        """Records kept and not yet replayed."""
        return self._pending

    @property
    def full(self) -> bool:
        return self._pending >= self.max_webhooks

    def append(self, record: dict) -> None:
        """Keep RECORD durably (written and fsynced when this returns); SpoolFull at the cap."""
        line = (json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8")
        with self._lock:
            if self._pending >= self.max_webhooks:
                raise SpoolFull(f"the spool holds its cap of {self.max_webhooks} webhooks")
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self._size += len(line)
            self._pending += 1

    def replay(self, apply: Callable[[dict], None]) -> int:
        """Hand every waiting record to APPLY, oldest first, then empty the spool: how many were
        applied. When APPLY raises, what was applied before stays recorded and the error goes
        to the caller; the next replay starts from the record that failed."""
        with self._replay_lock:
            applied = 0
            while True:
                with self._lock:
                    start, end = self._replayed, self._size
                    if start >= end:
                        self._empty()
                        return applied
                with open(self.path, "rb") as reader:
                    reader.seek(start)
                    chunk = reader.read(end - start)
                position, since_commit = start, 0
                try:
                    for line in chunk.splitlines(keepends=True):
                        try:
                            record = json.loads(line)
                        except ValueError:
                            log.error("spool %s: an unreadable line at byte %d skipped", self.path, position)
                        else:
                            apply(record)
                            applied += 1
                        position += len(line)
                        since_commit += 1
                        with self._lock:
                            self._pending -= 1
                            self._replayed = position
                        if since_commit >= REPLAY_COMMIT_EVERY:
                            self._commit(position)
                            since_commit = 0
                finally:
                    self._commit(position)

    def _commit(self, position: int) -> None:
        """Record durably that the first POSITION bytes have been replayed."""
        fd, temporary = tempfile.mkstemp(dir=self.directory, prefix=".replayed-")
        try:
            os.write(fd, str(position).encode("ascii"))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temporary, self._replayed_path)
        _fsync_directory(self.directory)

    def _empty(self) -> None:
        """Cut the fully replayed file back to nothing (call with the lock held)."""
        if self._size == 0 and self._replayed == 0:
            return
        self._commit(0)
        os.ftruncate(self._file.fileno(), 0)
        os.fsync(self._file.fileno())
        self._size = self._replayed = self._pending = 0

    def close(self, timeout_s: float = CLOSE_WAIT_S) -> None:
        """Close the file and give up its slot, after a running replay ends (TIMEOUT_S at most:
        what a cut-off replay applied is recorded up to its last commit, and replayed again)."""
        waited = self._replay_lock.acquire(timeout=timeout_s)
        try:
            with self._lock:
                self._file.close()
                self._lock_file.close()
        finally:
            if waited:
                self._replay_lock.release()


def spooled_webhooks(directory: Path | str | None) -> dict[str, int]:
    """Per link, the webhooks waiting in every spool file of DIRECTORY (any process's), read
    without taking their locks: for `crosslink status`, a snapshot, not an account."""
    counts: dict[str, int] = {}
    if directory is None or not Path(directory).is_dir():
        return counts
    for path in sorted(Path(directory).glob(FILE_PATTERN)):
        data = path.read_bytes()
        replayed = _read_replayed(path.with_name(path.name + ".replayed"))
        if replayed > len(data):
            replayed = 0
        for line in data[replayed:].splitlines():
            try:
                link = str(json.loads(line).get("link", ""))
            except (ValueError, AttributeError):
                continue
            counts[link] = counts.get(link, 0) + 1
    return counts
