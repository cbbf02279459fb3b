"""The run's writes to the tasks of its pair: create the counterpart once, update its fields, move
a status; and what each write's outcome leaves for the run to agree on.

Why a module of its own: Planfix answers a write in three ways that mean different things for
what both sides agree on. Applied (HTTP 200) is agreed as written; partially applied names the
fields it refused; queued (HTTP 202: the task was locked) is not a change both sides agree on
yet. TaskWriter keeps that ledger (the source keys whose write is unconfirmed, the target values
still expected, whether the counterpart must be read back) beside the writes that fill it, so
the orchestration only asks for a write and the agreement only reads the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from crosslink.journal.chain import content_hash
from planfix.client import Applied, PartiallyApplied, Queued
from planfix.errors import TransientError
from workers.field_diff import changed_fields, landed_unagreed, with_queued, without_entries
from workers.idempotency import WriteOnce
from workers.state import mirror_marker, mirror_source_id
from workers.sync.context import RunContext
from workers.sync.gateway import Gateway, SideFailure
from workers.sync.views import expected_view

log = logging.getLogger("crosslink.sync")

# The canonical keys that carry people: an assignee change is an entry of its own in the journal.
ASSIGNEE_KEYS = frozenset({"assignees"})


class TaskWriter:
    """Writes to the task pair of the run's task (CTX), through GATEWAY, creations once (WRITES)."""

    def __init__(self, ctx: RunContext, *, gateway: Gateway, writes: WriteOnce):
        self.ctx, self.gateway, self.writes = ctx, gateway, writes
        # Source keys whose carried value Planfix queued (202), and the target values expected.
        self.unconfirmed: set[str] = set()
        self.expected: dict[str, Any] = {}
        # A write whose outcome is not simply "applied as sent" (202, per-field failures): the
        # counterpart is read back before its snapshot is saved.
        self.read_back = False

    def create_counterpart(self, body: dict[str, Any]) -> tuple[int, bool]:
        """The new counterpart, and whether this run made it (else an earlier run did)."""
        link, side, other, number = self.ctx.link, self.ctx.side, self.ctx.other, self.ctx.number
        source_id = mirror_source_id(link.name, side, "task", number)
        marked = {**body, "sourceObjectId": source_id,
                  "sourceDataVersion": mirror_marker(link.name, side, number)}

        def find_existing() -> int | None:
            create = link.sides[other].create
            filters = [{"type": 5, "operator": "equal", "value": create.project}] if create.project else []
            # Only after a lost answer: a scan of the mirror project, paid rarely.
            for task in self.gateway.call(other, "list_tasks", filters=filters, fields="id,sourceObjectId"):
                if task.get("sourceObjectId") == source_id:
                    return int(task["id"])
            return None

        made = []

        def create() -> int:
            made.append(self.gateway.call(other, "create_task", marked))
            return made[0]

        key = f"{link.name}:task:{side}:{number}"
        counterpart = self.writes.run(key, write=create, find_existing=find_existing)
        # Recorded before it is paired: a run killed in between leaves the pair to its retry,
        # whose create finds the mirror done and records it again, once by the key. Paired
        # first, the retry found a counterpart, created nothing and recorded nothing.
        self.ctx.crossed("task created", source={"task": number, "version": self.ctx.version},
                         target={"task": counterpart}, content=body, key=key)
        self._paired(counterpart)
        return counterpart, bool(made)

    def _paired(self, counterpart: int) -> None:
        ctx = self.ctx
        ctx.state.pair("task", ctx.side, ctx.number, ctx.other, counterpart)
        ctx.state.mark_mirror("task", ctx.other, counterpart)
        # Children on either side may have been waiting for this pair to exist.
        for side, number in ((ctx.side, ctx.number), (ctx.other, counterpart)):
            ctx.report.follow_up.extend(
                (side, child) for child in ctx.state.take_waiting_children(side, number))

    def update_fields(self, counterpart: int, body: dict[str, Any], fields: Iterable[str],
                      target_now: Mapping[str, Any] | None) -> dict[str, Any]:
        """Write BODY (the source's FIELDS) to the counterpart, which showed TARGET_NOW; the
        target values it gave, when Planfix applied it (else none: queued, or refused)."""
        values = expected_view(target_now, body)
        outcome = self.write_update(self.ctx.other, counterpart, body, values)
        if isinstance(outcome, Queued):
            self.unconfirmed.update(fields)
            self.expected = with_queued(self.expected, expected_view(target_now, body))
        elif isinstance(outcome, Applied):
            written = expected_view(target_now, body)
            self.applied(written)
            return written
        return {}

    def find_landed(self, side: str, number: int, expected: Mapping[str, Any], now: Mapping[str, Any] | None,
                    agreed: Mapping[str, Any] | None) -> None:
        """Record the writes of ours that SIDE's task NUMBER shows (NOW) though no run agreed on
        them yet (EXPECTED, AGREED): a run before this one sent them and lost the answer, or was
        killed, so it recorded nothing. Whichever run of the pair reads the task first records
        them, as the answer would have (their entries were held as the write was sent), once.
        (Only the writer's next run did: the other side's run, taking the value for an echo of
        ours, agreed on it first, and the crossing went unrecorded.)"""
        if now is None:
            return
        landed = landed_unagreed(expected, now, agreed)
        if not landed:
            return
        found = []
        for each, entry in self.ctx.state.held_crossings(side, number).items():
            name = entry["field"]
            if name in landed and not changed_fields({name: entry["value"]}, {name: landed[name]}):
                self._record(entry, "found applied")
                found.append(each)
        self.ctx.state.release_crossings(side, number, found)

    def _entries(self, side: str, number: int, values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
        """The journal entries, by key, of a write of VALUES (canonical, by key) to SIDE's task
        NUMBER: a status (the run's counterpart's, or the run's own task's moved as the other
        side's change calls for), an assignee change, any other field; each to be recorded with
        how Planfix took it."""
        ctx = self.ctx
        origin = ctx.side if side == ctx.other else ctx.other
        entries = {}
        for name, value in values.items():
            kind = "status" if name == "status" else "assignee" if name in ASSIGNEE_KEYS else "field change"
            key = f"{ctx.side}:{ctx.number}:{ctx.version}:{side}:{number}:{name}:{content_hash(value)}"
            entries[f"{kind}:{key}"] = {
                "kind": kind, "side": origin, "key": key, "field": name, "value": value,
                "source": {"task": ctx.number, "version": ctx.version, "field": name},
                "target": {"task": number}, "content": {name: value}}
        return entries

    def _record(self, entry: Mapping[str, Any], receipt: str) -> None:
        """Record ENTRY (_entries) as taken by Planfix as RECEIPT says."""
        self.ctx.crossed(entry["kind"], side=entry["side"], source=entry["source"],
                         target={**entry["target"], "outcome": receipt}, content=entry["content"], key=entry["key"])

    def _answered(self, side: str, number: int, values: Mapping[str, Any], outcome: Any) -> None:
        """Record each of VALUES that Planfix took (OUTCOME) on SIDE's task NUMBER, saying how,
        and let go of the entries held for the write (hold_crossings)."""
        taken = _taken(values, outcome)
        held = self._entries(side, number, values)
        for entry in held.values():
            if entry["field"] in taken:
                self._record(entry, _receipt(outcome))
        self.ctx.state.release_crossings(side, number, held)

    def write_update(self, side: str, number: int, body: dict[str, Any], values: Mapping[str, Any]) -> Any:
        outcome = self._update(side, number, body, values)
        self._answered(side, number, values, outcome)
        if not isinstance(outcome, Applied):
            self.read_back = True
        if isinstance(outcome, PartiallyApplied):
            for failure in outcome.failures:
                self.ctx.report.parked.append(f"{side} #{number} field {failure.field}: {failure.error}")
        elif isinstance(outcome, Queued):
            self.ctx.report.queued.append(f"{side} #{number} fields " + ",".join(sorted(body)))
            log.info("update queued by Planfix (202): read back later",
                     extra={"link": self.ctx.link.name, "side": side, "task": number})
        return outcome

    def move_status(self, side: str, number: int, status: int) -> bool:
        """True when the move is seen applied. A queued (202) move is not: the next step of a
        path depends on it, and the read-back run plans the rest from what Planfix then shows."""
        outcome = self._update(side, number, {"status": {"id": status}}, {"status": status})
        self._answered(side, number, {"status": status}, outcome)
        if not isinstance(outcome, Applied):
            self.read_back = True
        if isinstance(outcome, PartiallyApplied):
            reasons = [f.error for f in outcome.failures if f.field == "status"]
            if reasons:
                self.ctx.report.parked.append(f"{side} #{number} status {status}: {reasons[0]}")
                return False
        if isinstance(outcome, Queued):
            self.ctx.report.queued.append(f"{side} #{number} status {status}")
            if side == self.ctx.other:
                self.unconfirmed.add("status")
                self.expected = with_queued(self.expected, {"status": status})
            return False
        if side == self.ctx.other:
            self.applied({"status": status})
        return isinstance(outcome, (Applied, PartiallyApplied))

    def applied(self, values: Mapping[str, Any]) -> None:
        """A write of VALUES to the counterpart was applied, not queued: the task was not locked,
        so what Planfix had queued for those keys before had landed, and is expected no more."""
        self.expected = without_entries(self.expected, values)

    def _update(self, side: str, number: int, body: dict[str, Any], values: Mapping[str, Any]) -> Any:
        """Update SIDE's task NUMBER with BODY. The canonical VALUES it gives the task are
        expected before it is sent (LinkState.expect_ahead): whether the run then fails, loses
        the answer or its worker is killed before it agrees on anything, Planfix may have applied
        it, and the next run of either side must see an echo there, not a person's change. (A
        killed run's write, taken for a client's change, rolled the partner's newer edit back on
        both sides in the quick chaos run.) A run that finishes replaces them with what it agreed
        on; a write surely not applied (refused before it was sent: our limiter, Planfix's rate or
        quota; or for good) is withdrawn at once, as it would only cost the next runs reads.
        Its journal entries are held the same way, until its answer or a run that finds it
        landed records them (find_landed)."""
        before = self.ctx.state.expect_ahead(side, number, values)
        entries = self._entries(side, number, values)
        self.ctx.state.hold_crossings(side, number, entries)
        try:
            return self.gateway.call(side, "update_task", number, body)
        except SideFailure as failure:
            if not isinstance(failure.error, TransientError):
                self.ctx.state.withdraw_ahead(side, number, before)
                self.ctx.state.release_crossings(side, number, entries)
            raise


def _taken(values: Mapping[str, Any], outcome: Any) -> dict[str, Any]:
    """VALUES (canonical, by key) less those of the fields Planfix refused in OUTCOME."""
    refused = {failure.field for failure in outcome.failures} if isinstance(outcome, PartiallyApplied) else set()
    return {key: value for key, value in values.items()
            if key not in refused and key.removeprefix("cf:") not in refused}


def _receipt(outcome: Any) -> str:
    """How Planfix took a write, as its journal entry says: applied, queued (202: it applies it
    once the task is free), or applied but for some fields."""
    if isinstance(outcome, Queued):
        return "queued"
    return "partly applied" if isinstance(outcome, PartiallyApplied) else "applied"
