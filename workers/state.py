"""The sync's memory in Redis: which task, comment and file mirrors which, and the last state
both sides agreed on.

Everything here survives a worker restart. The same links are also written into Planfix itself
(``sourceDataVersion`` on every mirror, see :func:`mirror_marker`), so that ``crosslink relink``
can rebuild this registry from the two accounts if Redis is lost.

Key layout (one hash per link and kind, so a link's state can be listed and dropped as a whole):
  crosslink:reg:{link}:task      "partner:5" -> "12", "client:12" -> "5"
  crosslink:reg:{link}:comment   "partner:77" -> "301", "client:301" -> "77"
  crosslink:reg:{link}:file      "partner:9" -> "41"
  crosslink:snap:{link}          "partner:5" -> canonical task JSON as last synced
  crosslink:csnap:{link}:{side}:{task}   comment id -> fingerprint of the last mirrored text
  crosslink:cversions:{link}     "partner:77" -> JSON list of the comment's texts as mirrored, each
                                 with when it was seen: its mirror shows the last and keeps the rest
  crosslink:queued:{link}        "client:12" -> values the sync's writes should produce there, not yet
                                 seen agreed (queued by Planfix with 202, or sent by a run not finished)
  crosslink:severed:{link}       side -> JSON reason, while that side's access is lost
  crosslink:parked:{link}        list of parked events (JSON), replayed when access returns
  crosslink:cut-noted:{link}     "partner:5", tasks told the other side is cut off (told of the resume too)
  crosslink:dlq:*                dead letters and the events held behind them (crosslink.queue.dead_letters)
  crosslink:last-sync            link -> time of its last finished sync run
  crosslink:waiting-parent:{link}:{side}:{parent}   children to sync again once the parent is mirrored
  crosslink:since:{link}         side -> when the deployment began serving that side (epoch)
  crosslink:awaiting:{link}      "partner:5" -> JSON: a task older than the link, left unmirrored
                                 until a person (or backfill) decides
  crosslink:decided:{link}       "partner:5" -> JSON: such a task a person (or backfill) released
  crosslink:held:{link}          "partner:5" -> JSON: its status move the other side's process does
                                 not allow, while the sides stay apart
  crosslink:removed:{link}       "client:7" -> JSON: a paired task its side removed (deleted, trashed,
                                 moved out of scope); its counterpart stays, no longer followed
  crosslink:paused:{link}        side -> JSON (who, when): its people paused what it sends (workers.governance)
  crosslink:governed:{link}:{side}   comment ids of the side's record task already read as commands
  crosslink:record:{link}        side -> number of the link's record task in that side's account, where
                                 the journal's heads are posted (workers.anchors)
  crosslink:crossing:{link}:{side}:{task}   journal entry key -> JSON entry: a write sent to that task
                                 whose answer is not in (lost, or its run killed), recorded by the run
                                 that finds it landed (workers.sync.writer)
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from crosslink.queue.dead_letters import DeadLetters
from crosslink.queue.names import LAST_SYNC_KEY, comment_prints_key, parked_key, pending_key, registry_key, severed_key
from workers.field_diff import with_sent

PREFIX = "crosslink"
# Fixed namespace: the same (link, side, object) always yields the same sourceObjectId, so a
# mirror can be recognised in Planfix even when Redis lost the registry.
MIRROR_NAMESPACE = uuid.UUID("7d3c5a4e-2f7b-4e55-9b7e-c1a55e11a0c5")
MARKER_PREFIX = "crosslink"
# How long a write whose answer never came waits to be found landed by a run of its pair: the
# next run finds it within minutes, but a side severed or paused may hold the pair's runs for weeks.
CROSSING_HOLD_S = 60 * 86400


def mirror_source_id(link: str, side: str, kind: str, number: int | str) -> str:
    """The sourceObjectId written on the mirror of (side, kind, number)."""
    return str(uuid.uuid5(MIRROR_NAMESPACE, f"{link}:{side}:{kind}:{number}"))


def record_source_id(link: str, side: str) -> str:
    """The sourceObjectId of LINK's record task in SIDE's account (workers.anchors): how it is found
    again after a lost answer, and told apart from the link's tasks (workers.canonical.in_scope)."""
    return mirror_source_id(link, side, "record", "journal")


def mirror_marker(link: str, side: str, number: int) -> str:
    """The sourceDataVersion written on a mirror: names its original in plain text (<=100 chars)."""
    return f"{MARKER_PREFIX}:{link}:{side}:{number}"


