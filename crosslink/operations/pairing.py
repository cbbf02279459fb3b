"""Writing a matched pair: into the registry under both tasks' locks, then its marker into Planfix.

A backfill and a person's decision (crosslink/operations/decisions.py) pair two tasks the same
way: the pair and its seeded snapshots go into the workers' registry in one transaction, under
both tasks' sync locks and only if neither got a counterpart meanwhile (live traffic goes on),
and then one task gets the mirror marker, so `crosslink relink` and the checker see the pair too.
A backfill also records how far each item got (:class:`BackfillProgress`), so a run stopped half
way continues where it stopped.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import redis

from crosslink.operations.backfill_plan import PairPlan
from crosslink.queue.names import lock_key
from planfix.client import PlanfixClient
from schemas.links import Link
from workers.idempotency import TaskLock
from workers.state import LinkState, mirror_marker, mirror_source_id

PROGRESS_KEY = "crosslink:backfill:{link}"
# Stages of one item in the progress record, in order.
PAIRED, MARKED, QUEUED = "paired", "marked", "queued"
# Pairing waits for a live sync run of either task to finish: runs take seconds at Planfix's
# pace, so a lock held longer than this is a stuck run, reported rather than waited out.
LOCK_WAIT_S = 120.0
LOCK_RETRY_S = 0.5
# The pairing itself is a few Redis commands.
PAIRING_LOCK_TTL_MS = 10_000


class BackfillBusy(Exception):
    """A sync run held the tasks to pair for too long; the backfill can simply be run again."""


@dataclass
class BackfillProgress:
    """Per link: the pages listed per side and the stage each item (pair or queued task) reached.

    Hash crosslink:backfill:{link}: "pages:{side}" -> pages listed in the current run,
    "item:pair:..." / "item:queue:{side}:{n}" -> stage, "started" -> time of the first run.
    """

    redis: redis.Redis
    link: str

    @property
    def key(self) -> str:
        return PROGRESS_KEY.format(link=self.link)

    def stages(self) -> dict[str, str]:
        raw = self.redis.hgetall(self.key)
        return {_text(k)[5:]: _text(v) for k, v in raw.items() if _text(k).startswith("item:")}

    def started(self) -> float | None:
        value = self.redis.hget(self.key, "started")
        return float(value) if value is not None else None

    def begin(self, now: float) -> bool:
        """Open a run; False when an interrupted one is being continued."""
        return bool(self.redis.hsetnx(self.key, "started", now))

    def set_stage(self, item: str, stage: str, pipe: Any = None) -> None:
        (pipe or self.redis).hset(self.key, f"item:{item}", stage)

    def set_pages(self, side: str, pages: int) -> None:
        self.redis.hset(self.key, f"pages:{side}", pages)

    def finish(self) -> None:
        self.redis.delete(self.key)


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def pair_unless_linked(link: Link, pair: PairPlan, store: redis.Redis, progress: BackfillProgress | None,
                       sleep: Callable[[float], None]) -> bool:
    """Write PAIR into the registry with its seeded snapshots, unless either task got a
    counterpart since the listing; False then. Done under both tasks' sync locks, so no live
    sync run is creating a mirror of either meanwhile (one that ran already is in the registry)."""
    lock = TaskLock(store, tuple(sorted(lock_key(link.name, side, number)
                                        for side, number in zip(pair.sides, pair.numbers))))
    deadline = time.monotonic() + LOCK_WAIT_S
    while not lock.acquire(PAIRING_LOCK_TTL_MS):
        if time.monotonic() > deadline:
            raise BackfillBusy(f"{pair.item}: a sync run has held these tasks for over {LOCK_WAIT_S:.0f}s; "
                               "run the backfill again (it resumes)")
        sleep(LOCK_RETRY_S)
    try:
        state = LinkState(store, link.name)
        if any(state.counterpart("task", side, number) is not None
               for side, number in zip(pair.sides, pair.numbers)):
            return False
        pipe = store.pipeline(transaction=True)
        seeding = LinkState(pipe, link.name)
        seeding.pair("task", pair.sides[0], pair.numbers[0], pair.sides[1], pair.numbers[1])
        seeding.save_snapshots({(side, number): pair.snapshots[side]
                                for side, number in zip(pair.sides, pair.numbers)})
        if progress is not None:
            progress.set_stage(pair.item, PAIRED, pipe)
        pipe.execute()
        return True
    finally:
        lock.release()


def pair_view(pair: PairPlan) -> dict[str, Any]:
    """How a pair reads in a report: its two tasks, the marker's side, what it overwrites."""
    return {pair.sides[0]: pair.numbers[0], pair.sides[1]: pair.numbers[1], "marker_on": pair.marker_on,
            "overwrites": list(pair.overwrites)}


def write_marker(link: Link, sides: tuple[str, str], numbers: tuple[int, int], marker_on: str | None,
                 clients: Mapping[str, PlanfixClient]) -> None:
    """Mark MARKER_ON's task as the mirror of the other one: the same fields a created mirror
    carries, set as absolute values (repeating it changes nothing). A 202 means Planfix applies it
    later; the registry already holds the pair, so nothing waits on it."""
    if marker_on is None:
        return
    number = numbers[sides.index(marker_on)]
    origin = link.other(marker_on)
    origin_number = numbers[sides.index(origin)]
    clients[marker_on].update_task(number, {
        "sourceObjectId": mirror_source_id(link.name, origin, "task", origin_number),
        "sourceDataVersion": mirror_marker(link.name, origin, origin_number)})

