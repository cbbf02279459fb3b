"""Every request a sync run makes to Planfix goes through one Gateway: the run's admission to its
account's turn, the reads it keeps for a later attempt, and the failures it tags with their side.

Why an object of its own rather than a private method of the run: comment, checklist and file
mirroring make requests too, and each needs the same rules (a request waits for the account
limiter only briefly until the run is admitted; a kept read answers a call once; a failure says
which account raised it and whether it was a read). They receive the gateway explicitly and call
its one public method, `call`, instead of reaching into the run.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from planfix.client import PlanfixClient
from planfix.errors import PlanfixError, RateLimited

# Client methods that only read (everything else counts as a write).
READ_PREFIXES = ("get_", "list_", "download_")
# How long a request may wait for the account limiter inside the worker slot: the first of a
# run only a scheduling jitter (a longer wait re-queues the job for its turn, workers.tasks);
# the ones after it up to about two turns of a lone link at Planfix's 1 request/s.
ADMISSION_LIMIT_WAIT_S = 0.05
FOLLOW_UP_LIMIT_WAIT_S = 2.5


def call_key(side: str, method: str, *args: Any, **kwargs: Any) -> str:
    """How a run's reads are kept and looked up: by side, client method and arguments."""
    return json.dumps([side, method, args, kwargs], sort_keys=True, default=str)


def without_side(reads: Mapping[str, Any], side: str) -> dict[str, Any]:
    """READS (by call_key) but those of SIDE."""
    prefix = json.dumps([side])[:-1] + ","
    return {key: value for key, value in reads.items() if not key.startswith(prefix)}


class SideFailure(Exception):
    """A Planfix failure tagged with the side whose account raised it, and whether the call was a
    read (READ): a failed read wrote nothing a task's later events must wait for (workers.tasks)."""

    def __init__(self, side: str, error: PlanfixError, read: bool = False):
        super().__init__(f"{side}: {error}")
        self.side = side
        self.error = error
        self.read = read


class Gateway:
    """One run's requests to the clients of its link's sides (CLIENTS, by side)."""

    def __init__(self, clients: Mapping[str, PlanfixClient], kept_reads: Mapping[str, Any] | None = None,
                 prefetched: Mapping[str, Any] | None = None, guard: Callable[[], None] | None = None):
        self.clients = clients
        # Called before each request to Planfix: raises when the run may no longer act (its
        # pair lock lapsed: workers.idempotency.TaskLock.hold).
        self.guard = guard
        # This run's reads, by side and call: a run re-queued for its turn mid-way keeps them
        # (workers.tasks), and its next attempt (RESUMED) answers each of those calls once from
        # them instead of spending its turn on it again; a later call (a read-back after a
        # write) goes to Planfix. Reads of a side the run had written to are not kept
        # (resumable_reads), nor the counterpart's resumed while an event of its own waits (see
        # TaskSync._read_pair): they may be stale.
        self.kept_reads: dict[str, Any] = {}
        self._resumed: dict[str, Any] = dict(kept_reads or {})
        # Whether a request of this run has been served: see call.
        self._admitted = bool(self._resumed)
        # PREFETCHED reads, by call (call_key), made for this run by others just now (a batch
        # job reads its tasks together): answered from like kept reads, and kept like them,
        # but they did not admit this run to its account's turn.
        self._resumed.update(prefetched or {})
        # Writes sent in this run (any side): a re-queued run that wrote must re-read what it
        # wrote to (WROTE_TO, the sides).
        self.writes_sent = 0
        self.wrote_to: set[str] = set()

    def call(self, side: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Call SIDE's client; list methods are read to the end here, so paging failures are
        tagged with the side too. Reads are kept by call (see kept_reads)."""
        read = method.startswith(READ_PREFIXES)
        key = call_key(side, method, *args, **kwargs)
        if read and key in self._resumed:
            self.kept_reads[key] = self._resumed.pop(key)
            return self.kept_reads[key]
        self.hold()
        client = self.clients[side]
        # The run's first request waits for its link's turn in the queue, never in the slot; once
        # admitted, its few further requests may wait up to a turn in it (a run that makes two
        # requests to one account spans a second by Planfix's own limit, and starting over would
        # spend those requests again).
        client.max_limit_sleep_s = FOLLOW_UP_LIMIT_WAIT_S if self._admitted else ADMISSION_LIMIT_WAIT_S
        try:
            result = getattr(client, method)(*args, **kwargs)
            result = list(result) if isinstance(result, Iterator) else result
        except PlanfixError as exc:
            # A write our limiter held back was never sent; any other failure may have been.
            if not read and not (isinstance(exc, RateLimited) and exc.scope == "limiter"):
                self.writes_sent += 1
                self.wrote_to.add(side)
            raise SideFailure(side, exc, read=read) from exc
        if not read:
            self.writes_sent += 1
            self.wrote_to.add(side)
        self._admitted = True
        if read and method != "download_file":
            self.kept_reads[key] = result
        return result

    def hold(self) -> None:
        """Raise unless the run may still act (see guard); nothing to check without a guard."""
        if self.guard is not None:
            self.guard()

    def forget_resumed(self, side: str) -> None:
        """Answer no more of SIDE's calls from the reads resumed: they may be stale."""
        self._resumed = without_side(self._resumed, side)

    def resumable_reads(self) -> dict[str, Any]:
        """The reads a run that must wait for its turn keeps for its next attempt: all but those
        of a side it wrote to, which its write made stale. (Once a run that had written kept
        none, its next attempt spent its turn's slot reading its own task again, and a run that
        needs two requests of one account never got past its first on a busy account.)"""
        kept = dict(self.kept_reads)
        for side in self.wrote_to:
            kept = without_side(kept, side)
        return kept
