"""The chaos suite's oracle: what both accounts must hold, derived from what people did.

A checker that compares one side with the other (crosslink/operations/check.py) passes a sync that rolled a
person's edit back on both sides, picked the wrong winner, or paired tasks through its own broken
markers. The oracle knows nothing of the product: the chaos generator records every person's
action (who, which side, when, what) as it does it, and from that record alone the oracle derives
the final state of BOTH accounts under the link's rules, then judges the two full dumps against it:

- lost: an expected task, field value, comment (or its mirror), checklist item or card file that is
  absent or different; a mirror whose current text (above its folded earlier versions) is not the
  person's final one, or whose earlier versions are not in the order the person wrote them;
- duplicates: more than one copy of one original, found by content (a key the generator writes into
  every name, comment text, item name and file name), never by the product's sourceObjectId or
  sourceDataVersion markers;
- unexpected: something no person's action explains (a task with no known key, a comment the policy
  keeps private that crossed anyway, a mirror echoed back to its own side, an earlier version of a
  mirror that the person never wrote).

The link's rules are the product's own pure decision functions where they ARE the rule (the status
map and its paths, the owner rule, delegation, the comment policy and how a mirror reads); state,
Redis and the registry are never read here. Pure: no I/O.

The record must keep the expected state well defined, and `expect` refuses one that does not
(`Ambiguous`): a task's fields, status and assignees are written by people of the task's origin
side only; both sides write an owned field at once only as a "contest", the last write of that
field, which the field's owner wins; a reassignment never names the side's stand-in for the other
side's people (delegation would then depend on the counterpart's state at sync time); a comment's
edits keep it on the same side of the comment policy; a checklist item is ticked on its own side.
Everything else (which copy a person comments on, how fast, during which fault) is free.
"""

from __future__ import annotations

import html as html_lib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.links import Link
from workers.comment_policy import EARLIER_MARK, MIRROR_MARK, WITHDRAWN_MARK, should_mirror
from workers.conflict import resolve
from workers.delegation import delegate, stand_in_for
from workers.status_map import MAX_RULE_ROUNDS, rule_moves

# How the generator marks an original's content, so its copies are found by content alone:
# "[T12] ..." in task names, "[C40] ..." in comment texts, "[K7] ..." in checklist item names,
# "F3-..." file names.
KEY = re.compile(r"\[([TCK]\d+)\]")
FILE_KEY = re.compile(r"^(F\d+)-")
# The task fields the generator writes and the oracle therefore knows.
TASK_FIELDS = ("name", "description")
# Action kinds, with the values each carries.
CREATE = "create"                  # name, description, status, assignees
EDIT = "edit"                      # field, value
CONTEST = "contest"                # field, values: {side: value}, both written at once
STATUS = "status"                  # status
REASSIGN = "reassign"              # assignees
COMMENT = "comment"                # comment (key), text
COMMENT_EDIT = "comment_edit"      # comment, text
COMMENT_DELETE = "comment_delete"  # comment
CHECKLIST_ADD = "checklist_add"    # item (key), name
CHECKLIST_TICK = "checklist_tick"  # item, done
FILE = "file"                      # file (name), sha256
KINDS = (CREATE, EDIT, CONTEST, STATUS, REASSIGN, COMMENT, COMMENT_EDIT, COMMENT_DELETE,
         CHECKLIST_ADD, CHECKLIST_TICK, FILE)
LOST, DUPLICATE, UNEXPECTED = "lost", "duplicate", "unexpected"


class Ambiguous(ValueError):
    """The record breaks a rule that keeps its expected state well defined (module docstring)."""


@dataclass(frozen=True)
class Action:
    """One thing a person did: at T (seconds), on SIDE, as AUTHOR ("user:N"), to task TASK (its key)."""

    t: float
    side: str
    author: str
    kind: str
    task: str
    values: Mapping[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"t": round(self.t, 3), "side": self.side, "author": self.author, "kind": self.kind,
                "task": self.task, **dict(self.values)}


@dataclass
class ExpectedComment:
    key: str
    side: str        # where the person wrote it
    author: str
    text: str
    deleted: bool = False
    mirrored: bool = True  # whether the comment policy sends it across
    # Every text the person gave it, oldest first (the last is TEXT): what a mirror's folded
    # earlier versions may show.
    texts: list[str] = field(default_factory=list)


@dataclass
class ExpectedTask:
    key: str
    origin: str
    fields: dict[str, dict[str, Any]]  # side -> {name, description, status, assignees}
    comments: dict[str, ExpectedComment] = field(default_factory=dict)
    checklist: dict[str, dict[str, Any]] = field(default_factory=dict)  # key -> {side, name, done}
    files: dict[str, dict[str, Any]] = field(default_factory=dict)      # name -> {side, sha256}
    contested: set[str] = field(default_factory=set)


