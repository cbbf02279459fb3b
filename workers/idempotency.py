"""Every outbound write happens once, even when jobs are retried or run twice.

A write is guarded by a key in Redis. Before the write the key holds a *lease* with a deadline;
after the write it becomes a *done marker* holding the remote id, kept for good. A write that
failed for sure frees the lease, so the retry can write. A write whose outcome is unknown leaves
the key *ambiguous*: the next attempt must first look in Planfix for what the lost answer would
have named (check-then-create) and only then write. Unknown outcomes are:
- a timeout, a connection lost after sending, or a 5xx after the request was sent (Planfix may
  have committed it): a `TransientError` with `maybe_applied`, however the caller wrapped it (a
  sync run tags every failure with its side: `maybe_applied` looks through such wrappers, since
  a check that only knew the bare error let every sync write repeat blindly);
- a lease whose deadline passed: its worker was killed, or lost Redis, between the write and
  the done marker. The lease therefore never simply expires (a TTL would let the next attempt
  write blindly a second time: the chaos suite found such duplicate comment mirrors); past its
  deadline it is taken over as ambiguous.
A bare SET NX taken before the write would lose the retry when the write fails (arq's
in-progress key makes the same point).

Also here: the per-pair lock, so two workers never work on the same task pair at once.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

import redis

from planfix.errors import TransientError

# A lease outlives any single write (client timeout 10 s, plus upload time); past it, a worker
# killed mid-write is presumed dead and its write's outcome unknown (ambiguous).
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
_AMBIGUOUS = "ambiguous"

# Release only what we hold: compare the token, then delete, in one step.
_RELEASE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# Take a write's key in one step, on Redis's clock (workers on several machines agree on it).
# ARGV: lease token, lease length in ms. Answers {"done", id} | {"busy"} | {"fresh"} | {"ambiguous"}.
# The lease value is "lease:<token>:<deadline ms>"; it carries no TTL (see the module docstring).
_ACQUIRE_LUA = """
local now = redis.call('TIME')
local now_ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
local current = redis.call('GET', KEYS[1])
local lease = 'lease:' .. ARGV[1] .. ':' .. (now_ms + tonumber(ARGV[2]))
if not current then
  redis.call('SET', KEYS[1], lease)
  return {'fresh', lease}
end
if string.sub(current, 1, 5) == 'done:' then return {'done', string.sub(current, 6)} end
if string.sub(current, 1, 6) == 'lease:' then
  local deadline = tonumber(string.match(current, ':(%d+)$'))
  if deadline and deadline > now_ms then return {'busy', ''} end
end
redis.call('SET', KEYS[1], lease)
return {'ambiguous', lease}
"""

# Take every key of a lock or none: SET NX each, undo the ones taken if one is held.
# ARGV: token, TTL in ms.
_LOCK_ALL_LUA = """
for i, key in ipairs(KEYS) do
  if not redis.call('SET', key, ARGV[1], 'NX', 'PX', ARGV[2]) then
    for j = 1, i - 1 do redis.call('DEL', KEYS[j]) end
    return 0
  end
end
return 1
"""

# Extend every key of a lock still held with ARGV[1] to ARGV[2] ms; 0 (and nothing extended) when
# any has lapsed or is another's.
_HOLD_ALL_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) ~= ARGV[1] then return 0 end
end
for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[2]) end
return 1
"""

_RELEASE_ALL_LUA = """
for _, key in ipairs(KEYS) do
  if redis.call('GET', key) == ARGV[1] then redis.call('DEL', key) end
end
return 1
"""


def _text(value: bytes | str | None) -> str | None:
    return value.decode() if isinstance(value, bytes) else value


