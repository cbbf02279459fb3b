"""Checklists and task-card files of a task pair: what a task carries besides its fields and
comments, mirrored item by item.

Why a module of its own rather than more of the run (workers.sync.run): both are lists whose
members are mirrored once each and never deleted, unlike fields (absolute values) and comments
(rendered copies owned by the sync), and Planfix gives them neither authors nor markers:
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
different value is not overwritten. Nothing is ever deleted or detached.

This module holds the pure decisions (no I/O), so they can be tested exhaustively and read by
`crosslink check`; workers.sync.checklist and workers.sync.files make the requests they call for.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from workers.canonical import ref_id

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
        parent = parent_of(by_id[item_id])
        if parent in by_id:
            place(parent, trail | {item_id})
        placed.add(item_id)
        ordered.append(by_id[item_id])

    for item_id in sorted(by_id):
        place(item_id, frozenset())
    return ordered


def parent_of(item: Mapping[str, Any]) -> int | None:
    """The id of ITEM's parent item, if it has one."""
    return ref_id(item.get("parent"))