# --- the expected state -----------------------------------------------------------------------


def settle_statuses(link: Link, side: str, status: int) -> dict[str, int | None]:
    """Both sides' statuses once SIDE's task was moved to STATUS by a person and the sync is done:
    the counterpart in the mapped status, then the link's rules applied until nothing moves."""
    other = link.other(side)
    now: dict[str, int | None] = {side: status, other: link.statuses.forward(side).get(status)}
    reached = [(side, status)] + ([(other, now[other])] if now[other] is not None else [])
    for _ in range(MAX_RULE_ROUNDS):
        following = []
        for reached_side, reached_status in reached:
            for then_side, then_status in rule_moves(link, reached_side, reached_status):
                if now[then_side] != then_status:
                    now[then_side] = then_status
                    following.append((then_side, then_status))
        if not following:
            break
        reached = following
    return now


def delegated(link: Link, side: str, assignees: Iterable[str]) -> list[str]:
    """The counterpart's assignees for SIDE's ASSIGNEES under the link's delegation (with no
    counterpart people kept: `expect` refuses the records where that would matter)."""
    return sorted(delegate(link, side, list(assignees), {}, None).assignees)


def depends_on_counterpart(link: Link, side: str, assignees: Iterable[str]) -> bool:
    """Whether delegating SIDE's ASSIGNEES depends on the counterpart's current assignees: it
    does when they name SIDE's stand-in for the other side's unpaired people."""
    stand_in = stand_in_for(link, side)
    return stand_in is not None and stand_in in set(assignees)


def contest_winner(link: Link, field_name: str) -> str:
    """The side whose value an owned FIELD keeps when both sides changed it at once."""
    winners = [side for side in link.sides if resolve(link, field_name, side, True, True) == "apply"]
    if len(winners) != 1:
        raise Ambiguous(f"{field_name} has no owner: a contest over it has no deterministic winner")
    return winners[0]


def expect(link: Link, actions: Iterable[Action]) -> dict[str, ExpectedTask]:
    """Every original task's expected state on both sides, by its key, from the ACTIONS (in
    the order they were done)."""
    tasks: dict[str, ExpectedTask] = {}
    comment_task: dict[str, str] = {}
    item_task: dict[str, str] = {}
    for action in sorted(actions, key=lambda item: item.t):
        values = action.values
        if action.kind == CREATE:
            if action.task in tasks:
                raise Ambiguous(f"task {action.task} created twice")
            statuses = settle_statuses(link, action.side, values["status"])
            other = link.other(action.side)
            base = {key: values[key] for key in TASK_FIELDS}
            tasks[action.task] = ExpectedTask(action.task, action.side, {
                action.side: {**base, "status": statuses[action.side], "assignees": sorted(values["assignees"])},
                other: {**base, "status": statuses[other],
                        "assignees": delegated(link, action.side, values["assignees"])}})
            continue
        task = tasks.get(action.task)
        if task is None:
            raise Ambiguous(f"{action.kind} on task {action.task} before it was created")
        if action.kind in (EDIT, STATUS, REASSIGN) and action.side != task.origin:
            raise Ambiguous(f"{action.kind} of task {action.task} on {action.side}, not its origin side "
                            f"{task.origin}: who wins would depend on sync timing")
        if action.kind == EDIT:
            name = values["field"]
            if name in task.contested:
                raise Ambiguous(f"{name} of task {action.task} edited after a contest over it")
            for side in task.fields:
                task.fields[side][name] = values["value"]
        elif action.kind == CONTEST:
            name = values["field"]
            if name in task.contested:
                raise Ambiguous(f"{name} of task {action.task} contested twice")
            task.contested.add(name)
            winner = contest_winner(link, name)
            for side in task.fields:
                task.fields[side][name] = values["values"][winner]
        elif action.kind == STATUS:
            for side, status in settle_statuses(link, action.side, values["status"]).items():
                task.fields[side]["status"] = status
        elif action.kind == REASSIGN:
            if depends_on_counterpart(link, action.side, values["assignees"]):
                raise Ambiguous(f"reassignment of task {action.task} names {action.side}'s stand-in")
            task.fields[action.side]["assignees"] = sorted(values["assignees"])
            task.fields[link.other(action.side)]["assignees"] = delegated(link, action.side, values["assignees"])
        elif action.kind == COMMENT:
            key = values["comment"]
            if key in comment_task:
                raise Ambiguous(f"comment {key} written twice")
            comment_task[key] = action.task
            task.comments[key] = ExpectedComment(key, action.side, action.author, values["text"],
                                                 mirrored=should_mirror(link, action.side, values["text"]),
                                                 texts=[values["text"]])
        elif action.kind in (COMMENT_EDIT, COMMENT_DELETE):
            comment = task.comments.get(values["comment"])
            if comment is None or comment.side != action.side or comment.deleted:
                raise Ambiguous(f"{action.kind} of comment {values['comment']}, which task {action.task} "
                                f"does not hold on {action.side} (or it was deleted)")
            if action.kind == COMMENT_DELETE:
                comment.deleted = True
            else:
                if should_mirror(link, action.side, values["text"]) != comment.mirrored:
                    raise Ambiguous(f"edit of comment {comment.key} moves it across the comment policy")
                comment.text = values["text"]
                comment.texts.append(values["text"])
        elif action.kind == CHECKLIST_ADD:
            key = values["item"]
            if key in item_task:
                raise Ambiguous(f"checklist item {key} added twice")
            item_task[key] = action.task
            task.checklist[key] = {"side": action.side, "name": values["name"], "done": False}
        elif action.kind == CHECKLIST_TICK:
            item = task.checklist.get(values["item"])
            if item is None or item["side"] != action.side:
                raise Ambiguous(f"checklist item {values['item']} ticked on a side it was not added on")
            item["done"] = bool(values["done"])
        elif action.kind == FILE:
            task.files[values["file"]] = {"side": action.side, "sha256": values["sha256"]}
        else:
            raise Ambiguous(f"unknown action kind {action.kind!r}")
    return tasks


