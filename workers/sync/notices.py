"""The notes a sync run leaves on tasks for people: a counterpart taken out of the link, an edit
that lost a conflict, a status move the other side's process holds back, a delegation. Each is
posted once per occasion, however often the run is retried.

Why a module of its own: a note is the one way the sync speaks to people, so when and how it
speaks must be the same wherever a run decides to; the texts themselves are workers.notes' (pure),
and workers.tasks posts notes of its own (a side cut off) through post_note.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from crosslink.journal.chain import GENESIS
from crosslink.queue.names import change_stamp
from schemas.links import Link
from workers.idempotency import WriteOnce, maybe_applied
from workers.notes import head_text, note, rule_text
from workers.plan import SyncPlan
from workers.record import Recorder
from workers.state import mirror_source_id
from workers.status_map import equivalent
from workers.sync.context import RunContext
from workers.sync.gateway import Gateway
from workers.sync.views import quoted

log = logging.getLogger("crosslink.sync")


def post_note(call: Callable[..., Any], writes: WriteOnce, link: Link, side: str, number: int, text: str,
              occasion: str, recorder: Recorder | None) -> None:
    """Post the note TEXT on SIDE's task NUMBER once per OCCASION (a change of assignees, a status move
    held, a side cut off), however often retried; CALL(method, *args) calls SIDE's client.
    Written by the robot, it is never mirrored. It states the link's journal head (RECORDER) as
    it was when the note was written, and is itself a journal entry."""
    digest = hashlib.sha256(f"{occasion}\n{text}".encode()).hexdigest()[:16]
    # Marked like a mirror, so a write whose outcome was lost is found rather than repeated.
    source_id = mirror_source_id(link.name, side, "note", f"{number}:{digest}")
    if recorder is not None:
        text += "<br>" + head_text(link, side, recorder.head() or (0, GENESIS))

    def find_existing() -> int | None:
        for candidate in call("list_task_comments", number, fields="id,sourceObjectId", type_list="All"):
            if candidate.get("sourceObjectId") == source_id:
                return int(candidate["id"])
        return None

    key = f"{link.name}:note:{side}:{number}:{digest}"
    posted = writes.run(key, write=lambda: call("create_comment", number, {"description": text,
                                                                           "sourceObjectId": source_id}),
                        find_existing=find_existing)
    if recorder is not None:
        recorder.crossed("note", side, source={"task": number, "occasion": digest},
                         target={"task": number, "comment": posted}, content=text, key=key)


def leave_note(ctx: RunContext, side: str, number: int, text: str, occasion: str, *, gateway: Gateway,
               writes: WriteOnce) -> None:
    """post_note on SIDE's task NUMBER of the run's link, its requests made through GATEWAY. A
    note whose answer is lost is held until a run of the pair settles it (settle_notes): the run
    that retries this one need not call for it again (the quick chaos run lost a note's answer,
    and the retry, its edit no longer contested, posted none and recorded none)."""
    try:
        post_note(lambda method, *args, **kwargs: gateway.call(side, method, *args, **kwargs), writes,
                  ctx.link, side, number, text, occasion, ctx.recorder)
    except BaseException as exc:
        if maybe_applied(exc):
            ctx.state.hold_note(side, number, {"text": text, "occasion": occasion})
        raise


def settle_notes(ctx: RunContext, counterpart: int | None, *, gateway: Gateway, writes: WriteOnce) -> None:
    """The notes held on the run's task or its COUNTERPART (leave_note): each is found where its
    lost answer left it and recorded, or, never taken, posted now; once either way (its key)."""
    places = [(ctx.side, ctx.number)] + ([(ctx.other, counterpart)] if counterpart is not None else [])
    for (side, number), notes in ctx.state.unsettled_notes(places).items():
        for held in notes:
            leave_note(ctx, side, number, held["text"], held["occasion"], gateway=gateway, writes=writes)
            ctx.state.settle_note(side, number, held)


def tell_of_removal(ctx: RunContext, how: str, counterpart: int, source_raw: Mapping[str, Any] | None, *,
                    gateway: Gateway, writes: WriteOnce) -> None:
    """The other side's copy stays, with everything it holds: a note there says its
    counterpart is gone (a client trashed a shared task and the partner could not tell), and
    `crosslink status` counts it until the task is back."""
    stamp = change_stamp(source_raw) if source_raw is not None else "gone"
    leave_note(ctx, ctx.other, counterpart,
               note(ctx.link, ctx.other, "removed", other=ctx.side, number=ctx.number, how=how),
               f"removed:{ctx.side}:{ctx.number}:{how}:{stamp}", gateway=gateway, writes=writes)
    ctx.state.mark_removed(ctx.side, ctx.number, {"how": how, "counterpart": counterpart, "at": time.time()})
    log.info("task %s on its side: its counterpart stays, no longer followed", how,
             extra={"link": ctx.link.name, "side": ctx.side, "task": ctx.number})


def tell_of_lost_edits(ctx: RunContext, plan: SyncPlan, counterpart: int | None, *, gateway: Gateway,
                       writes: WriteOnce) -> None:
    """A person's edit on the counterpart that this run's write replaced (both sides changed
    the field; the source's wins by the link's rules) leaves a note there with the value that
    lost, once per edit: it no longer vanishes without a trace."""
    if counterpart is None:
        return
    # The winner's run writes over the loser's edit, or the loser's run, coming first, sees
    # its edit lose (it then agrees on its own value, so the winner's run sees no contest):
    # either way one note, on the loser's task.
    told = [(ctx.other, counterpart, entry, ctx.side) for entry in plan.overwritten]
    told += [(ctx.side, ctx.number, entry, ctx.other) for entry in plan.yielded]
    for side, number, (field_key, lost, owner), winner in told:
        shown = quoted(lost) if isinstance(lost, str) else lost
        leave_note(ctx, side, number, note(
            ctx.link, side, "lost_edit", field=field_key, value=json.dumps(shown, ensure_ascii=False),
            other=winner, rule=rule_text(ctx.link, side, owner)),
            f"lost:{side}:{field_key}:{json.dumps(lost, sort_keys=True, ensure_ascii=False)}",
            gateway=gateway, writes=writes)


def tell_of_held_status(ctx: RunContext, plan: SyncPlan, counterpart: int | None, source_raw: Mapping[str, Any],
                        source_now: Mapping[str, Any], target_status: int | None, *, moved: bool,
                        gateway: Gateway, writes: WriteOnce) -> None:
    """A status move the other side's process does not allow leaves the sides apart: a note
    on each task says so, once per move (a partner reopened a task the client treats as
    final: the client copy rightly stayed "Accepted", and nobody on either side was told),
    and `crosslink status` counts it until a move (MOVED: this run saw or made one) makes
    the sides agree again; a run that moved no status writes nothing here."""
    if counterpart is None:
        return
    side, other = ctx.side, ctx.other
    if plan.held_status is None:
        if moved and equivalent(ctx.link, side, source_now.get("status"), target_status):
            ctx.state.release_status(((side, ctx.number), (other, counterpart)))
        return
    moved_to, stays_at, why = plan.held_status
    # One note per move: the same move made again later (another stamp) is told again.
    occasion = f"held-status:{side}:{ctx.number}:{moved_to}:{stays_at}:{change_stamp(source_raw)}"
    leave_note(ctx, side, ctx.number, note(ctx.link, side, "held_status_source", other=other,
                                           moved_to=moved_to, stays_at=stays_at, why=why), occasion,
               gateway=gateway, writes=writes)
    leave_note(ctx, other, counterpart, note(ctx.link, other, "held_status_target", other=side,
                                             moved_to=moved_to, stays_at=stays_at, why=why), occasion,
               gateway=gateway, writes=writes)
    ctx.state.hold_status(side, ctx.number, {"moved_to": moved_to, "counterpart": counterpart,
                                             "stays_at": stays_at, "why": why, "at": time.time()})
