"""A run's take of its task's events, for tests that stand in for runs.

Runs take their events in the step that begins them (workers.runner.take_batch, one Lua script);
tests of the queue that do not make a run call that same step here, and release the pair's lock
at once, so what they check is what a real run's begin does.
"""

from __future__ import annotations

from types import SimpleNamespace

import redis

from crosslink.queue.names import lock_key
from workers.runner import take_batch

STAND_IN_TOKEN = "test-run"
STAND_IN_LOCK_MS = 10_000


def take_hints(store: redis.Redis, link: str, side: str, number: int) -> list[str]:
    """Clear the task's pending flag and take its events' hints, as a run's begin does; [] when
    its pair is locked by another run (its events stay for that run's successor)."""
    other = "client" if side == "partner" else "partner"
    stand_in = SimpleNamespace(name=link, other=lambda _side: other)
    [taken] = take_batch(store, stand_in, side, [number], STAND_IN_TOKEN, STAND_IN_LOCK_MS)
    if taken.locked:
        return []
    store.delete(lock_key(link, side, number))
    if taken.counterpart is not None:
        store.delete(lock_key(link, other, taken.counterpart))
    return taken.hints