# --- the judge --------------------------------------------------------------------------------


@dataclass
class Finding:
    kind: str     # lost, duplicate, unexpected
    side: str
    task: str     # the original's key ("T12"), or "#N" for a task with no key
    what: str     # "task", "name", "status", "comment C4", "mirror of C4", "item K2", "file F1-x"
    detail: str
    numbers: tuple[int, ...] = ()  # the task numbers it was found on, for reading the dumps

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "side": self.side, "task": self.task, "what": self.what,
                "detail": self.detail, "numbers": list(self.numbers)}

    def __str__(self) -> str:
        where = ", ".join(f"#{number}" for number in self.numbers)
        return f"{self.kind}: {self.side} {self.task} {self.what}{f' ({where})' if where else ''}: {self.detail}"


@dataclass
class Verdict:
    findings: list[Finding] = field(default_factory=list)
    tasks: int = 0
    comments: int = 0
    checklist_items: int = 0
    files: int = 0

    def count(self, kind: str) -> int:
        return sum(1 for finding in self.findings if finding.kind == kind)

    @property
    def lost(self) -> int:
        return self.count(LOST)

    @property
    def duplicates(self) -> int:
        return self.count(DUPLICATE)

    @property
    def unexpected(self) -> int:
        return self.count(UNEXPECTED)

    @property
    def ok(self) -> bool:
        return not self.findings

    def add(self, kind: str, side: str, task: str, what: str, detail: str, numbers: Iterable[int] = ()) -> None:
        self.findings.append(Finding(kind, side, task, what, detail, tuple(numbers)))


def task_key(name: str | None) -> str | None:
    found = KEY.match(name or "")
    return found.group(1) if found and found.group(1).startswith("T") else None


def content_key(text: str | None) -> str | None:
    """The C/K key an original's text carries, wherever the product put it (after a header)."""
    found = KEY.search(text or "")
    return found.group(1) if found and not found.group(1).startswith("T") else None


def _status(task: Mapping[str, Any]) -> int | None:
    status = task.get("status")
    return int(status["id"]) if isinstance(status, Mapping) and status.get("id") is not None else status


def _assignees(task: Mapping[str, Any]) -> list[str]:
    block = task.get("assignees") or {}
    return sorted({str(person["id"]) for person in block.get("users") or []})


