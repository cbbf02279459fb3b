"""File mirroring: a file on the run's task card, or on a comment it mirrors, is copied to the
other account once and never detached.

Why a module of its own: files are copied for two callers (task cards here, comments in
workers.sync.comments), and a copy must be told from a person's file on every later run of
either side, though Planfix gives a file no owner and no marker (workers.sync.attachments).
Task-card files are attached one by one with POST /file/{id}/attach/task, because `files` in a
task update replaces the whole set (API-NOTES "Files").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from workers.idempotency import WriteOnce
from workers.sync.attachments import FILE, flows
from workers.sync.context import RunContext
from workers.sync.gateway import Gateway

log = logging.getLogger("crosslink.sync")


def mirror_file(ctx: RunContext, file_id: int, *, gateway: Gateway, writes: WriteOnce) -> int:
    """The copy on the other side of the run's side's file FILE_ID, uploaded once (WRITES)."""
    link, side, other = ctx.link, ctx.side, ctx.other

    def copy() -> int:
        name, content = gateway.call(side, "download_file", file_id)
        mirror = gateway.call(other, "upload_file", name, content)
        # Recorded with its bytes' hash while they are at hand: a copy found made is not read again.
        ctx.crossed("file", source={"task": ctx.number, "file": file_id, "name": name}, target={"file": mirror},
                    content=content, key=f"{side}:{file_id}")
        return mirror

    mirror = writes.run(f"{link.name}:file:{side}:{file_id}", write=copy)
    ctx.state.pair("file", side, file_id, other, mirror)
    return mirror


def sync_task_files(ctx: RunContext, counterpart: int | None, card: list[Mapping[str, Any]] | None = None, *,
                    gateway: Gateway, writes: WriteOnce) -> int:
    """Copy each file on the run's task card to COUNTERPART's card once; returns files attached.

    CARD: the card's files as the run's task read gave them (its `files` field,
    workers.canonical.task_fields), else they are listed (GET /task/{id}/files with
    onlyFromDescription). Assumes the task's `files` field is the card's set, the one a task
    update's `files` replaces (API-NOTES, files), as the emulator has it.
    Files the sync copied (either way) are skipped, so nothing comes back; nothing is ever
    detached. Does nothing, and calls nothing, when the link does not map files this way.
    """
    link, side, other = ctx.link, ctx.side, ctx.other
    if counterpart is None or not flows(link.fields.files.direction, side, other):
        return 0
    attached = 0
    if card is None:
        card = gateway.call(side, "list_task_files", ctx.number, only_description=True)
    for entry in card:
        file_id = int(entry["id"])
        key = f"{link.name}:taskfile:{side}:{ctx.number}:{file_id}"
        if writes.done(key) is not None or is_copy(ctx, side, file_id, writes=writes):
            continue
        mirror = mirror_file(ctx, file_id, gateway=gateway, writes=writes)
        # Marked before it is attached anywhere, so no run can take it for a person's file.
        ctx.state.mark_mirror(FILE, other, mirror)

        def attach(mirror: int = mirror) -> int:
            gateway.call(other, "attach_file_to_task", mirror, counterpart)
            return mirror

        def already_there(mirror: int = mirror) -> int | None:
            files = gateway.call(other, "list_task_files", counterpart, only_description=True)
            return mirror if any(int(item["id"]) == mirror for item in files) else None

        writes.run(key, write=attach, find_existing=already_there)
        attached += 1
    if attached:
        log.info("task files: %d attached", attached,
                 extra={"link": link.name, "side": side, "task": ctx.number})
    return attached


def is_copy(ctx: RunContext, side: str, file_id: int, *, writes: WriteOnce) -> bool:
    """Whether SIDE's FILE_ID is the sync's copy of a file from the other side."""
    if ctx.state.is_mirror(FILE, side, file_id):
        return True
    original = ctx.state.counterpart(FILE, side, file_id)
    # Copies made for comments are paired but not marked: the copy is what the original's
    # WriteOnce key recorded.
    return original is not None and writes.done(f"{ctx.link.name}:file:{ctx.other}:{original}") == file_id
