"""Whether a sync run follows its task at all, and to which counterpart: a task gone from Planfix,
a mirror found by its marker, a task out of the link's scope, one older than the link that waits
for a person's decision, a pair taken out of the link on either side.

Why a module of its own: each of these ends a run before anything is carried, and each leaves a
trace people rely on (a note on the copy, a task listed by `crosslink status` or `crosslink
awaiting`, the change stamp recorded so polls do not queue it again). Kept together, the reasons
a run stops read as one list, apart from what a followed task's run then does.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from crosslink.queue.names import record_synced_stamp
from planfix.errors import NotFound
from workers.canonical import in_scope, left_scope, task_fields
from workers.idempotency import WriteOnce
from workers.plan import created_epoch, older_than_link
from workers.state import parse_marker
from workers.sync.context import RunContext
from workers.sync.gateway import Gateway, SideFailure
from workers.sync.notices import tell_of_removal

log = logging.getLogger("crosslink.sync")


def read_source(ctx: RunContext, known: int | None, *, gateway: Gateway,
                writes: WriteOnce) -> Mapping[str, Any] | None:
    """The run's task as Planfix has it; None when it is gone (report.outcome "missing"), told
    once on its counterpart KNOWN, if it had one."""
    try:
        return gateway.call(ctx.side, "get_task", ctx.number, fields=task_fields(ctx.link, ctx.side))
    except SideFailure as failure:
        if isinstance(failure.error, NotFound):
            if known is not None and not ctx.state.removed(ctx.side, ctx.number):
                tell_of_removal(ctx, "deleted", known, None, gateway=gateway, writes=writes)
            ctx.report.outcome = "missing"
            return None
        raise


def counterpart_to_follow(ctx: RunContext, source_raw: Mapping[str, Any], *, gateway: Gateway,
                          writes: WriteOnce) -> tuple[int | None, bool]:
    """The counterpart of the run's task (None: not mirrored yet), and whether the run follows
    the task; when it does not, report.outcome says why."""
    side, other, number, state = ctx.side, ctx.other, ctx.number, ctx.state
    counterpart = state.counterpart("task", side, number)
    if counterpart is None:
        counterpart = adopt_marked(ctx, source_raw)
    if counterpart is None and not in_scope(ctx.link, side, source_raw):
        ctx.report.outcome = "out_of_scope"
        return None, False
    if counterpart is None and awaits_decision(ctx, source_raw):
        ctx.report.outcome = "awaiting_decision"
        return None, False
    if counterpart is not None:
        removed = state.removed_among([(side, number), (other, counterpart)])
        if (removed_here(ctx, source_raw, counterpart, (side, number) in removed, gateway=gateway, writes=writes)
                or (other, counterpart) in removed):
            # Removed on this side (told on the other), or the counterpart was, on its own: the
            # copy left stays as it is, and nothing more is carried into a task people dropped.
            ctx.report.counterpart, ctx.report.outcome = counterpart, "removed"
            return counterpart, False
    return counterpart, True


def adopt_marked(ctx: RunContext, source_raw: Mapping[str, Any]) -> int | None:
    """A task whose marker says it mirrors one of ours is paired again, never re-mirrored. Its
    creation crossed: recorded under the key its create records by (TaskWriter.create_counterpart),
    so once, whichever run pairs it. The quick chaos run lost a create's answer and the mirror's
    own run paired it first; the original's run then found a counterpart, and nothing recorded it.
    What its create carried is not known here: the entry's content is the marker it bears."""
    marker = parse_marker(source_raw.get("sourceDataVersion"))
    if marker and marker[0] == ctx.link.name and marker[1] == ctx.other:
        # This task is the mirror; its original is marker[2] on the other side.
        ctx.crossed("task created", side=ctx.other, source={"task": marker[2], "found": "by its marker"},
                    target={"task": ctx.number}, content=source_raw.get("sourceDataVersion"),
                    key=f"{ctx.link.name}:task:{ctx.other}:{marker[2]}")
        ctx.state.pair("task", ctx.side, ctx.number, ctx.other, marker[2])
        ctx.state.mark_mirror("task", ctx.side, ctx.number)
        return marker[2]
    return None


def awaits_decision(ctx: RunContext, source_raw: Mapping[str, Any]) -> bool:
    """Whether this unpaired task is older than the link and no one decided to mirror it:
    a copy may exist by hand on the other side (backfill found three "Weekly status call"
    tasks it could not tell apart; the poll's run mirrored each beside its hand copy). It
    waits, listed, for `crosslink pair` or `crosslink mirror`, and this stamp counts as
    looked at, so polls do not queue it again until it changes."""
    state, side, number = ctx.state, ctx.side, ctx.number
    since = state.since(side)
    if since is None:
        # The deployment's first run on this side: it began serving the side now (a task
        # made since, or up to CLOCK_SKEW_S before, is new).
        state.begin([side], time.time())
        since = state.since(side)
    created = created_epoch(source_raw)
    if not older_than_link(created, since) or state.decided_mirror(side, number):
        return False
    state.await_decision(side, number, {"name": source_raw.get("name") or "", "created": created, "at": time.time()})
    record_synced_stamp(state.redis, ctx.link.name, side, number, source_raw)
    log.info("task older than the link left unmirrored until a person decides (crosslink pair / mirror)",
             extra={"link": ctx.link.name, "side": side, "task": number})
    return True


def removed_here(ctx: RunContext, source_raw: Mapping[str, Any], counterpart: int, marked: bool, *,
                 gateway: Gateway, writes: WriteOnce) -> bool:
    """Whether this paired task was taken out of the link on its side (trashed, moved out
    of scope), told once on its counterpart (MARKED: told already); a task back in place is
    followed again. Asks Redis whether the task is a mirror only for one out of scope."""
    link, side, number = ctx.link, ctx.side, ctx.number
    how = ("trashed" if source_raw.get("isDeleted") else
           "out_of_scope" if not in_scope(link, side, source_raw) and left_scope(
               link, side, source_raw, ctx.state.is_mirror("task", side, number))
           else None)
    if how is None:
        if marked:
            ctx.state.unmark_removed(side, number)
        return False
    if not marked:
        tell_of_removal(ctx, how, counterpart, source_raw, gateway=gateway, writes=writes)
    # Nothing more to look at for this stamp: polls need not queue it again.
    record_synced_stamp(ctx.state.redis, link.name, side, number, source_raw)
    return True
