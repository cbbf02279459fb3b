"""`crosslink journal audit`: the journal held against both accounts. Every crossing people can
see has its entry, and every entry's crossing is there.

The journal is the sync's own account of what crossed, so it is checked against the accounts,
read over REST through the shared limiter:

- each mirror task (its sourceDataVersion marker names an original of the other side) needs a
  "task created" entry that targets it, and each mirror comment (marked the same way) a "comment"
  entry; each note the robot left (a comment of the integration user, marked by sourceObjectId
  but naming no original) needs a "note" entry. A mirror with no entry is *unrecorded*: it was
  written and the journal does not say so;
- each such entry's target must be there, and a task entry's target must be the mirror of the
  original the entry names. An entry whose target is not there is *unfounded*: the journal
  says something crossed that no account shows. A target a person deleted, or a mirror comment
  withdrawn because its original was deleted, is reported apart (*gone*), and is no fault.

The link's chain is checked as well (crosslink.journal.chain.check_chain). The verdict is pure
(`audit_link`); `read_side` does the reading: the link's tasks in scope and its mirrors, with their
comments (deleted ones included), and any target an entry names that the listing did not show.
The cost is that of `crosslink reconcile` without checklists and files: a list page per 100
tasks, and one request per task for its comments.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crosslink.journal.chain import Anchor, Entry, check_chain
from crosslink.journal.store import Journal
from crosslink.operations.journal import open_journal
from crosslink.operations.session import operator_session
from planfix.errors import NotFound
from producers.reconcile import poll_filter_sets
from schemas.links import Link
from workers.canonical import in_scope, task_fields
from workers.comment_policy import WITHDRAWN_MARK
from workers.state import mirrored_from, parse_marker

UNRECORDED, UNFOUNDED, GONE = "unrecorded", "unfounded", "gone"
AUDIT_COMMENT_FIELDS = "id,task,owner,isDeleted,description,sourceObjectId,sourceDataVersion"


@dataclass
class SideView:
    """What one account holds of the link: its tasks (id -> task as listed) and their comments
    (id -> comment), and the tasks an entry names that are gone (deleted, or not found)."""

    side: str
    tasks: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    comments: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    gone: set[int] = field(default_factory=set)


@dataclass
class Finding:
    kind: str  # unrecorded, unfounded, gone
    side: str  # the account's side the crossing is in
    what: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind}: {self.side} {self.what}: {self.detail}"


@dataclass
class Audit:
    link: str
    mirror_tasks: int = 0
    mirror_comments: int = 0
    notes: int = 0
    entries: int = 0
    chain: str = "ok"
    findings: list[Finding] = field(default_factory=list)

    def count(self, kind: str) -> int:
        return sum(1 for finding in self.findings if finding.kind == kind)

    @property
    def ok(self) -> bool:
        return self.chain == "ok" and not self.count(UNRECORDED) and not self.count(UNFOUNDED)

    def summary(self) -> str:
        return (f"journal audit {self.link}: {self.mirror_tasks} mirror tasks, {self.mirror_comments} mirror "
                f"comments, {self.notes} notes; {self.entries} entries; chain {self.chain}; "
                f"unrecorded {self.count(UNRECORDED)}, unfounded {self.count(UNFOUNDED)}, "
                f"gone {self.count(GONE)} (by people, no fault)")

    def as_dict(self) -> dict[str, Any]:
        return {"link": self.link, "mirror_tasks": self.mirror_tasks, "mirror_comments": self.mirror_comments,
                "notes": self.notes, "entries": self.entries, "chain": self.chain, "ok": self.ok,
                "findings": [vars(finding) for finding in self.findings]}


def audit_journal(link: Link, journal: Journal, clients: Mapping[str, Any]) -> Audit:
    """LINK's journal in JOURNAL against both accounts, read through CLIENTS (side -> PlanfixClient)."""
    entries = journal.entries(link.name)
    wanted = entry_targets(link, entries)
    views = {side: read_side(link, side, clients[side], wanted[side]) for side in link.sides}
    return audit_link(link, views, entries, journal.anchors(link.name))


def audit_deployment(link: Link, links_path: str | None = None) -> Audit:
    """`crosslink journal audit`: LINK's journal (CROSSLINK_JOURNAL_URL, else beside the links
    file) against its accounts, read through the shared limiter beside live workers."""
    journal = open_journal(links_path)
    try:
        with operator_session(link) as session:
            return audit_journal(link, journal, session.clients)
    finally:
        journal.close()


# --- reading ----------------------------------------------------------------------------------


def entry_targets(link: Link, entries: Iterable[Entry]) -> dict[str, set[int]]:
    """The tasks, by side, that the entries audited here name as their targets."""
    wanted: dict[str, set[int]] = {side: set() for side in link.sides}
    for entry in entries:
        side = _target_side(link, entry)
        if side is not None and entry.target.get("task") is not None:
            wanted[side].add(int(entry.target["task"]))
    return wanted