def maybe_applied(error: BaseException) -> bool:
    """Whether ERROR, or the Planfix error it wraps (its ``error`` attribute or its cause), says
    the write may have been applied."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, TransientError):
            return current.maybe_applied
        wrapped = getattr(current, "error", None)
        current = wrapped if isinstance(wrapped, BaseException) else current.__cause__
    return False


class LeaseBusy(Exception):
    """Another worker holds the lease for this write right now; try again shortly."""


class LockLost(Exception):
    """The run's task pair lock lapsed (the run outlived its TTL): another run may have synced the
    pair since, so this one must not write or agree on anything more; it starts over."""


@dataclass
class WriteOnce:
    """Runs a write at most once per key and remembers its remote id."""

    redis: redis.Redis
    prefix: str = "crosslink:idem"
    lease_ttl_ms: int = LEASE_TTL_MS

    def done(self, key: str) -> int | None:
        text = _text(self.redis.get(f"{self.prefix}:{key}"))
        if text and text.startswith(_DONE):
            return int(text[len(_DONE):])
        return None

    def started(self, key: str) -> bool:
        """Whether a write for KEY was ever begun (done, in flight, or of unknown outcome)."""
        return bool(self.redis.exists(f"{self.prefix}:{key}"))

    def run(
        self,
        key: str,
        write: Callable[[], int],
        find_existing: Callable[[], int | None] | None = None,
    ) -> int:
        """Return the remote id of the write for KEY, writing only if it never happened.

        ``find_existing`` is the check of check-then-create: asked when an earlier attempt's
        outcome is unknown, it looks in Planfix for the object that attempt would have made.
        A write without it is repeated in that case (an upload, say: a second copy of a file
        is the lesser harm than none).
        """
        full = f"{self.prefix}:{key}"
        verdict, value = (_text(part) for part in
                          self.redis.eval(_ACQUIRE_LUA, 1, full, secrets.token_hex(8), self.lease_ttl_ms))
        if verdict == "done":
            return int(value)
        if verdict == "busy":
            raise LeaseBusy(key)
        lease = value
        remote_id = None
        if verdict == "ambiguous" and find_existing:
            try:
                remote_id = find_existing()
            except BaseException:
                # Still unknown: freeing the key here would let the next attempt write blindly.
                self.redis.set(full, _AMBIGUOUS)
                raise
        try:
            if remote_id is None:
                remote_id = write()
        except BaseException as exc:
            if maybe_applied(exc):
                self.redis.set(full, _AMBIGUOUS)
            else:
                self.redis.eval(_RELEASE_LUA, 1, full, lease)
            raise
        self.redis.set(full, f"{_DONE}{remote_id}")
        return remote_id

    def forget(self, key: str) -> None:
        self.redis.delete(f"{self.prefix}:{key}")


@dataclass
class TaskLock:
    """A lock on one task pair of one link: two workers never sync the same pair at once.

    A pair has a key per task; a run takes the keys of both tasks it knows (its own, and its
    counterpart's once paired), all or none. Keying on one task alone let two runs of one pair
    overlap: one that started before the pair existed (keyed on its own task) and one that
    started after (keyed on the counterpart).
    """

    redis: redis.Redis
    keys: tuple[str, ...]
    token: str = ""
    ttl_ms: int = TASK_LOCK_TTL_MS

    def acquire(self, ttl_ms: int = TASK_LOCK_TTL_MS) -> bool:
        token = secrets.token_hex(8)
        if not self.redis.eval(_LOCK_ALL_LUA, len(self.keys), *self.keys, token, ttl_ms):
            return False
        self.token, self.ttl_ms = token, ttl_ms
        return True

    def hold(self) -> None:
        """Renew the lock for another TTL, or raise LockLost when it lapsed meanwhile: called
        before each request of a run, so a run slower than the TTL never acts on a pair another
        run has taken since."""
        if not self.token or not self.redis.eval(_HOLD_ALL_LUA, len(self.keys), *self.keys,
                                                  self.token, self.ttl_ms):
            raise LockLost(",".join(self.keys))

    def release(self) -> None:
        if self.token:
            self.redis.eval(_RELEASE_ALL_LUA, len(self.keys), *self.keys, self.token)
            self.token = ""

    def release_in(self, pipe: redis.client.Pipeline) -> None:
        """Release as part of the transaction PIPE (the run's last writes go with it)."""
        if self.token:
            pipe.eval(_RELEASE_ALL_LUA, len(self.keys), *self.keys, self.token)
            self.token = ""
