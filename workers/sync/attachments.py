"""Checklists and task-card files of a task pair: what a task carries besides its fields and
comments, mirrored item by item.

Why a module of its own rather than more of workers/sync.py: both are lists whose members are
mirrored once each and never deleted, unlike fields (absolute values) and comments (rendered
copies owned by the sync), and Planfix gives them neither authors nor markers:
- a checklist item (spec ChecklistItemResponse) has id, name, isDone, parent, dateTime,
  assignees: no owner and no sourceObjectId/sourceDataVersion. So the registry (LinkState.pair,
  kind "checklist") is what says an item is a mirror; an item the sync created is paired the
  moment it exists and therefore never looks new on its side. If the registry is lost, an
  unpaired item of the same name on the other task is adopted instead of creating a second one
  (checklists are compared as lists of names, and two identical names are one promise);
- a file (spec: id, name, size) has no owner either; the sync's copies are marked in the
  registry (LinkState.mark_mirror, kind "file") before they are attached anywhere.

Each run carries the SOURCE side's changes (the run's side) to the counterpart, as comments do;
the other side's run carries its own. Both sides edit the same logical item, so an item's name
and done state are compared with the state both sides last agreed on (kept per side and item,
like the comment fingerprints), and only the values that changed are written: an unchanged
checklist costs one list call and no write, and a change made meanwhile on the other side to a
different value is not overwritten. Nothing is ever deleted or detached; task-card files are
attached one by one with POST /file/{id}/attach/task, because `files` in a task update replaces
the whole set (API-NOTES "Files").

Redis keys added here (beside workers/state.py's):
  crosslink:chk:{link}:{side}:{task}   item id -> JSON {"name","isDone"} last agreed with the other side
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from planfix.client import PartiallyApplied, Queued
from planfix.errors import InvalidRequest, NotFound
from workers.canonical import ref_id
from workers.state import PREFIX

log = logging.getLogger("crosslink.sync")

CHECKLIST = "checklist"
FILE = "file"
# What of an item is carried across: the rest (assignees, dates) names people and times of one
# account, and a move under another parent is rare enough to be set only when the item is created.
ITEM_KEYS = ("name", "isDone")


# ------------------------------------------------------------------------------------------
# Pure decisions

def flows(direction: str, source_side: str, target_side: str) -> bool:
    """Whether a link `direction` carries SOURCE_SIDE's changes to TARGET_SIDE."""
    return direction == "both" or direction == f"{source_side}_to_{target_side}"


def item_view(item: Mapping[str, Any]) -> dict[str, Any]:
    """What is compared and carried of a checklist item: its text and whether it is done."""
    return {"name": str(item.get("name") or ""), "isDone": bool(item.get("isDone"))}


# In an item's agreed state: on the source's, that its last write is not seen applied (Planfix
# queued it), so the next run writes the item's values again whatever they are by then; on the
# mirror's, the views that queued writes may still give it (echoes: seeing one is no change).
UNCONFIRMED = "unconfirmed"
ECHOES = "echoes"