def read_side(link: Link, side: str, client: Any, wanted: Iterable[int] = ()) -> SideView:
    """SIDE's tasks of LINK (in scope, or our mirrors there) and WANTED ones (named by entries)
    with their comments, read through CLIENT (a PlanfixClient)."""
    view = SideView(side)
    conf, other = link.sides[side], link.other(side)
    filter_sets = list(poll_filter_sets(conf))
    if conf.create.project:
        filter_sets.append([{"type": 5, "operator": "equal", "value": conf.create.project}])
    fields = list(dict.fromkeys([*task_fields(link, side), "sourceDataVersion", "isDeleted"]))
    for filters in filter_sets:
        for task in client.list_tasks(filters=filters, fields=fields):
            if mirrored_from(task.get("sourceDataVersion"), link.name, other) is not None or in_scope(link, side, task):
                view.tasks[int(task["id"])] = task
    for number in sorted(set(wanted) - set(view.tasks)):
        try:
            view.tasks[number] = client.get_task(number, fields="id,sourceDataVersion,isDeleted")
        except NotFound:
            view.gone.add(number)
    for number, task in sorted(view.tasks.items()):
        if task.get("isDeleted"):
            view.gone.add(number)
        for comment in client.list_task_comments(number, fields=AUDIT_COMMENT_FIELDS, type_list="All"):
            view.comments[int(comment["id"])] = {**comment, "task": {"id": number}}
    return view


# --- the verdict ------------------------------------------------------------------------------


def audit_link(link: Link, views: Mapping[str, SideView], entries: list[Entry],
               anchors: Iterable[Anchor] = ()) -> Audit:
    """LINK's journal ENTRIES (and ANCHORS) against what both accounts hold (VIEWS, by side)."""
    result = Audit(link.name, entries=len(entries))
    chain = check_chain(link.name, entries, anchors)
    result.chain = "ok" if chain.ok else f"FAILED at {chain.failures[0]}"
    by_target: dict[tuple[str, str, int], Entry] = {}
    for entry in entries:
        side = _target_side(link, entry)
        what = {"task created": "task", "comment": "comment", "note": "comment"}.get(entry.kind)
        if side is not None and what is not None and entry.target.get(what) is not None:
            by_target[(entry.kind, side, int(entry.target[what]))] = entry
    for side, view in views.items():
        _crossings_without_entries(link, view, by_target, result)
    for (kind, side, target), entry in sorted(by_target.items(), key=lambda item: item[1].seq):
        problem = _entry_problem(link, views[side], kind, target, entry)
        if problem is not None:
            result.findings.append(Finding(problem[0], side, f"entry {entry.seq} ({kind})", problem[1]))
    return result


def _crossings_without_entries(link: Link, view: SideView, by_target: Mapping[tuple[str, str, int], Entry],
                               result: Audit) -> None:
    """Mirror tasks, mirror comments and notes in VIEW with no entry naming them."""
    side, other = view.side, link.other(view.side)
    robot = str(link.sides[side].integration_user).removeprefix("user:")
    for number, task in sorted(view.tasks.items()):
        original = mirrored_from(task.get("sourceDataVersion"), link.name, other)
        if original is None:
            continue
        result.mirror_tasks += 1
        if ("task created", side, number) not in by_target:
            result.findings.append(Finding(UNRECORDED, side, f"task #{number}",
                                           f"mirrors {other} #{original}, and no \"task created\" entry names it"))
    for comment_id, comment in sorted(view.comments.items()):
        marker = parse_marker(comment.get("sourceDataVersion"))
        on = f"comment {comment_id} on task #{_ref(comment.get('task'))}"
        if marker is not None and marker[:2] == (link.name, other):
            result.mirror_comments += 1
            if ("comment", side, comment_id) not in by_target:
                result.findings.append(Finding(UNRECORDED, side, on, f"mirrors {other} comment {marker[2]}, "
                                               "and no \"comment\" entry names it"))
        elif (marker is None and comment.get("sourceObjectId")
              and str(_ref(comment.get("owner")) or "").removeprefix("user:") == robot):
            result.notes += 1
            if ("note", side, comment_id) not in by_target:
                result.findings.append(Finding(UNRECORDED, side, on, "a note of the sync's, and no \"note\" "
                                               "entry names it"))


def _entry_problem(link: Link, view: SideView, kind: str, target: int, entry: Entry) -> tuple[str, str] | None:
    """What is wrong with ENTRY's target (KIND's TARGET id in VIEW's account), if anything."""
    task = entry.target.get("task")
    if kind == "task created":
        if target in view.gone:
            return GONE, f"its mirror #{target} was deleted by a person"
        shown = view.tasks.get(target)
        if shown is None:
            return UNFOUNDED, f"names task #{target}, which the {view.side} account does not show"
        marker = parse_marker(shown.get("sourceDataVersion"))
        if marker != (link.name, entry.side, int(entry.source.get("task") or 0)):
            return UNFOUNDED, (f"names task #{target} as the mirror of {entry.side} #{entry.source.get('task')}, "
                               f"but it is marked {shown.get('sourceDataVersion')!r}")
        return None
    comment = view.comments.get(target)
    if comment is None:
        if task is not None and int(task) in view.gone:
            return GONE, f"comment {target} was on task #{task}, deleted by a person"
        return UNFOUNDED, f"names comment {target} on task #{task}, which the {view.side} account does not show"
    if comment.get("isDeleted"):
        return GONE, f"comment {target} on task #{task} was deleted by a person"
    if WITHDRAWN_MARK in str(comment.get("description") or ""):
        return GONE, f"comment {target} on task #{task} is withdrawn: its original was deleted"
    return None


def _target_side(link: Link, entry: Entry) -> str | None:
    """The side whose account holds ENTRY's target: a note is posted on its own side, a task or
    comment crosses to the other; None for the entries audited here not."""
    if entry.kind == "note":
        return entry.side
    if entry.kind in ("task created", "comment"):
        return link.other(entry.side)
    return None


def _ref(value: Any) -> Any:
    return value.get("id") if isinstance(value, Mapping) else value