def parse_marker(marker: str | None) -> tuple[str, str, int] | None:
    """(link, side, number) from a mirror's sourceDataVersion, or None if it is not ours."""
    if not marker:
        return None
    parts = marker.split(":")
    if len(parts) != 4 or parts[0] != MARKER_PREFIX or not parts[3].isdigit():
        return None
    return parts[1], parts[2], int(parts[3])


def mirrored_from(marker: str | None, link: str, origin: str) -> int | None:
    """The number of ORIGIN side's object that the mirror marked MARKER (its sourceDataVersion)
    copies, when LINK made it; None for anything else (a person's object, another link's mirror,
    a mirror of the other side's)."""
    parsed = parse_marker(marker)
    return parsed[2] if parsed is not None and parsed[:2] == (link, origin) else None


@dataclass
class LinkState:
    """Registry and snapshots of one link."""

    redis: redis.Redis
    link: str

    def key(self, *parts: str) -> str:
        return ":".join((PREFIX, *parts))

    # --- registry -----------------------------------------------------------------------
    def counterpart(self, kind: str, side: str, number: int) -> int | None:
        value = self._hget(registry_key(self.link, kind), f"{side}:{number}")
        return int(value) if value is not None else None

    def _hget(self, key: str, field_: str) -> Any:
        return self.redis.hget(key, field_)

    def counterpart_number(self, side: str, number: int) -> int | None:
        """The counterpart task of SIDE's task NUMBER (the registry lookup the planner takes)."""
        return self.counterpart("task", side, number)

    def pair(self, kind: str, side: str, number: int, other_side: str, other: int) -> None:
        self.redis.hset(
            self.key("reg", self.link, kind),
            mapping={f"{side}:{number}": other, f"{other_side}:{other}": number},
        )

    def pairs(self, kind: str) -> dict[str, int]:
        raw = self.redis.hgetall(self.key("reg", self.link, kind))
        return {_text(k): int(v) for k, v in raw.items()}

    def is_mirror(self, kind: str, side: str, number: int) -> bool:
        """True when (side, number) was created by the sync as a mirror."""
        return self.redis.sismember(self.key("mirrors", self.link, kind), f"{side}:{number}") == 1

    def mark_mirror(self, kind: str, side: str, number: int) -> None:
        self.redis.sadd(self.key("mirrors", self.link, kind), f"{side}:{number}")

    def has_pending(self, side: str, number: int) -> bool:
        """Whether an event for SIDE's task NUMBER is waiting for its sync run."""
        return bool(self.redis.exists(pending_key(self.link, side, number)))

    # --- hierarchy ----------------------------------------------------------------------
    def wait_for_parent(self, side: str, parent: int, child: int) -> None:
        """CHILD's parent has no mirror yet: remember to sync CHILD again once it has one."""
        self.redis.sadd(self.key("waiting-parent", self.link, side, str(parent)), child)

    def take_waiting_children(self, side: str, parent: int) -> list[int]:
        key = self.key("waiting-parent", self.link, side, str(parent))
        pipe = self.redis.pipeline(transaction=True)
        pipe.smembers(key)
        pipe.delete(key)
        members, _ = pipe.execute()
        return sorted(int(member) for member in members)

    # --- snapshots ----------------------------------------------------------------------
    def snapshot(self, side: str, number: int) -> dict[str, Any] | None:
        raw = self._hget(self.key("snap", self.link), f"{side}:{number}")
        return json.loads(raw) if raw is not None else None

    def save_snapshots(self, snapshots: dict[tuple[str, int], dict[str, Any]]) -> None:
        if snapshots:
            self.redis.hset(
                self.key("snap", self.link),
                mapping={f"{s}:{n}": json.dumps(v, sort_keys=True) for (s, n), v in snapshots.items()},
            )

    def queued_expectations(self, side: str, number: int) -> dict[str, Any]:
        """Canonical values the sync's writes should give SIDE's task NUMBER, not yet agreed: a write
        Planfix queued (202), or one sent by a run that has not finished, or failed (expect_ahead;
        with earlier values of a key the run wrote twice, such as a status path's steps:
        field_diff.ALTERNATIVES)."""
        raw = self._hget(self.key("queued", self.link), f"{side}:{number}")
        return json.loads(raw) if raw is not None else {}

    def save_queued_expectations(self, side: str, number: int, values: dict[str, Any]) -> None:
        if values:
            self.redis.hset(self.key("queued", self.link), f"{side}:{number}",
                            json.dumps(values, sort_keys=True))
        else:
            self.redis.hdel(self.key("queued", self.link), f"{side}:{number}")

    def expect_ahead(self, side: str, number: int, values: Mapping[str, Any]) -> dict[str, Any]:
        """Add VALUES, what a write about to be sent gives SIDE's task NUMBER, to what the task is
        expected to show: at once, before the write, so that they stay expected however the run
        ends (it fails, or its worker is killed before it saves anything: RunState.close).
        Returns what was expected before (withdraw_ahead)."""
        before = self._held_expectations(side, number)
        if values:
            self._hold_expectations(side, number, with_sent(before, values))
        return before

    def withdraw_ahead(self, side: str, number: int, before: dict[str, Any]) -> None:
        """The write expected ahead was surely not applied: SIDE's task NUMBER is expected to
        show what it was BEFORE, again, at once."""
        self._hold_expectations(side, number, before)

    def _held_expectations(self, side: str, number: int) -> dict[str, Any]:
        """What Redis holds as expected of SIDE's task NUMBER now."""
        return LinkState.queued_expectations(self, side, number)

    def _hold_expectations(self, side: str, number: int, values: dict[str, Any]) -> None:
        LinkState.save_queued_expectations(self, side, number, values)

    def comment_fingerprints(self, side: str, task: int) -> dict[int, str]:
        raw = self.redis.hgetall(comment_prints_key(self.link, side, task))
        return {int(k): _text(v) for k, v in raw.items()}

    def save_comment_fingerprint(self, side: str, task: int, comment: int, fingerprint: str) -> None:
        self.redis.hset(comment_prints_key(self.link, side, task), str(comment), fingerprint)

    def comment_versions(self, side: str, comment: int) -> list[dict[str, Any]]:
        """SIDE's comment's texts as mirrored, oldest first: {"text", "at"} each."""
        raw = self.redis.hget(self.key("cversions", self.link), f"{side}:{comment}")
        return json.loads(raw) if raw else []

    def save_comment_versions(self, side: str, comment: int, versions: list[dict[str, Any]]) -> None:
        self.redis.hset(self.key("cversions", self.link), f"{side}:{comment}", json.dumps(versions))

    # --- severance ----------------------------------------------------------------------
    def sever(self, side: str, reason: str, at: float) -> bool:
        """Mark SIDE severed; True when it was not severed before."""
        return bool(
            self.redis.hsetnx(
                severed_key(self.link), side, json.dumps({"reason": reason, "at": at})
            )
        )

    def severed(self) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(severed_key(self.link))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def noted_cut(self, side: str, number: int) -> None:
        """SIDE's task NUMBER has a note saying the other side is cut off: it is told of the
        resume too."""
        self.redis.sadd(self.key("cut-noted", self.link), f"{side}:{number}")

    def take_noted_cut(self) -> list[tuple[str, int]]:
        """Remove and return the tasks told of the cut (atomically)."""
        key = self.key("cut-noted", self.link)
        pipe = self.redis.pipeline(transaction=True)
        pipe.smembers(key)
        pipe.delete(key)
        raw, _ = pipe.execute()
        return sorted((side, int(number)) for side, number in (_text(item).split(":") for item in raw))

    def restore(self, side: str) -> None:
        self.redis.hdel(severed_key(self.link), side)

    def park(self, event: dict[str, Any]) -> None:
        self.redis.rpush(parked_key(self.link), json.dumps(event, sort_keys=True))

    def take_parked(self) -> list[dict[str, Any]]:
        """Remove and return every parked event, oldest first (atomically)."""
        key = parked_key(self.link)
        pipe = self.redis.pipeline(transaction=True)
        pipe.lrange(key, 0, -1)
        pipe.delete(key)
        raw, _ = pipe.execute()
        return [json.loads(item) for item in raw]

    def parked_count(self) -> int:
        return int(self.redis.llen(parked_key(self.link)))

    # --- dead letters and progress ------------------------------------------------------
    def dead_letter(self, event: dict[str, Any], reason: str, at: float, kind: str = "permanent") -> str:
        """Keep EVENT with REASON and block its task behind it; returns the letter's id."""
        return DeadLetters(self.redis, self.link).add(event, reason, at, kind)

    def dead_letters(self) -> list[dict[str, Any]]:
        return [{**letter["event"], "reason": letter["reason"], "at": letter["at"]}
                for letter in DeadLetters(self.redis, self.link).letters()]

    def dead_letter_count(self) -> int:
        return DeadLetters(self.redis, self.link).count()

    # --- tasks older than the link: mirrored or paired by a decision only ----------------
    def begin(self, sides: Iterable[str], at: float) -> None:
        """Record AT as the time the deployment began serving SIDES, where none is recorded."""
        for side in sides:
            self.redis.hsetnx(self.key("since", self.link), side, repr(at))

    def since(self, side: str) -> float | None:
        value = self.redis.hget(self.key("since", self.link), side)
        return float(value) if value is not None else None

    def await_decision(self, side: str, number: int, details: Mapping[str, Any]) -> None:
        """SIDE's task NUMBER is older than the link and unpaired: it waits for a person."""
        self.redis.hset(self.key("awaiting", self.link), f"{side}:{number}", json.dumps(dict(details), sort_keys=True))

    def awaiting(self) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(self.key("awaiting", self.link))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def decide_mirror(self, side: str, number: int, by: str, at: float) -> None:
        """A person (BY) decided that SIDE's task NUMBER, older than the link, gets a mirror."""
        pipe = self.redis.pipeline(transaction=True)
        pipe.hset(self.key("decided", self.link), f"{side}:{number}", json.dumps({"mirror": True, "by": by, "at": at}))
        pipe.hdel(self.key("awaiting", self.link), f"{side}:{number}")
        pipe.execute()

    def decided_mirror(self, side: str, number: int) -> bool:
        return bool(self.redis.hexists(self.key("decided", self.link), f"{side}:{number}"))

    def decided_pair(self, sides_numbers: Iterable[tuple[str, int]]) -> None:
        """The tasks were paired by a decision: none waits any more."""
        fields = [f"{side}:{number}" for side, number in sides_numbers]
        if fields:
            self.redis.hdel(self.key("awaiting", self.link), *fields)

    # --- status moves the other side does not allow --------------------------------------
    def hold_status(self, side: str, number: int, details: Mapping[str, Any]) -> None:
        self.redis.hset(self.key("held", self.link), f"{side}:{number}", json.dumps(dict(details), sort_keys=True))

    def release_status(self, tasks: Iterable[tuple[str, int]]) -> None:
        """The tasks' sides agree on the status again."""
        fields = [f"{side}:{number}" for side, number in tasks]
        if fields:
            self.redis.hdel(self.key("held", self.link), *fields)

    def held_statuses(self) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(self.key("held", self.link))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    # --- paired tasks their side removed -------------------------------------------------
    def mark_removed(self, side: str, number: int, details: Mapping[str, Any]) -> bool:
        """SIDE's paired task NUMBER was removed there; True when it was not marked before."""
        return bool(self.redis.hsetnx(self.key("removed", self.link), f"{side}:{number}",
                                      json.dumps(dict(details), sort_keys=True)))

    def removed(self, side: str, number: int) -> bool:
        return bool(self.redis.hexists(self.key("removed", self.link), f"{side}:{number}"))

    def removed_among(self, tasks: Iterable[tuple[str, int]]) -> set[tuple[str, int]]:
        """Which of TASKS (side, number) are marked removed: one read for a run's pair."""
        tasks = list(tasks)
        marks = self.redis.hmget(self.key("removed", self.link), [f"{side}:{number}" for side, number in tasks])
        return {task for task, mark in zip(tasks, marks) if mark is not None}

    def unmark_removed(self, side: str, number: int) -> None:
        self.redis.hdel(self.key("removed", self.link), f"{side}:{number}")

    def removed_tasks(self) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(self.key("removed", self.link))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    # --- the record task, where the journal's heads are posted (workers.anchors) ----------
    # --- what each side's people decide on their record task (workers.governance) ------------
    def pause(self, side: str, info: Mapping[str, Any]) -> bool:
        """Hold what SIDE sends; True when it was not held before."""
        return bool(self.redis.hsetnx(self.key("paused", self.link), side, json.dumps(dict(info))))

    def unpause(self, side: str) -> bool:
        """Let SIDE send again; True when it was held."""
        return bool(self.redis.hdel(self.key("paused", self.link), side))

    def paused(self) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(self.key("paused", self.link))
        return {_text(k): json.loads(v) for k, v in raw.items()}

    def governed(self, side: str) -> set[int]:
        """The comments of SIDE's record task already read as commands (or as none)."""
        return {int(item) for item in self.redis.smembers(self.key("governed", self.link, side))}

    def mark_governed(self, side: str, comment: int) -> None:
        self.redis.sadd(self.key("governed", self.link, side), comment)

    def hold_note(self, side: str, number: int, note: Mapping[str, Any]) -> None:
        """NOTE (its text and occasion) was sent to SIDE's task NUMBER and its answer lost: kept
        until a run of the task's pair settles it (workers.sync.notices.settle_notes)."""
        held = self.unsettled_notes([(side, number)]).get((side, number), [])
        if dict(note) not in held:
            self.redis.hset(self.key("unsettled-notes", self.link), f"{side}:{number}",
                            json.dumps([*held, dict(note)], sort_keys=True))

    def unsettled_notes(self, places: list[tuple[str, int]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
        """The notes held (hold_note) on each of PLACES, (side, task) pairs, in one read."""
        values = self.redis.hmget(self.key("unsettled-notes", self.link), [f"{side}:{number}" for side, number in places])
        return {place: json.loads(value) for place, value in zip(places, values) if value}

    def settle_note(self, side: str, number: int, note: Mapping[str, Any]) -> None:
        held = [each for each in self.unsettled_notes([(side, number)]).get((side, number), []) if each != dict(note)]
        if held:
            self.redis.hset(self.key("unsettled-notes", self.link), f"{side}:{number}", json.dumps(held, sort_keys=True))
        else:
            self.redis.hdel(self.key("unsettled-notes", self.link), f"{side}:{number}")

    def hold_crossings(self, side: str, number: int, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """ENTRIES, the journal entries (by key) of a write about to be sent to SIDE's task NUMBER:
        kept until its answer records them (release_crossings), or, the answer lost, until a run
        of the pair finds what it wrote there (workers.sync.writer.TaskWriter.find_landed)."""
        if entries:
            key = self.key("crossing", self.link, side, str(number))
            pipe = self.redis.pipeline(transaction=False)
            pipe.hset(key, mapping={each: json.dumps(entry, sort_keys=True) for each, entry in entries.items()})
            pipe.expire(key, CROSSING_HOLD_S)
            pipe.execute()

    def held_crossings(self, side: str, number: int) -> dict[str, dict[str, Any]]:
        raw = self.redis.hgetall(self.key("crossing", self.link, side, str(number)))
        return {_text(each): json.loads(entry) for each, entry in raw.items()}

    def release_crossings(self, side: str, number: int, keys: Iterable[str]) -> None:
        keys = list(keys)
        if keys:
            self.redis.hdel(self.key("crossing", self.link, side, str(number)), *keys)

    def record_task(self, side: str) -> int | None:
        value = self.redis.hget(self.key("record", self.link), side)
        return int(value) if value is not None else None

    def keep_record_task(self, side: str, number: int) -> None:
        self.redis.hset(self.key("record", self.link), side, number)

    def mark_synced(self, at: float, into: redis.client.Pipeline | None = None) -> None:
        """Record the link's last finished run (INTO: as part of that transaction)."""
        (into if into is not None else self.redis).hset(LAST_SYNC_KEY, self.link, at)

    def last_sync(self) -> float | None:
        value = self.redis.hget(LAST_SYNC_KEY, self.link)
        return float(value) if value is not None else None


@dataclass
class RunState(LinkState):
    """The state as one sync run sees it: the run holds its task pair's lock, so the pair's
    snapshots and queued expectations stay as it read or wrote them, and are read from Redis
    once (or given by the batch that began the run: seed). The registry is read afresh, but for
    the run's own pair once known: other runs pair other tasks (a parent, say) meanwhile.

    What the run agrees on (snapshots, queued expectations) is written when the run ends, in the
    transaction that releases its lock (close): nobody reads it before then, as only a run
    holding the pair's lock does. For one run only; everything else uses LinkState."""

    _read: dict[tuple[str, str], Any] = field(default_factory=dict, init=False, repr=False)
    _pending: dict[tuple[str, int], bool] = field(default_factory=dict, init=False, repr=False)
    _unsaved: dict[tuple[str, str], Any] = field(default_factory=dict, init=False, repr=False)
    # Expectations written ahead of this run's writes (expect_ahead), by key: what each held
    # before, put back when the run finishes without saving its own (close).
    _ahead: dict[tuple[str, str], Any] = field(default_factory=dict, init=False, repr=False)
    # What Redis holds now for each task this run expected ahead of its writes, by (side, number).
    _held: dict[tuple[str, int], dict[str, Any]] = field(default_factory=dict, init=False, repr=False)

    def _hget(self, key: str, field_: str) -> Any:
        if (key, field_) in self._read:
            return self._read[(key, field_)]
        value = super()._hget(key, field_)
        if key in (self.key("snap", self.link), self.key("queued", self.link)):
            self._read[(key, field_)] = value
        return value

    def forget(self) -> None:
        """Drop what was read: call it once the run holds its lock (reads before may be stale)."""
        self._read.clear()
        self._pending.clear()

    def seed(self, side: str, number: int, other_side: str, counterpart: int | None, *, mine: Any, theirs: Any,
             queued: Any, expected: Any, pending: bool) -> None:
        """What a batch read for the run of SIDE's task NUMBER as it took the lock: the pair,
        both snapshots, the counterpart's expectations (QUEUED) and the task's own (EXPECTED),
        and whether an event of the counterpart's own waits (values as stored, None where
        absent)."""
        self._read[(self.key("snap", self.link), f"{side}:{number}")] = mine
        self._read[(self.key("queued", self.link), f"{side}:{number}")] = expected
        if counterpart is not None:
            other = f"{other_side}:{counterpart}"
            self._read[(self.key("reg", self.link, "task"), f"{side}:{number}")] = str(counterpart)
            self._read[(self.key("snap", self.link), other)] = theirs
            self._read[(self.key("queued", self.link), other)] = queued
            self._pending[(other_side, counterpart)] = pending

    def has_pending(self, side: str, number: int) -> bool:
        if (side, number) in self._pending:
            return self._pending[(side, number)]
        return super().has_pending(side, number)

    def pair(self, kind: str, side: str, number: int, other_side: str, other: int) -> None:
        super().pair(kind, side, number, other_side, other)
        key = self.key("reg", self.link, kind)
        self._read.pop((key, f"{side}:{number}"), None)
        self._read.pop((key, f"{other_side}:{other}"), None)

    def save_snapshots(self, snapshots: dict[tuple[str, int], dict[str, Any]]) -> None:
        key = self.key("snap", self.link)
        for (s, n), value in snapshots.items():
            self._read[(key, f"{s}:{n}")] = self._unsaved[(key, f"{s}:{n}")] = json.dumps(value, sort_keys=True)

    def save_queued_expectations(self, side: str, number: int, values: dict[str, Any]) -> None:
        key = (self.key("queued", self.link), f"{side}:{number}")
        value = json.dumps(values, sort_keys=True) if values else None
        if value is None and key in self._read and self._read[key] is None and key not in self._unsaved:
            return  # none were, none are: nothing to write
        self._read[key] = self._unsaved[key] = value

    def _held_expectations(self, side: str, number: int) -> dict[str, Any]:
        # The run holds the pair's lock: Redis holds what the run read, or last held there itself.
        if (side, number) in self._held:
            return self._held[(side, number)]
        return super()._held_expectations(side, number)

    def _hold_expectations(self, side: str, number: int, values: dict[str, Any]) -> None:
        """In Redis at once, as LinkState's; the run's own reads keep what they saw before, and
        a finished run's close replaces it (with what it agreed on, or what it was)."""
        key = (self.key("queued", self.link), f"{side}:{number}")
        self._ahead.setdefault(key, self._hget(*key))
        super()._hold_expectations(side, number, values)
        self._held[(side, number)] = dict(values)

    def close(self, release: Callable[[redis.client.Pipeline], None], synced: bool,
              stale: Iterable[str] = ()) -> None:
        """End the run in one transaction: when SYNCED (it finished), write what it agreed on and
        mark the link synced; in any case RELEASE its lock (a callback adding that to the
        transaction) and delete the STALE keys (reads other runs kept of the tasks this run
        wrote to). A run that failed part-way leaves nothing else written: its retry starts over."""
        pipe = self.redis.pipeline(transaction=True)
        for key in stale:
            pipe.delete(key)
        if synced:
            for written_ahead, before in self._ahead.items():
                self._unsaved.setdefault(written_ahead, before)
            for (key, field_), value in self._unsaved.items():
                if value is None:
                    pipe.hdel(key, field_)
                else:
                    pipe.hset(key, field_, value)
            self.mark_synced(time.time(), into=pipe)
        release(pipe)
        self._unsaved.clear()
        self._ahead.clear()
        self._held.clear()
        pipe.execute()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