def judge(link: Link, expected: Mapping[str, ExpectedTask], dumps: Mapping[str, list[Mapping[str, Any]]],
          names: Mapping[str, Mapping[str, str]], *, scope: Mapping[str, Any] | None = None) -> Verdict:
    """Judge both full DUMPS (side -> every task with comments, checklist and files, as the
    emulator's tasks dump gives them) against EXPECTED. NAMES maps each side's "user:N" to the
    display name a mirror's header must carry. SCOPE (side -> callable(task) -> bool), when given,
    says which tasks belong to this link: any such task with no key of EXPECTED is unexpected.
    Tasks whose key belongs to EXPECTED are judged wherever they are."""
    verdict = Verdict()
    copies: dict[str, dict[str, list[Mapping[str, Any]]]] = {side: {} for side in link.sides}
    for side, tasks in dumps.items():
        for task in tasks:
            key = task_key(task.get("name"))
            if key in expected:
                copies[side].setdefault(key, []).append(task)
            elif scope is not None and scope[side](task):
                verdict.add(UNEXPECTED, side, f"#{task['id']}", "task",
                            f"{task.get('name')!r} is no original nor a copy of one", (int(task["id"]),))
    for key, want in sorted(expected.items(), key=lambda item: int(item[0][1:])):
        verdict.tasks += 1
        primary: dict[str, Mapping[str, Any] | None] = {}
        for side in link.sides:
            found = sorted(copies[side].get(key, []), key=lambda task: int(task["id"]))
            numbers = [int(task["id"]) for task in found]
            primary[side] = found[0] if found else None
            if not found:
                verdict.add(LOST, side, key, "task", f"no copy of {want.origin}'s task {key} on {side}")
                continue
            if len(found) > 1:
                for extra in found[1:]:
                    verdict.add(DUPLICATE, side, key, "task", f"{len(found)} copies on {side}", numbers)
            _judge_fields(verdict, side, key, want.fields[side], found[0])
        _judge_comments(link, verdict, key, want, copies, names)
        _judge_lists(verdict, key, want, copies, primary)
    return verdict


def _judge_fields(verdict: Verdict, side: str, key: str, want: Mapping[str, Any], task: Mapping[str, Any]) -> None:
    have = {"name": task.get("name"), "description": task.get("description") or "",
            "status": _status(task), "assignees": _assignees(task)}
    for name, value in want.items():
        if have[name] != value:
            verdict.add(LOST, side, key, name, f"expected {value!r}, found {have[name]!r}", (int(task["id"]),))


def _judge_comments(link: Link, verdict: Verdict, key: str, want: ExpectedTask,
                    copies: Mapping[str, Mapping[str, list[Mapping[str, Any]]]],
                    names: Mapping[str, Mapping[str, str]]) -> None:
    """Per comment: one original where it was written, one mirror (or none, as the policy and a
    deletion allow) on the other side; found by the key in its text on every copy of the task."""
    seen: dict[str, dict[str, list[tuple[int, Mapping[str, Any]]]]] = {side: {} for side in link.sides}
    for side in link.sides:
        for task in copies[side].get(key, []):
            for comment in task.get("comments") or []:
                found = content_key(comment.get("description"))
                if found is not None:
                    seen[side].setdefault(found, []).append((int(task["id"]), comment))
    for comment_key, comment in sorted(want.comments.items(), key=lambda item: int(item[0][1:])):
        verdict.comments += 1
        other = link.other(comment.side)
        originals = [(n, c) for n, c in seen[comment.side].get(comment_key, []) if MIRROR_MARK not in (c.get("description") or "")]
        echoes = [(n, c) for n, c in seen[comment.side].get(comment_key, []) if MIRROR_MARK in (c.get("description") or "")]
        mirrors = [(n, c) for n, c in seen[other].get(comment_key, []) if MIRROR_MARK in (c.get("description") or "")]
        copied = [(n, c) for n, c in seen[other].get(comment_key, []) if MIRROR_MARK not in (c.get("description") or "")]
        what = f"comment {comment_key}"
        if len(originals) != 1:
            verdict.add(LOST if not originals else DUPLICATE, comment.side, key, what,
                        f"{len(originals)} originals where the person wrote one", [n for n, _ in originals])
        elif originals[0][1].get("description") != comment.text or bool(originals[0][1].get("isDeleted")) != comment.deleted:
            verdict.add(LOST, comment.side, key, what, "the original no longer reads as the person left it: "
                        f"{originals[0][1].get('description')!r}, deleted={originals[0][1].get('isDeleted')}",
                        [originals[0][0]])
        for number, _ in echoes:
            verdict.add(UNEXPECTED, comment.side, key, f"mirror of {comment_key}",
                        "mirrored back to the side it was written on", [number])
        for number, _ in copied:
            verdict.add(UNEXPECTED, other, key, f"copy of {comment_key}", "a copy without the mirror mark", [number])
        what = f"mirror of {comment_key}"
        if not comment.mirrored:
            for number, _ in mirrors:
                verdict.add(UNEXPECTED, other, key, what, "the comment policy keeps it on its side", [number])
            continue
        for number, _ in mirrors[1:]:
            verdict.add(DUPLICATE, other, key, what, f"{len(mirrors)} mirrors", [n for n, _ in mirrors])
        if not mirrors:
            if not comment.deleted:  # deleted before any sync saw it: nothing to withdraw
                verdict.add(LOST, other, key, what, "not mirrored")
            continue
        number, mirror = mirrors[0]
        text = mirror.get("description") or ""
        author = names.get(comment.side, {}).get(comment.author, comment.author)
        problems = []
        if mirror.get("isDeleted"):
            problems.append("the mirror was deleted")
        if comment.deleted and WITHDRAWN_MARK not in text:
            problems.append("its original was deleted, yet the mirror is not marked withdrawn")
        if not comment.deleted and WITHDRAWN_MARK in text:
            problems.append("marked withdrawn, yet its original stands")
        current, earlier = mirror_versions(text)
        if comment.text not in current:
            problems.append(f"does not carry the final text {comment.text!r}")
        invented = [version for version in earlier if version not in comment.texts]
        for version in invented:
            verdict.add(UNEXPECTED, other, key, what, f"an earlier version no person wrote: {version!r}", [number])
        if not invented and not in_order(earlier, comment.texts[:-1]):
            problems.append(f"its earlier versions {earlier!r} are not the order they were written in "
                            f"({comment.texts[:-1]!r}), oldest first")
        if html_lib.escape(author) not in text:
            problems.append(f"does not name its author {author!r}")
        primary = min(int(task["id"]) for task in copies[other].get(key, []) or [{"id": number}])
        if number != primary:
            problems.append(f"on #{number}, not on the task's copy #{primary}")
        if problems:
            verdict.add(LOST, other, key, what, "; ".join(problems) + f": {text[:200]!r}", [number])