def item_changes(current: Mapping[str, Any], agreed: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values of CURRENT that differ from the AGREED state (all of them when none is known,
    or when the last write of them is unconfirmed: an absolute set)."""
    if agreed is None or agreed.get(UNCONFIRMED):
        return {key: current[key] for key in ITEM_KEYS}
    return {key: current[key] for key in ITEM_KEYS if agreed.get(key) != current[key]}


def agrees(agreed: Mapping[str, Any] | None, view: Mapping[str, Any]) -> bool:
    """Whether an item showing VIEW has nothing to carry: it is its AGREED state, or an echo of a
    queued write of ours; never while its own last write is unconfirmed."""
    if agreed is None or agreed.get(UNCONFIRMED):
        return False
    return {key: agreed.get(key) for key in ITEM_KEYS} == dict(view) or dict(view) in agreed.get(ECHOES, [])


def queued_on_source(agreed: Mapping[str, Any] | None, view: Mapping[str, Any]) -> dict[str, Any]:
    """The source item's agreed state after its write (of VIEW) was queued: unchanged, marked
    unconfirmed, so that its next run writes its values again, even if a person put back the
    agreed values meanwhile (the queued write, landing later, would otherwise stand)."""
    base = dict(agreed) if agreed is not None else dict(view)
    return {**{key: base.get(key) for key in ITEM_KEYS}, UNCONFIRMED: True}


def queued_on_mirror(agreed: Mapping[str, Any] | None, written: Mapping[str, Any],
                     fallback: Mapping[str, Any]) -> dict[str, Any]:
    """The mirror item's agreed state after WRITTEN was queued for it: unchanged (its side, still
    showing the old values, has no change of its own), with the view the write will give it
    among its echoes (its side, seeing that view land, has none either)."""
    base = dict(agreed) if agreed is not None else dict(fallback)
    landed = agreed_after_write(agreed, written, fallback)
    echoes = [echo for echo in base.get(ECHOES, []) if echo != landed]
    return {**{key: base.get(key) for key in ITEM_KEYS}, ECHOES: [*echoes, landed]}


def seen_echo(agreed: Mapping[str, Any], view: Mapping[str, Any]) -> dict[str, Any] | None:
    """When VIEW is one of AGREED's echoes and not its agreed values: the agreed state it gives
    (the queued write landed; the other echoes stay, as writes queued after it may land yet)."""
    if agreed.get(UNCONFIRMED) or {key: agreed.get(key) for key in ITEM_KEYS} == dict(view):
        return None
    if dict(view) not in agreed.get(ECHOES, []):
        return None
    return {**dict(view), ECHOES: list(agreed.get(ECHOES, []))}


def agreed_after_write(previous: Mapping[str, Any] | None, written: Mapping[str, Any],
                       fallback: Mapping[str, Any]) -> dict[str, Any]:
    """The counterpart item's agreed state after WRITTEN was sent to it.

    Only the written values change: a value the other side changed itself keeps its old agreed
    value, so that side's own run still sees its change and carries it back. Without a previous
    agreed state, FALLBACK (the source's view) stands in.
    """
    base = dict(previous) if previous is not None else dict(fallback)
    base.update(written)
    return {key: base.get(key) for key in ITEM_KEYS}


def adoptable(name: str, items: Iterable[Mapping[str, Any]], is_paired: Callable[[int], bool]) -> int | None:
    """The first item of ITEMS named NAME that no registry pair claims yet, or None.

    Assumption: two unpaired items with one name on the two tasks of a pair are the same promise
    (typed on both sides, or mirrored before the registry was lost), so pairing them is right
    and creating a third would duplicate it.
    """
    for item in sorted(items, key=lambda entry: int(entry["id"])):
        if str(item.get("name") or "") == name and not is_paired(int(item["id"])):
            return int(item["id"])
    return None


def parents_first(items: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """ITEMS ordered so that an item's parent (when it is among them) comes before it."""
    by_id = {int(item["id"]): item for item in items}
    ordered: list[Mapping[str, Any]] = []
    placed: set[int] = set()

    def place(item_id: int, trail: frozenset[int]) -> None:
        if item_id in placed or item_id in trail:
            return
        parent = _parent(by_id[item_id])
        if parent in by_id:
            place(parent, trail | {item_id})
        placed.add(item_id)
        ordered.append(by_id[item_id])

    for item_id in sorted(by_id):
        place(item_id, frozenset())
    return ordered


def _parent(item: Mapping[str, Any]) -> int | None:
    return ref_id(item.get("parent"))


# ------------------------------------------------------------------------------------------
# The agreed states in Redis

def _agreed_key(link: str, side: str, task: int) -> str:
    return f"{PREFIX}:chk:{link}:{side}:{task}"


def load_agreed(run: Any, side: str, task: int) -> dict[int, dict[str, Any]]:
    raw = run.state.redis.hgetall(_agreed_key(run.link.name, side, task))
    return {int(key): json.loads(value) for key, value in raw.items()}


def save_agreed(run: Any, side: str, task: int, item_id: int, view: Mapping[str, Any]) -> None:
    run.state.redis.hset(_agreed_key(run.link.name, side, task), str(item_id),
                         json.dumps(dict(view), sort_keys=True))


# ------------------------------------------------------------------------------------------
# Checklists

def sync_checklist(run: Any, counterpart: int | None) -> int:
    """Carry the run's side's checklist of task run.number to COUNTERPART; returns items written.

    RUN is the running workers.sync.TaskSync (its link, sides, clients through run._call, state
    and WriteOnce). Does nothing, and calls nothing, when the link does not map checklists in
    this direction.
    """
    link, side, other = run.link, run.side, run.other
    if counterpart is None or not flows(link.fields.checklist.direction, side, other):
        return 0
    items = run.gateway.call(side, "list_checklist", run.number)
    agreed = load_agreed(run, side, run.number)
    for item in items:
        landed = seen_echo(agreed.get(int(item["id"])) or {}, item_view(item))
        if landed is not None:  # our queued write landed here: now the agreed state
            agreed[int(item["id"])] = landed
            save_agreed(run, side, run.number, int(item["id"]), landed)
    pending = [item for item in items if not agrees(agreed.get(int(item["id"])), item_view(item))]
    if not pending:
        return 0
    agreed_there = load_agreed(run, other, counterpart)
    target_items: list[Mapping[str, Any]] | None = None
    written_count = 0
    for item in parents_first(pending):
        item_id, view = int(item["id"]), item_view(item)
        mirror = run.state.counterpart(CHECKLIST, side, item_id)
        if mirror is None:
            if target_items is None:
                target_items = run.gateway.call(other, "list_checklist", counterpart)
            made = _mirror_item(run, counterpart, item, view, target_items)
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
                save_agreed(run, side, run.number, item_id, queued_on_source(agreed.get(item_id), view))
                save_agreed(run, other, counterpart, mirror, agreed_there[mirror])
            applied = _update_item(run, counterpart, mirror, written) if written else True
            if applied is None:
                continue  # queued by Planfix (202): not agreed until seen, as expected above
            if not applied:
                written = {}
        if written:
            written_count += 1
        save_agreed(run, side, run.number, item_id, view)
        agreed_there[mirror] = agreed_after_write(agreed_there.get(mirror), written, view)
        save_agreed(run, other, counterpart, mirror, agreed_there[mirror])
    if written_count:
        log.info("checklist: %d item(s) carried", written_count,
                 extra={"link": link.name, "side": side, "task": run.number})
    return written_count


def _mirror_item(run: Any, counterpart: int, item: Mapping[str, Any], view: dict[str, Any],
                 target_items: list[Mapping[str, Any]]) -> tuple[int, dict[str, Any]] | None:
    """Create (once) or adopt the counterpart of ITEM; returns its id and the values written, or
    None when ITEM is itself the mirror the other side's run began to make."""
    link, side, other = run.link, run.side, run.other
    item_id = int(item["id"])

    def is_paired(target_id: int) -> bool:
        return run.state.counterpart(CHECKLIST, other, target_id) is not None

    adopted = adoptable(view["name"], target_items, is_paired)
    if adopted is not None and run.writes.started(f"{link.name}:checklist:{other}:{adopted}"):
        # The item of that name over there began a mirror here, and its run did not finish
        # (its answer lost, or its worker killed): ITEM is most likely that mirror. Adopting
        # from this side would write ITEM's values over the original's, undoing whatever people
        # did to the original since (the chaos oracle saw a tick rolled back so). The
        # original's own run pairs them and carries its values.
        return None
    body: dict[str, Any] = dict(view)
    parent = _parent(item)
    mapped_parent = run.state.counterpart(CHECKLIST, side, parent) if parent else None
    if mapped_parent:
        body["parent"] = {"id": mapped_parent}

    def create() -> int:
        return adopted if adopted is not None else run.gateway.call(other, "create_checklist_item", counterpart, body)

    def find_existing() -> int | None:
        # After a lost answer: paired meanwhile, or there under the same name and unclaimed.
        again = run.state.counterpart(CHECKLIST, side, item_id)
        if again is not None:
            return again
        return adoptable(view["name"], run.gateway.call(other, "list_checklist", counterpart), is_paired)

    mirror = run.writes.run(f"{link.name}:checklist:{side}:{item_id}", write=create,
                            find_existing=find_existing)
    run.state.pair(CHECKLIST, side, item_id, other, mirror)
    if adopted is None or mirror != adopted:
        run.state.mark_mirror(CHECKLIST, other, mirror)
        # Agreed at once, so that a run of the mirror's side, should this one die before the
        # end, does not take the new mirror for a change of its own and carry it back.
        save_agreed(run, other, counterpart, mirror, view)
        return mirror, dict(view)
    # Adopted: make its done state agree with the source's, and nothing else.
    there = next((entry for entry in target_items if int(entry["id"]) == mirror), None)
    written = item_changes(view, item_view(there) if there else None)
    if written and not _update_item(run, counterpart, mirror, written):
        written = {}
    return mirror, written


def _update_item(run: Any, counterpart: int, mirror: int, body: dict[str, Any]) -> bool | None:
    """Write BODY to the mirror item; False (noted in the report) when Planfix refused it, None
    when Planfix queued it (202, noted in the report: the job reads the task back later)."""
    from workers.sync.gateway import SideFailure  # the run's own failure type; imported late (run imports us)

    other = run.other
    try:
        outcome = run.gateway.call(other, "update_checklist_item", counterpart, mirror, body)
    except SideFailure as failure:
        if not isinstance(failure.error, (InvalidRequest, NotFound)):
            raise
        # The mirror item is gone or refuses the change: say so, and do not retry it every run.
        run.report.parked.append(f"{other} #{counterpart} checklist item {mirror}: {failure.error}")
        return False
    if isinstance(outcome, Queued):
        run.report.queued.append(f"{other} #{counterpart} checklist item {mirror}")
        return None
    if isinstance(outcome, PartiallyApplied):
        for failure in outcome.failures:
            run.report.parked.append(f"{other} #{counterpart} checklist item {mirror} "
                                     f"{failure.field}: {failure.error}")
    return True


# ------------------------------------------------------------------------------------------
# Task-card files

def sync_task_files(run: Any, counterpart: int | None, card: list[Mapping[str, Any]] | None = None) -> int:
    """Copy each file on the run's task card to COUNTERPART's card once; returns files attached.

    CARD: the card's files as the run's task read gave them (its `files` field,
    workers.canonical.task_fields), else they are listed (GET /task/{id}/files with
    onlyFromDescription). Assumes the task's `files` field is the card's set, the one a task
    update's `files` replaces (API-NOTES, files), as the emulator has it.
    Files the sync copied (either way) are skipped, so nothing comes back; nothing is ever
    detached. Does nothing, and calls nothing, when the link does not map files this way.
    """
    link, side, other = run.link, run.side, run.other
    if counterpart is None or not flows(link.fields.files.direction, side, other):
        return 0
    attached = 0
    if card is None:
        card = run.gateway.call(side, "list_task_files", run.number, only_description=True)
    for entry in card:
        file_id = int(entry["id"])
        key = f"{link.name}:taskfile:{side}:{run.number}:{file_id}"
        if run.writes.done(key) is not None or is_copy(run, side, file_id):
            continue
        mirror = run._mirror_file(file_id)
        # Marked before it is attached anywhere, so no run can take it for a person's file.
        run.state.mark_mirror(FILE, other, mirror)

        def attach(mirror: int = mirror) -> int:
            run.gateway.call(other, "attach_file_to_task", mirror, counterpart)
            return mirror

        def already_there(mirror: int = mirror) -> int | None:
            files = run.gateway.call(other, "list_task_files", counterpart, only_description=True)
            return mirror if any(int(item["id"]) == mirror for item in files) else None

        run.writes.run(key, write=attach, find_existing=already_there)
        attached += 1
    if attached:
        log.info("task files: %d attached", attached,
                 extra={"link": link.name, "side": side, "task": run.number})
    return attached


def is_copy(run: Any, side: str, file_id: int) -> bool:
    """Whether SIDE's FILE_ID is the sync's copy of a file from the other side."""
    if run.state.is_mirror(FILE, side, file_id):
        return True
    original = run.state.counterpart(FILE, side, file_id)
    # Copies made for comments are paired but not marked: the copy is what the original's
    # WriteOnce key recorded.
    return original is not None and run.writes.done(f"{run.link.name}:file:{run.other}:{original}") == file_id
