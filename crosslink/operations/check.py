"""Do both sides of a link match? A checker that knows nothing of the workers' state.

It reads both accounts as they are (a full dump from the emulator, or the same shape read over
REST), finds each mirror by the marker the sync writes into Planfix (sourceDataVersion), and
checks the link's promises: every task in scope mirrored exactly once, mapped fields, statuses
and assignees equal under the link's rules, every comment mirrored exactly once with its current
text, a deleted comment's mirror kept and marked withdrawn, and checklists and task-card files
carried. Checklist items and files carry no marker in Planfix, so those are compared as
multisets: (name, done) per item, (name, content digest, or size where no digest is given) per
file; where the link carries one side to the other, the one's multiset must be contained in the
other's; both ways, they must be equal. The demo ends with it and the end-to-end tests judge
convergence by it. The chaos suite judges by what people did instead (crosslink/lab/oracle.py): this
checker pairs tasks through the sync's own markers and compares the sides with each other, so a
sync that rolled an edit back on both sides would pass it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.links import Link
from workers.canonical import canonical_task, in_scope
from workers.comment_policy import MIRROR_MARK, WITHDRAWN_MARK, should_mirror
from workers.delegation import delegate
from workers.state import mirrored_from, parse_marker
from workers.status_map import equivalent
from workers.sync.attachments import flows, item_view

PLAIN_KEYS = ("name", "description", "priority", "start_date", "end_date")


# Drift kinds, by task (crosslink reconcile's report): an original in scope with no mirror, a
# mirror whose original is no longer among the dumped tasks (for REST dumps: gone from scope),
# a pair whose fields, status, assignees, comments or lists differ, and an original mirrored twice.
MISSING, EXTRA, DIVERGED, DUPLICATED = "missing", "extra", "diverged", "duplicated"


@dataclass
class Drift:
    """One task's drift: SIDE's TASK (for extra: the mirror) and its counterpart, if any."""

    kind: str
    side: str
    task: int
    counterpart: int | None
    details: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "side": self.side, "task": self.task,
                "counterpart": self.counterpart, "details": list(self.details)}


@dataclass
class CheckResult:
    pairs: int = 0
    comments: int = 0
    problems: list[str] = field(default_factory=list)
    lost: int = 0
    duplicates: int = 0
    checklist_items: int = 0
    files: int = 0
    drift: list[Drift] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _marked(tasks: Iterable[Mapping[str, Any]], link: str, origin_side: str) -> dict[int, list[Mapping[str, Any]]]:
    """Mirrors in TASKS of ORIGIN_SIDE's objects, by the original's number."""
    found: dict[int, list[Mapping[str, Any]]] = {}
    for item in tasks:
        marker = parse_marker(item.get("sourceDataVersion"))
        if marker and marker[0] == link and marker[1] == origin_side:
            found.setdefault(marker[2], []).append(item)
    return found


def check_link(link: Link, dumps: Mapping[str, list[Mapping[str, Any]]]) -> CheckResult:
    """Compare the two sides of LINK; DUMPS maps each side name to its tasks with comments."""
    result = CheckResult()
    mirror_numbers: dict[str, set[int]] = {side: set() for side in link.sides}
    pairs: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = []
    for side in link.sides:
        other = link.other(side)
        mirrors = _marked(dumps[other], link.name, side)
        for items in mirrors.values():
            mirror_numbers[other].update(int(item["id"]) for item in items)
        originals = {int(task["id"]) for task in dumps[side]}
        for number, items in sorted(mirrors.items()):
            if number not in originals:
                for item in items:
                    text = f"{other} #{item['id']} mirrors {side} #{number}, which is not among the {side} tasks"
                    result.problems.append(text)
                    result.drift.append(Drift(EXTRA, other, int(item["id"]), number, [text]))
        for task in dumps[side]:
            if parse_marker(task.get("sourceDataVersion")):
                continue  # a mirror itself: checked from its original's side
            found = mirrors.get(int(task["id"]), [])
            if not found:
                if in_scope(link, side, task):
                    result.lost += 1
                    text = f"{side} #{task['id']} has no mirror on the {other} side"
                    result.problems.append(text)
                    result.drift.append(Drift(MISSING, side, int(task["id"]), None, [text]))
                continue
            if len(found) > 1:
                result.duplicates += len(found) - 1
                text = (f"{side} #{task['id']} has {len(found)} mirrors: "
                        + ", ".join(f"#{item['id']}" for item in found))
                result.problems.append(text)
                result.drift.append(Drift(DUPLICATED, side, int(task["id"]), int(found[0]["id"]), [text]))
            pairs.append((side, task, found[0]))
    counterpart = {(side, int(a["id"])): int(b["id"]) for side, a, b in pairs}
    counterpart.update({(link.other(side), int(b["id"])): int(a["id"]) for side, a, b in pairs})
    for side, original, mirror in pairs:
        result.pairs += 1
        before = len(result.problems)
        _compare_task(link, side, original, mirror, counterpart, result)
        _compare_comments(link, side, original, mirror, result)
        _compare_comments(link, link.other(side), mirror, original, result)
        _compare_lists(link, side, original, mirror, result)
        if len(result.problems) > before:
            result.drift.append(Drift(DIVERGED, side, int(original["id"]), int(mirror["id"]),
                                      result.problems[before:]))
    return result


def _item_key(item: Mapping[str, Any]) -> tuple[str, bool]:
    view = item_view(item)
    return view["name"], view["isDone"]


def _file_key(item: Mapping[str, Any]) -> tuple[str, Any]:
    return str(item.get("name") or ""), item.get("sha256") or item.get("size")


def _compare_lists(link: Link, side: str, original: Mapping[str, Any], mirror: Mapping[str, Any],
                   result: CheckResult) -> None:
    """Checklists and card files of a pair: what flows from one task is all on the other."""
    other = link.other(side)
    where = f"{side} #{original['id']} / {other} #{mirror['id']}"
    tasks = {side: original, other: mirror}
    for what, direction, list_key, key in (
            ("checklist item", link.fields.checklist.direction, "checklist", _item_key),
            ("task file", link.fields.files.direction, "files", _file_key)):
        counts = {name: Counter(key(item) for item in tasks[name].get(list_key) or []) for name in tasks}
        if what == "checklist item":
            result.checklist_items += sum(counts[side].values())
        else:
            result.files += sum(counts[side].values())
        for source, target in ((side, other), (other, side)):
            if not flows(direction, source, target):
                continue
            for value, count in sorted((counts[source] - counts[target]).items(), key=repr):
                result.lost += count
                result.problems.append(f"{where}: {source} {what} {value!r} has no match on the {target} side"
                                       + (f" ({count}x)" if count > 1 else ""))


def _compare_task(link: Link, side: str, original: Mapping[str, Any], mirror: Mapping[str, Any],
                  counterpart: Mapping[tuple[str, int], int], result: CheckResult) -> None:
    other = link.other(side)
    a, b = canonical_task(original, link, side), canonical_task(mirror, link, other)
    where = f"{side} #{original['id']} / {other} #{mirror['id']}"
    for key in PLAIN_KEYS:
        if link.fields.rules[key].direction != "none" and a.get(key) != b.get(key):
            result.problems.append(f"{where}: {key} differs: {a.get(key)!r} vs {b.get(key)!r}")
    for rule in link.fields.custom:
        if rule.direction == "none":
            continue
        key_a, key_b = f"cf:{rule.id_on(side)}", f"cf:{rule.id_on(other)}"
        flows_from_a = rule.direction in ("both", f"{side}_to_{other}")
        expected, actual = ((rule.convert(a.get(key_a), side), b.get(key_b)) if flows_from_a
                            else (rule.convert(b.get(key_b), other), a.get(key_a)))
        if expected != actual:
            result.problems.append(f"{where}: custom field {key_a}/{key_b} differs: {expected!r} vs {actual!r}")
    if link.fields.rules.get("status") is None or link.fields.rules["status"].direction != "none":
        if not (equivalent(link, side, a.get("status"), b.get("status"))
                or equivalent(link, other, b.get("status"), a.get("status"))):
            result.problems.append(f"{where}: status {a.get('status')} does not map to {b.get('status')}")
    if link.fields.rules.get("assignees") is None or link.fields.rules["assignees"].direction != "none":
        # Names only word the notes; who is assigned does not depend on them.
        from_a = sorted(delegate(link, side, a.get("assignees") or [], {}, b.get("assignees") or []).assignees)
        from_b = sorted(delegate(link, other, b.get("assignees") or [], {}, a.get("assignees") or []).assignees)
        if from_a != sorted(b.get("assignees") or []) and from_b != sorted(a.get("assignees") or []):
            result.problems.append(f"{where}: assignees {a.get('assignees')} vs {b.get('assignees')} "
                                   "do not follow the delegation rules")
    if link.fields.rules["parent"].direction != "none" and a.get("parent") is not None:
        if counterpart.get((side, a["parent"])) != b.get("parent"):
            result.problems.append(f"{where}: parent #{a['parent']} is not mirrored as #{b.get('parent')}")


def _compare_comments(link: Link, side: str, task: Mapping[str, Any], mirror_task: Mapping[str, Any],
                      result: CheckResult) -> None:
    """Every comment written by a person on SIDE's TASK has exactly one mirror on MIRROR_TASK."""
    integration = link.sides[side].integration_user
    mirrors: dict[int, list[Mapping[str, Any]]] = {}
    for comment in mirror_task.get("comments") or []:
        original = mirrored_from(comment.get("sourceDataVersion"), link.name, side)
        if original is not None:
            mirrors.setdefault(original, []).append(comment)
    for comment in task.get("comments") or []:
        text = comment.get("description") or ""
        if (comment.get("owner") or {}).get("id") == integration or MIRROR_MARK in text:
            continue
        found = mirrors.get(int(comment["id"]), [])
        where = f"{side} #{task['id']} comment {comment['id']}"
        if comment.get("isDeleted"):
            if found and not all(WITHDRAWN_MARK in (m.get("description") or "") for m in found):
                result.problems.append(f"{where}: deleted, but its mirror is not marked withdrawn")
            if len(found) > 1:
                result.duplicates += len(found) - 1
                result.problems.append(f"{where}: {len(found)} mirrors")
            continue
        if not should_mirror(link, side, text):
            if found:
                result.problems.append(f"{where}: excluded by the comment policy, yet mirrored")
            continue
        result.comments += 1
        if not found:
            result.lost += 1
            result.problems.append(f"{where}: not mirrored")
        elif len(found) > 1:
            result.duplicates += len(found) - 1
            result.problems.append(f"{where}: {len(found)} mirrors")
        elif text not in (found[0].get("description") or ""):
            result.problems.append(f"{where}: the mirror does not carry the current text")
        elif found[0].get("isDeleted"):
            result.problems.append(f"{where}: the mirror was deleted")
