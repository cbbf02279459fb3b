"""Dead letters: sync runs that failed for good, kept with the reason and the original event, and
the events of the same task that arrived afterwards, held in order behind them.

Without the hold, a later event would sync the task past its failed one (a rename after a failed
create would create the mirror without the create's reason ever being looked at, or a later edit
would be applied while an earlier one is still lost), and an operator's replay would then run
out of order. So, as in Mozilla JBI's queue (jbi/queue.py), a task with a dead letter is blocked:
each later event for (link, side, task) is appended to that task's FIFO instead of running, until
the dead letter is replayed (its event runs first, then the held ones) or dropped (the held ones
are released).

A letter blocks only when the write that failed must come before the task's later events. A run
that failed while *reading* (the trigger comment, the task, a lookup) wrote nothing those events
could overtake, and each later run reads the state afresh: its letter is listed, for an operator
to look at or replay, but holds nothing (`blocks` false), so one unreadable event cannot freeze
every later real edit of its task.

Every letter has a stable id (a global counter), so `crosslink dlq show|replay|drop ID` names the
same letter however the list changes meanwhile.

Key layout:
  crosslink:dlq:seq                         the id counter
  crosslink:dlq:letters                     id -> JSON {id, link, side, task, event, reason, kind, at, blocks}
  crosslink:dlq:index:{link}                sorted set of the link's ids (score: the id)
  crosslink:dlq:blocked:{link}              "side:task" -> id of the letter the task waits behind
  crosslink:dlq:waiting:{link}:{side}:{task}   list of held events (JSON), oldest first
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import redis

PREFIX = "crosslink:dlq"
LETTERS = f"{PREFIX}:letters"
SEQUENCE = f"{PREFIX}:seq"

# Hold an event only while its task is blocked, in one step: a replay that unblocks the task
# between a separate check and the append would leave the event held behind nothing.
_HOLD_LUA = """
local id = redis.call('HGET', KEYS[1], ARGV[1])
if not id then return false end
redis.call('RPUSH', KEYS[2], ARGV[2])
return id
"""

# Take a letter out with everything held behind it, in one step, so an event arriving meanwhile
# is either held (and taken here) or runs after the unblock, never lost between the two.
_RELEASE_LUA = """
local letter = redis.call('HGET', KEYS[1], ARGV[1])
if not letter then return false end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
local held = {}
if redis.call('HGET', KEYS[3], ARGV[2]) == ARGV[1] then
  redis.call('HDEL', KEYS[3], ARGV[2])
  held = redis.call('LRANGE', KEYS[4], 0, -1)
  redis.call('DEL', KEYS[4])
end
return {letter, held}
"""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@dataclass(frozen=True)
class Released:
    """A letter taken out of the store, and the events that were held behind it (oldest first)."""

    letter: dict[str, Any]
    held: list[dict[str, Any]]


def find(client: redis.Redis, letter_id: str) -> dict[str, Any] | None:
    """The dead letter with LETTER_ID, whatever its link."""
    raw = client.hget(LETTERS, str(letter_id))
    return json.loads(raw) if raw is not None else None


def all_letters(client: redis.Redis) -> list[dict[str, Any]]:
    """Every dead letter of every link, oldest first."""
    letters = [json.loads(raw) for raw in client.hvals(LETTERS)]
    return sorted(letters, key=lambda letter: int(letter["id"]))


@dataclass
class DeadLetters:
    """The dead letters and held events of one link."""

    redis: redis.Redis
    link: str

    @property
    def _index(self) -> str:
        return f"{PREFIX}:index:{self.link}"

    @property
    def blocked_key(self) -> str:
        return f"{PREFIX}:blocked:{self.link}"

    def _waiting(self, side: str, task: int) -> str:
        return f"{PREFIX}:waiting:{self.link}:{side}:{int(task)}"

    def add(self, event: dict[str, Any], reason: str, at: float, kind: str = "permanent",
            blocks: bool = True) -> str:
        """Keep EVENT (it names side and task) with REASON; block its task when BLOCKS (the
        failed write must come before the task's later events). Returns the new id.

        A task already blocked stays blocked behind its older letter, which must be dealt with
        first; the new letter is listed but holds nothing. A letter that does not block is
        listed the same way and holds nothing either.
        """
        side, task = str(event["side"]), int(event["task"])
        letter_id = str(self.redis.incr(SEQUENCE))
        record = {"id": letter_id, "link": self.link, "side": side, "task": task, "event": event,
                  "reason": reason, "kind": kind, "at": at, "blocks": blocks}
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(LETTERS, letter_id, json.dumps(record, sort_keys=True))
        pipe.zadd(self._index, {letter_id: int(letter_id)})
        if blocks:
            pipe.hsetnx(self.blocked_key, f"{side}:{task}", letter_id)
        pipe.execute()
        return letter_id

    def letters(self) -> list[dict[str, Any]]:
        """This link's letters, oldest first."""
        ids = [_text(item) for item in self.redis.zrange(self._index, 0, -1)]
        if not ids:
            return []
        return [json.loads(raw) for raw in self.redis.hmget(LETTERS, ids) if raw is not None]

    def count(self) -> int:
        """How many letters this link has (one ZCARD: a metrics scrape reads it every time)."""
        return int(self.redis.zcard(self._index))

    def blocked_by(self, side: str, task: int) -> str | None:
        """The id of the letter SIDE's TASK waits behind, if any."""
        value = self.redis.hget(self.blocked_key, f"{side}:{int(task)}")
        return _text(value) if value is not None else None

    def hold_if_blocked(self, side: str, task: int, event: dict[str, Any]) -> str | None:
        """Append EVENT to the task's FIFO if the task is blocked; the blocking letter's id, or
        None when the task is free and the event should run."""
        held = self.redis.eval(_HOLD_LUA, 2, self.blocked_key, self._waiting(side, task),
                               f"{side}:{int(task)}", json.dumps(event, sort_keys=True))
        return _text(held) if held else None

    def held(self, side: str, task: int) -> list[dict[str, Any]]:
        return [json.loads(raw) for raw in self.redis.lrange(self._waiting(side, task), 0, -1)]

    def release(self, letter_id: str) -> Released | None:
        """Take letter LETTER_ID out of the store and unblock its task; None if there is none.

        The caller re-queues what it wants (replay: the letter's event, then the held ones; drop:
        only the held ones): once this returns, the task is no longer blocked.
        """
        letter = find(self.redis, letter_id)
        if letter is None or letter["link"] != self.link:
            return None
        side, task = letter["side"], int(letter["task"])
        result = self.redis.eval(_RELEASE_LUA, 4, LETTERS, self._index, self.blocked_key,
                                 self._waiting(side, task), str(letter_id), f"{side}:{task}")
        if not result:
            return None  # released by someone else meanwhile
        raw_letter, raw_held = result
        return Released(json.loads(raw_letter), [json.loads(item) for item in raw_held])