def mirror_versions(html: str) -> tuple[str, list[str]]:
    """A mirror's current part (everything before the first folded earlier version) and its
    earlier versions' texts, oldest first (the mirror folds them newest first)."""
    current, *folded = html.split(EARLIER_MARK)
    earlier = []
    for part in folded:
        start, end = part.find("<blockquote>"), part.rfind("</blockquote>")
        earlier.append(part[start + len("<blockquote>"):end] if 0 <= start < end else part)
    return current, earlier[::-1]


def in_order(versions: list[str], written: list[str]) -> bool:
    """Whether VERSIONS (oldest first) are texts of WRITTEN in the order they were written, each
    once; versions left out in between are allowed (a sync need not have seen every text)."""
    remaining = iter(written)
    return all(any(version == text for text in remaining) for version in versions)


def _judge_lists(verdict: Verdict, key: str, want: ExpectedTask,
                 copies: Mapping[str, Mapping[str, list[Mapping[str, Any]]]],
                 primary: Mapping[str, Mapping[str, Any] | None]) -> None:
    """Checklist items and card files: exactly one of each on every side, as left."""
    for side in primary:
        items: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
        files: dict[str, list[tuple[int, Mapping[str, Any]]]] = {}
        for task in copies[side].get(key, []):
            for item in task.get("checklist") or []:
                found = content_key(item.get("name"))
                if found is not None:
                    items.setdefault(found, []).append((int(task["id"]), item))
            for stored in task.get("files") or []:
                found = FILE_KEY.match(str(stored.get("name") or ""))
                if found is not None:
                    files.setdefault(str(stored["name"]), []).append((int(task["id"]), stored))
        for item_key, item in sorted(want.checklist.items(), key=lambda entry: int(entry[0][1:])):
            verdict.checklist_items += side == item["side"]
            have = items.get(item_key, [])
            what = f"item {item_key}"
            if not have:
                verdict.add(LOST, side, key, what, f"no checklist item {item['name']!r}")
                continue
            for _ in have[1:]:
                verdict.add(DUPLICATE, side, key, what, f"{len(have)} items", [n for n, _ in have])
            number, found_item = have[0]
            if found_item.get("name") != item["name"] or bool(found_item.get("isDone")) != item["done"]:
                verdict.add(LOST, side, key, what, f"expected {item['name']!r} done={item['done']}, found "
                            f"{found_item.get('name')!r} done={found_item.get('isDone')}", [number])
        for name, stored in sorted(want.files.items()):
            verdict.files += side == stored["side"]
            have = files.get(name, [])
            what = f"file {name}"
            if not have:
                verdict.add(LOST, side, key, what, "not on the task card")
                continue
            for _ in have[1:]:
                verdict.add(DUPLICATE, side, key, what, f"{len(have)} copies", [n for n, _ in have])
            if have[0][1].get("sha256") != stored["sha256"]:
                verdict.add(LOST, side, key, what, "its bytes differ from the original's", [have[0][0]])
