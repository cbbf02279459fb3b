"""Following a backfill's queued tasks through the workers to their end: `crosslink backfill`'s wait.

Queueing a backfill takes seconds; the mirroring it queues takes the workers minutes to hours at
Planfix's 1 request/s (a create, its comments, checklist and files, one request each). An operator
whose progress bar ended with the queueing could not tell when the link was in, nor whether
anything failed. So after queueing, the command looks at Redis once a MIRROR_POLL_S and counts
the tasks it queued whose runs are over (crosslink.queue.inspect.runs_in_flight: no pending flag,
not waiting in its side's dirty set or claimed, its lock free), and how each ended, from the
workers' own records: paired in the registry (mirrored), a dead letter (failed for good), or
neither (parked while a side is cut, or left for a person).

It ends when every task it queued is over and the link's queue is quiet (QUIET_LOOKS looks in a
row: a retry waits in Celery's queue where no task flag shows it); when nothing has moved for
MIRROR_STALL_S (no worker running, a side cut: the jobs stay queued and run when workers do); or
when stopped (Ctrl-C, SIGTERM), which stops only the watching: the jobs stay queued.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from crosslink.operations.session import stopping_signal
from crosslink.queue.dead_letters import DeadLetters
from crosslink.queue.inspect import runs_in_flight, work_waiting
from workers.state import LinkState

# Redis is read this often while waiting: a task's run takes a few seconds at Planfix's pace.
MIRROR_POLL_S = 1.0
# Quiet looks in a row before the link's queue counts as empty (as the reconcile repair's wait).
QUIET_LOOKS = 3
# With no task's run over for this long, the wait gives up: no worker is running, or a side is
# cut. A single run, paced at 1 request/s behind live traffic, never needs as long.
MIRROR_STALL_S = 300.0

# How the tasks queued ended (MirrorProgress.ended).
MIRRORED, DEAD_LETTER, NOT_MIRRORED = "mirrored", "dead letter", "not mirrored"


@dataclass
class MirrorProgress:
    """How far the mirroring of QUEUED tasks is: those whose runs are over, by how they ended."""

    queued: int
    over: int = 0
    ended: dict[str, list[str]] = field(default_factory=lambda: {MIRRORED: [], DEAD_LETTER: [], NOT_MIRRORED: []})
    settled: bool = False   # every run over and the link's queue quiet
    stalled: bool = False   # given up: nothing moved for MIRROR_STALL_S
    interrupted: str | None = None  # the signal that stopped the watching
    waited_s: float = 0.0

    @property
    def mirrored(self) -> int:
        return len(self.ended[MIRRORED])

    def as_dict(self) -> dict[str, Any]:
        return {"queued": self.queued, "over": self.over, "mirrored": self.mirrored,
                "dead_letters": self.ended[DEAD_LETTER], "not_mirrored": self.ended[NOT_MIRRORED],
                "settled": self.settled, "stalled": self.stalled, "interrupted": self.interrupted,
                "waited_s": round(self.waited_s, 1)}


def mirror_look(store: redis.Redis, link_name: str, queued: Sequence[tuple[str, int]]) -> MirrorProgress:
    """One look at QUEUED: whose runs are over, and how each ended by the workers' records."""
    busy = runs_in_flight(store, link_name, queued)
    pairs = LinkState(store, link_name).pairs("task")
    dead = {f"{letter['side']}:{letter['task']}" for letter in DeadLetters(store, link_name).letters()}
    progress = MirrorProgress(len(queued))
    for side, number in queued:
        if (side, number) in busy:
            continue
        progress.over += 1
        name = f"{side}:{number}"
        ended = DEAD_LETTER if name in dead else MIRRORED if name in pairs else NOT_MIRRORED
        progress.ended[ended].append(name)
    return progress


def follow_mirroring(store: redis.Redis, link_name: str, queued: Sequence[tuple[str, int]], *,
                     on_progress: Callable[[MirrorProgress], None] | None = None,
                     stall_s: float = MIRROR_STALL_S, poll_s: float = MIRROR_POLL_S,
                     clock: Callable[[], float] = time.monotonic,
                     sleep: Callable[[float], None] = time.sleep) -> MirrorProgress:
    """Wait until the sync runs of QUEUED (LINK_NAME's tasks a backfill queued) are over and the
    link's queue is quiet, telling ON_PROGRESS at every look; give up once nothing moved for
    STALL_S. A Ctrl-C or SIGTERM ends the wait with what was seen (`interrupted`); the jobs stay
    queued either way."""
    started = moved_at = clock()
    calm, best = 0, -1
    progress = MirrorProgress(len(queued))
    try:
        while True:
            progress = mirror_look(store, link_name, queued)
            progress.waited_s = clock() - started
            if progress.over > best:
                best, moved_at = progress.over, clock()
            quiet = progress.over == progress.queued and not work_waiting(store, link_name)
            calm = calm + 1 if quiet else 0
            progress.settled = calm >= QUIET_LOOKS
            progress.stalled = not progress.settled and clock() - moved_at >= stall_s
            if on_progress is not None:
                on_progress(progress)
            if progress.settled or progress.stalled:
                return progress
            sleep(poll_s)
    except (KeyboardInterrupt, SystemExit) as stop:
        progress.interrupted = stopping_signal(stop)
        progress.waited_s = clock() - started
        return progress


def mirroring_summary(link_name: str, progress: MirrorProgress) -> str:
    """PROGRESS for people, once the wait is over: what the workers did with the tasks queued,
    and why the wait ended where it is not done."""
    text = (f"{link_name}: {progress.mirrored} of {progress.queued} task(s) queued mirrored, "
            f"{len(progress.ended[DEAD_LETTER])} dead letter(s), {len(progress.ended[NOT_MIRRORED])} not mirrored, "
            f"{progress.queued - progress.over} still running; waited {progress.waited_s:.0f} s")
    if progress.interrupted:
        return text + f"; stopped ({progress.interrupted}): the jobs stay queued and the workers carry them out"
    if progress.stalled:
        return text + (f"; nothing moved for {MIRROR_STALL_S:.0f} s: are the workers running, is a side cut "
                       "(crosslink links)? The jobs stay queued")
    if progress.ended[DEAD_LETTER]:
        return text + "; see crosslink dlq list"
    return text


def exit_status(progress: MirrorProgress) -> int:
    """How `crosslink backfill` ends after waiting: 0 when every task it queued was mirrored,
    1 when some ended otherwise or the wait gave up, 128 + the signal when it was stopped."""
    if progress.interrupted in signal.Signals.__members__:
        return 128 + signal.Signals[progress.interrupted].value
    return 0 if progress.settled and progress.mirrored == progress.queued else 1
