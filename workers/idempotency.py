"""Every outbound write happens once, even when jobs are retried or run twice.

A write is guarded by a key in Redis. Before the write the key holds a *lease* (with a TTL, so a
worker killed mid-write does not block the key for ever); after the write it becomes a *done
marker* holding the remote id, kept for good. A write that failed for sure frees the lease, so
the retry can write. A write whose outcome is unknown (a timeout or a 5xx after the request was
sent: Planfix may have committed it) leaves an *ambiguous* marker: the next attempt must first
look in Planfix for what the lost answer would have named (check-then-create) and only then
write. A bare SET NX taken before the write would lose the retry when the write fails (arq's
in-progress key makes the same point).

Also here: the per-task lock, so two workers never work on the same task pair at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import redis

from planfix.errors import TransientError

# A lease outlives any single write (client timeout 10 s, plus upload time) but not a restart:
# a worker killed mid-write frees its key within this time.
LEASE_TTL_MS = 120_000
# A sync run of one task takes a few Planfix calls at 1 request/s; the lock outlives it with room.
TASK_LOCK_TTL_MS = 300_000
# Floors for both when time is scaled down (CROSSLINK_TIME_SCALE, the tests and the chaos suite):
# a lease still outlives one write (the 10 s client timeout) and the lock one whole run.
MIN_LEASE_TTL_MS = 15_000
MIN_TASK_LOCK_TTL_MS = 30_000


def scaled_ttl_ms(ttl_ms: int, floor_ms: int, scale: float) -> int:
    """How long a crashed worker may block a key: TTL_MS shrunk by SCALE (never grown), but not
    below FLOOR_MS. Assumes SCALE is the worker's time scale (1.0 in production: TTL unchanged)."""
    return int(max(floor_ms, ttl_ms * min(1.0, max(0.0, scale))))

_DONE = "done:"
_LEASE = "lease:"
_AMBIGUOUS = "ambiguous"

# Release only what we hold: compare the token, then delete, in one step.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class LeaseBusy(Exception):
    """Another worker holds the lease for this write right now; try again shortly."""


@dataclass
class WriteOnce:
    """Runs a write at most once per key and remembers its remote id."""

    redis: redis.Redis
    prefix: str = "crosslink:idem"
    lease_ttl_ms: int = LEASE_TTL_MS

    def done(self, key: str) -> int | None:
        value = self.redis.get(f"{self.prefix}:{key}")
        text = value.decode() if isinstance(value, bytes) else value
        if text and text.startswith(_DONE):
            return int(text[len(_DONE):])
        return None

    def run(
        self,
        key: str,
        write: Callable[[], int],
        find_existing: Callable[[], int | None] | None = None,
    ) -> int:
        """Return the remote id of the write for KEY, writing only if it never happened.

        ``find_existing`` is the check of check-then-create: asked after an ambiguous failure,
        it looks in Planfix for the object the lost answer would have named.
        """
        full = f"{self.prefix}:{key}"
        current = self.redis.get(full)
        text = current.decode() if isinstance(current, bytes) else current
        if text and text.startswith(_DONE):
            return int(text[len(_DONE):])
        if text and text.startswith(_LEASE):
            raise LeaseBusy(key)
        was_ambiguous = text == _AMBIGUOUS
        token = _LEASE + secrets.token_hex(8)
        if was_ambiguous:
            # Take the lease over the ambiguous marker only if nobody else did meanwhile.
            pipe = self.redis.pipeline(transaction=True)
            try:
                pipe.watch(full)
                if pipe.get(full) not in (_AMBIGUOUS, _AMBIGUOUS.encode()):
                    raise LeaseBusy(key)
                pipe.multi()
                pipe.set(full, token, px=self.lease_ttl_ms)
                pipe.execute()
            except redis.WatchError as exc:
                raise LeaseBusy(key) from exc
            finally:
                pipe.reset()
        elif not self.redis.set(full, token, nx=True, px=self.lease_ttl_ms):
            raise LeaseBusy(key)
        try:
            remote_id = find_existing() if (was_ambiguous and find_existing) else None
            if remote_id is None:
                remote_id = write()
        except TransientError as exc:
            if exc.maybe_applied:
                self.redis.set(full, _AMBIGUOUS)
            else:
                self.redis.eval(_RELEASE_LUA, 1, full, token)
            raise
        except BaseException:
            self.redis.eval(_RELEASE_LUA, 1, full, token)
            raise
        self.redis.set(full, f"{_DONE}{remote_id}")
        return remote_id

    def forget(self, key: str) -> None:
        self.redis.delete(f"{self.prefix}:{key}")


@dataclass
class TaskLock:
    """A lock on one task pair of one link: two workers never sync the same pair at once."""

    redis: redis.Redis
    key: str
    token: str = ""

    def acquire(self, ttl_ms: int = TASK_LOCK_TTL_MS) -> bool:
        self.token = secrets.token_hex(8)
        return bool(self.redis.set(self.key, self.token, nx=True, px=ttl_ms))

    def release(self) -> None:
        if self.token:
            self.redis.eval(_RELEASE_LUA, 1, self.key, self.token)
            self.token = ""
