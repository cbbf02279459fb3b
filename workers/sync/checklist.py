"""Checklist mirroring: carry the run's side's checklist items to the counterpart task, item by
item, as the pure decisions of workers.sync.attachments say.

Why a module of its own: it is the one step of a run with state of its own in Redis (the values
each item last agreed on with its mirror, kept as each write returns rather than as the run
closes), and its requests go through the run's gateway, passed in, never through the run.

Redis keys added here (beside workers/state.py's):
  crosslink:chk:{link}:{side}:{task}   item id -> JSON {"name","isDone"} last agreed with the other side
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any

from crosslink.journal.chain import content_hash
from planfix.client import PartiallyApplied, Queued
from planfix.errors import InvalidRequest, NotFound
from workers.idempotency import WriteOnce
from workers.state import PREFIX
from workers.sync.attachments import (
    CHECKLIST,
    adoptable,
    agreed_after_write,
    agrees,
    flows,
    item_changes,
    item_view,
    parent_of,
    parents_first,
    queued_on_mirror,
    queued_on_source,
    seen_echo,
)
from workers.sync.context import RunContext
from workers.sync.gateway import Gateway, SideFailure

log = logging.getLogger("crosslink.sync")


# ------------------------------------------------------------------------------------------
# The agreed states in Redis

def _agreed_key(link: str, side: str, task: int) -> str:
    return f"{PREFIX}:chk:{link}:{side}:{task}"


def load_agreed(ctx: RunContext, side: str, task: int) -> dict[int, dict[str, Any]]:
    raw = ctx.state.redis.hgetall(_agreed_key(ctx.link.name, side, task))
    return {int(key): json.loads(value) for key, value in raw.items()}


def save_agreed(ctx: RunContext, side: str, task: int, item_id: int, view: Mapping[str, Any]) -> None:
    ctx.state.redis.hset(_agreed_key(ctx.link.name, side, task), str(item_id),
                         json.dumps(dict(view), sort_keys=True))


# ------------------------------------------------------------------------------------------
# Checklists

def sync_checklist(ctx: RunContext, counterpart: int | None, *, gateway: Gateway, writes: WriteOnce) -> int:
    """Carry the run's side's checklist of task ctx.number to COUNTERPART; returns items written.

    GATEWAY makes the requests to either side, WRITES makes each item's creation happen once.
    Does nothing, and calls nothing, when the link does not map checklists in this direction.
    """
    link, side, other = ctx.link, ctx.side, ctx.other
    if counterpart is None or not flows(link.fields.checklist.direction, side, other):
        return 0
    items = gateway.call(side, "list_checklist", ctx.number)
    agreed = load_agreed(ctx, side, ctx.number)
    _take_landed_echoes(ctx, items, agreed)
    pending = [item for item in items if not agrees(agreed.get(int(item["id"])), item_view(item))]
    if not pending:
        return 0
    agreed_there = load_agreed(ctx, other, counterpart)
    target_items: list[Mapping[str, Any]] | None = None
    written_count = 0
    for item in parents_first(pending):
        item_id, view = int(item["id"]), item_view(item)
        mirror = ctx.state.counterpart(CHECKLIST, side, item_id)
        if mirror is None:
            if target_items is None:
                target_items = gateway.call(other, "list_checklist", counterpart)
            made = _mirror_item(ctx, counterpart, item, view, target_items, gateway=gateway, writes=writes)
            if made is None:
                continue
            mirror, written = made
        else:
            written = item_changes(view, agreed.get(item_id))
            if written:
                # Expected before it is sent, as Planfix's 202 leaves it: the source item
                # unconfirmed (its next run writes it again, even if a person put back the agreed
                # values meanwhile) and the written view an echo on the mirror (its side, seeing
                # it land, has no change of its own). Should the answer be lost once Planfix
                # applied it (a timeout, a 500 after commit, a killed worker), the mirror's value
                # is never carried back over a change made here since (the quick chaos run saw an
                # untick rolled back on both sides so, and a tick rolled back by a late 202).
                agreed_there[mirror] = queued_on_mirror(agreed_there.get(mirror), written, view)
                save_agreed(ctx, side, ctx.number, item_id, queued_on_source(agreed.get(item_id), view))
                save_agreed(ctx, other, counterpart, mirror, agreed_there[mirror])
            applied = _update_item(ctx, counterpart, mirror, written, gateway=gateway) if written else True
            if applied is None:
                continue  # queued by Planfix (202): not agreed until seen, as expected above
            if not applied:
                written = {}
        if written:
            written_count += 1
            ctx.crossed("checklist item", source={"task": ctx.number, "item": item_id, "version": ctx.version},
                        target={"task": counterpart, "item": mirror}, content=written,
                        key=f"{side}:{item_id}:{ctx.version}:{content_hash(written)}")
        save_agreed(ctx, side, ctx.number, item_id, view)
        agreed_there[mirror] = agreed_after_write(agreed_there.get(mirror), written, view)
        save_agreed(ctx, other, counterpart, mirror, agreed_there[mirror])
    if written_count:
        log.info("checklist: %d item(s) carried", written_count,
                 extra={"link": link.name, "side": side, "task": ctx.number})
    return written_count


def _take_landed_echoes(ctx: RunContext, items: list[Mapping[str, Any]], agreed: dict[int, dict[str, Any]]) -> None:
    """Items of the run's side that show a queued write of ours landed: that is now their agreed
    state (in AGREED, and saved)."""
    for item in items:
        landed = seen_echo(agreed.get(int(item["id"])) or {}, item_view(item))
        if landed is not None:  # our queued write landed here: now the agreed state
            agreed[int(item["id"])] = landed
            save_agreed(ctx, ctx.side, ctx.number, int(item["id"]), landed)


def _mirror_item(ctx: RunContext, counterpart: int, item: Mapping[str, Any], view: dict[str, Any],
                 target_items: list[Mapping[str, Any]], *, gateway: Gateway,
                 writes: WriteOnce) -> tuple[int, dict[str, Any]] | None:
    """Create (once) or adopt the counterpart of ITEM; returns its id and the values written, or
    None when ITEM is itself the mirror the other side's run began to make."""
    link, side, other = ctx.link, ctx.side, ctx.other
    item_id = int(item["id"])

    def is_paired(target_id: int) -> bool:
        return ctx.state.counterpart(CHECKLIST, other, target_id) is not None

    adopted = adoptable(view["name"], target_items, is_paired)
    if adopted is not None and writes.started(f"{link.name}:checklist:{other}:{adopted}"):
        # The item of that name over there began a mirror here, and its run did not finish
        # (its answer lost, or its worker killed): ITEM is most likely that mirror. Adopting
        # from this side would write ITEM's values over the original's, undoing whatever people
        # did to the original since (the chaos oracle saw a tick rolled back so). The
        # original's own run pairs them and carries its values.
        return None
    body: dict[str, Any] = dict(view)
    parent = parent_of(item)
    mapped_parent = ctx.state.counterpart(CHECKLIST, side, parent) if parent else None
    if mapped_parent:
        body["parent"] = {"id": mapped_parent}

    def create() -> int:
        return adopted if adopted is not None else gateway.call(other, "create_checklist_item", counterpart, body)

    def find_existing() -> int | None:
        # After a lost answer: paired meanwhile, or there under the same name and unclaimed.
        again = ctx.state.counterpart(CHECKLIST, side, item_id)
        if again is not None:
            return again
        return adoptable(view["name"], gateway.call(other, "list_checklist", counterpart), is_paired)

    key = f"{link.name}:checklist:{side}:{item_id}"
    begun = writes.started(key)
    mirror = writes.run(key, write=create, find_existing=find_existing)
    ctx.state.pair(CHECKLIST, side, item_id, other, mirror)
    if adopted is None or mirror != adopted:
        ctx.state.mark_mirror(CHECKLIST, other, mirror)
        # Agreed at once, so that a run of the mirror's side, should this one die before the
        # end, does not take the new mirror for a change of its own and carry it back.
        save_agreed(ctx, other, counterpart, mirror, view)
        return mirror, dict(view)
    # Adopted: make its done state agree with the source's, and nothing else.
    there = next((entry for entry in target_items if int(entry["id"]) == mirror), None)
    if begun and there is not None:
        # An earlier run of this item began its mirror (its answer lost, or its worker killed
        # before it paired them): the item of its name found unpaired is that mirror, made as
        # it shows now. That creation crossed; the journal holds it once (the caller's key).
        made = item_view(there)
        ctx.crossed("checklist item", source={"task": ctx.number, "item": item_id, "version": ctx.version},
                    target={"task": counterpart, "item": mirror}, content=made,
                    key=f"{side}:{item_id}:{ctx.version}:{content_hash(made)}")
    written = item_changes(view, item_view(there) if there else None)
    if written and not _update_item(ctx, counterpart, mirror, written, gateway=gateway):
        written = {}
    return mirror, written


def _update_item(ctx: RunContext, counterpart: int, mirror: int, body: dict[str, Any], *,
                 gateway: Gateway) -> bool | None:
    """Write BODY to the mirror item; False (noted in the report) when Planfix refused it, None
    when Planfix queued it (202, noted in the report: the job reads the task back later)."""
    other = ctx.other
    try:
        outcome = gateway.call(other, "update_checklist_item", counterpart, mirror, body)
    except SideFailure as failure:
        if not isinstance(failure.error, (InvalidRequest, NotFound)):
            raise
        # The mirror item is gone or refuses the change: say so, and do not retry it every run.
        ctx.report.parked.append(f"{other} #{counterpart} checklist item {mirror}: {failure.error}")
        return False
    if isinstance(outcome, Queued):
        ctx.report.queued.append(f"{other} #{counterpart} checklist item {mirror}")
        return None
    if isinstance(outcome, PartiallyApplied):
        for failure in outcome.failures:
            ctx.report.parked.append(f"{other} #{counterpart} checklist item {mirror} "
                                     f"{failure.field}: {failure.error}")
    return True
