"""The chaos run's journal check: every crossing the robot's writes made is a journal entry, and
every entry names a crossing that happened.

The journal is the product's own account of what crossed, so it is judged against what the world
saw, not against itself: the crossings are counted from the emulator's request log, where each
write request says whether the world took it (a 500 after commit, a held answer and a connection
closed after the head were applied; a plain 500 was not; a 202 only once its change landed) and
what it made (planfix.emulator.written). Both sides are reduced to sets of keys (family, account,
target ids[, content]), so a write repeated after a lost answer is one crossing, and a retried
run's entry (recorded once by its key) is one entry.

Families compared, and how a key is made on each side:

| family | from the log (robot writes the world took) | from the journal |
| --- | --- | --- |
| task created | POST /task: the id made | "task created": target task |
| comment | POST /task/N/comments with a mirror marker: the id made | "comment": target task, comment |
| comment version | POST /task/N/comments/C: the versions its HTML shows (1 + folded earlier ones), withdrawn or not | "comment version" / "withdrawn": target task, comment, source version |
| note | POST /task/N/comments with no mirror marker: the id made | "note" (posted on its own side): target task, comment |
| file | POST /file whose copy is attached to a task or comment at the end, with its bytes' SHA-256 | "file": target file, content |
| checklist item | POST /task/N/checklist (the id made) or /checklist/I | "checklist item": target task, item |
| field | POST /task/N: each field the world did not refuse, by its canonical key | "field change" / "assignee": target task, source field |
| status | POST /task/N with only a status: the hash of {"status": id} | "status": target task, content |
| anchor | POST /task with a record task's sourceObjectId, and comments on that task | the journal's anchors: task, comment |
| deleted | DELETE /comment/C (the sync never deletes) | (none: always missing) |

Every family is judged. A field or status write whose answer was lost, or whose run was killed,
is not written again when the next run finds it landed (plan.differs): its entries, held as it
was sent, are recorded by whichever run of the pair reads the value there first
(TaskWriter.find_landed), so those families too are matched exactly.

A comment's versions are compared by their number, not their text: a retried edit whose text or
time stamp differs is the same version crossing again. Fields are compared per (task, field), not
per value: a field written again with a newer value after a lost answer is the same field crossing.
An upload attached nowhere (its answer lost, the next attempt uploaded again) reached no person
and is counted apart (`unattached uploads`), not as a crossing. Pure: no I/O.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crosslink.journal.chain import Anchor, Entry, check_chain, content_hash
from schemas.links import Link
from workers.comment_policy import EARLIER_MARK, WITHDRAWN_MARK
from workers.state import record_source_id

FAMILIES = ("task created", "comment", "comment version", "note", "file", "checklist item", "field", "status",
            "anchor", "deleted", "other")
# An update's body keys that are not the canonical field they set (workers.canonical).
CANONICAL_KEYS = {"startDateTime": "start_date", "hasStartDate": "start_date", "endDateTime": "end_date",
                  "hasEndDate": "end_date"}
# Entry kinds that name no crossing: the link's own state, not something written to an account.
NOT_CROSSINGS = ("severed", "resumed", "mapping version", "anchor")
# A finding list keeps this many in full (all are counted).
SHOWN = 50

Key = tuple[Any, ...]


@dataclass
class JournalCheck:
    """What the journal check found: entries and crossings compared by family, and the chains."""

    entries: int = 0
    crossings: int = 0  # in the families judged
    missing: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)
    chains: dict[str, str] = field(default_factory=dict)  # link -> "ok" or the first failure
    by_family: dict[str, dict[str, int]] = field(default_factory=dict)
    unattached_uploads: int = 0

    @property
    def chain_ok(self) -> bool:
        return all(state == "ok" for state in self.chains.values())

    @property
    def ok(self) -> bool:
        return not self.missing and not self.extra and self.chain_ok

    def line(self) -> str:
        chain = "chain ok" if self.chain_ok else "chain FAILED"
        return (f"journal: {self.entries} entries, {self.crossings} crossings, missing {len(self.missing)}, "
                f"extra {len(self.extra)}, {chain}")

    def as_dict(self) -> dict[str, Any]:
        return {"entries": self.entries, "crossings": self.crossings, "missing": len(self.missing),
                "extra": len(self.extra), "chain_ok": self.chain_ok, "chains": self.chains,
                "families": self.by_family, "unattached_uploads": self.unattached_uploads,
                "missing_keys": self.missing[:SHOWN], "extra_keys": self.extra[:SHOWN],
                "ok": self.ok}


def robot_ids(links: Iterable[Link]) -> dict[str, set[int]]:
    """Each account's integration users' ids, from the links: whose writes are the sync's."""
    robots: dict[str, set[int]] = {}
    for link in links:
        for side in link.sides.values():
            robots.setdefault(side.account, set()).add(int(str(side.integration_user).removeprefix("user:")))
    return robots


def record_markers(links: Iterable[Link]) -> set[str]:
    """The sourceObjectIds of every link's record tasks (workers.anchors), on either side."""
    return {record_source_id(link.name, side) for link in links for side in link.sides}


def logged_crossings(account: str, requests: Iterable[Mapping[str, Any]], robots: set[int],
                     attached: Mapping[int, str], records: set[str] = frozenset()) -> tuple[set[Key], int]:
    """The crossings ACCOUNT's request log shows the robot (ROBOTS' ids) made, and the uploads
    attached nowhere. ATTACHED: the account's files attached to a task or comment, id -> SHA-256;
    RECORDS: the record tasks' sourceObjectIds (a record task and its comments are anchors)."""
    crossings: set[Key] = set()
    record_tasks: set[Any] = set()
    unattached = 0
    for entry in requests:
        write = entry.get("write")
        if not write or not write.get("applied") or entry.get("user") not in robots:
            continue
        key = _write_key(account, entry["method"], entry["path"], write)
        if key is None:
            continue
        if key[0] == "task created" and (write.get("body") or {}).get("sourceObjectId") in records:
            record_tasks.add(key[2])
            key = ("anchor", account, key[2])
        elif key[0] in ("comment", "note") and key[2] in record_tasks:
            key = ("anchor", account, key[2], key[3])
        elif key[0] == "file":
            if key[2] not in attached:
                unattached += 1
                continue
            key = (*key, attached[key[2]])
        crossings.update([key] if key[0] != "field" else _field_keys(key))
    return crossings, unattached


def _write_key(account: str, method: str, path: str, write: Mapping[str, Any]) -> Key | None:
    """The crossing one applied write made (fields: a key naming its task and body, expanded by
    _field_keys); None for what is no crossing of its own (attaching a file to a task)."""
    parts = path.strip("/").split("/")
    body = write.get("body") or {}
    made = write.get("id")
    if method == "DELETE" and parts[0] == "comment":
        return ("deleted", account, _int(parts[1]))
    if parts == ["task"]:
        return ("task created", account, made)
    if parts[0] == "task" and len(parts) == 2:
        refused = set(write.get("failures") or ())
        kept = {key: value for key, value in body.items() if key not in refused}
        if set(body) == {"status"}:
            return ("status", account, _int(parts[1]), _status_hash(_status(body["status"]))) if kept else None
        return ("field", account, _int(parts[1]), tuple(sorted(_canonical_keys(kept))))
    if parts[0] == "task" and len(parts) >= 3 and parts[2] == "comments":
        if len(parts) == 3:
            return ("comment" if body.get("sourceDataVersion") else "note", account, _int(parts[1]), made)
        html = str(body.get("description") or "")
        return ("comment version", account, _int(parts[1]), _int(parts[3]), 1 + html.count(EARLIER_MARK),
                WITHDRAWN_MARK in html)
    if parts[0] == "task" and len(parts) >= 3 and parts[2] == "checklist":
        return ("checklist item", account, _int(parts[1]), made if len(parts) == 3 else _int(parts[3]))
    if parts == ["file"]:
        return ("file", account, made)
    if parts[0] == "file" and parts[2:3] == ["attach"]:
        return None
    return ("other", account, method, path)


def _field_keys(key: Key) -> list[Key]:
    family, account, task, fields = key
    return [(family, account, task, name) for name in fields]


def recorded_crossings(link: Link, entries: Iterable[Entry], anchors: Iterable[Anchor] = ()) -> set[Key]:
    """The crossings LINK's journal ENTRIES record, as keys the log's are compared with (an entry
    of the link's own state, a side severed or resumed, records none), and its ANCHORS (each a
    record task and a comment on it)."""
    keys = {key for entry in entries if entry.kind not in NOT_CROSSINGS for key in _entry_keys(link, entry)}
    for anchor in anchors:
        account = link.sides[anchor.side].account
        keys |= {("anchor", account, anchor.task), ("anchor", account, anchor.task, anchor.comment)}
    return keys


def _entry_keys(link: Link, entry: Entry) -> list[Key]:
    source, target = entry.source, entry.target
    # A note is posted in its own side's account; everything else crosses to the other side's.
    account = link.sides[entry.side if entry.kind == "note" else link.other(entry.side)].account
    task = _int(target.get("task"))
    if entry.kind == "task created":
        return [("task created", account, task)]
    if entry.kind in ("comment", "note"):
        return [(entry.kind, account, task, _int(target.get("comment")))]
    if entry.kind in ("comment version", "withdrawn"):
        return [("comment version", account, task, _int(target.get("comment")), _int(source.get("version")),
                 entry.kind == "withdrawn")]
    if entry.kind == "file":
        return [("file", account, _int(target.get("file")), entry.content)]
    if entry.kind == "checklist item":
        return [("checklist item", account, task, _int(target.get("item")))]
    if entry.kind in ("field change", "assignee"):
        # One field an entry (source "field"), or, as recorded before, the update's ("fields").
        names = [source["field"]] if source.get("field") else source.get("fields") or ()
        return [("field", account, task, name) for name in names]
    if entry.kind == "status":
        # The status's hash (content), or, as recorded before, the status the target names.
        moved = _status_hash(_int(target["status"])) if "status" in target else entry.content
        return [("status", account, task, moved[:12])]
    return [("other", account, entry.kind, task)]


def compare(crossings: set[Key], recorded: set[Key], check: JournalCheck) -> None:
    """Fill CHECK with what CROSSINGS (from the log) and RECORDED (from the journal) do not share,
    by family."""
    check.crossings += len(crossings)
    missing, extra = sorted(crossings - recorded, key=repr), sorted(recorded - crossings, key=repr)
    check.missing += [_shown(key) for key in missing]
    check.extra += [_shown(key) for key in extra]
    counts = {"crossings": Counter(key[0] for key in crossings), "entries": Counter(key[0] for key in recorded),
              "missing": Counter(key[0] for key in missing), "extra": Counter(key[0] for key in extra)}
    for family in FAMILIES:
        row = {what: counter.get(family, 0) for what, counter in counts.items()}
        if any(row.values()):
            check.by_family[family] = row


def check_chains(links: Iterable[Link], journals: Mapping[str, tuple[list[Entry], list[Any]]],
                 check: JournalCheck) -> None:
    """Each link's chain, whole and unaltered (JOURNALS: link -> (entries, anchors))."""
    for link in links:
        entries, anchors = journals[link.name]
        result = check_chain(link.name, entries, anchors)
        check.chains[link.name] = "ok" if result.ok else str(result.failures[0])


def journal_check(links: list[Link], requests: Mapping[str, list[Mapping[str, Any]]],
                  attached: Mapping[str, Mapping[int, str]],
                  journals: Mapping[str, tuple[list[Entry], list[Any]]]) -> JournalCheck:
    """The whole check: REQUESTS and ATTACHED per account (the emulator's log and final files),
    JOURNALS per link (its entries and anchors)."""
    check = JournalCheck()
    robots, records = robot_ids(links), record_markers(links)
    crossings: set[Key] = set()
    for account, logged in requests.items():
        found, unattached = logged_crossings(account, logged, robots.get(account, set()),
                                             attached.get(account, {}), records)
        crossings |= found
        check.unattached_uploads += unattached
    recorded: set[Key] = set()
    for link in links:
        entries, anchors = journals[link.name]
        recorded |= recorded_crossings(link, entries, anchors)
        check.entries += len(entries)
    compare(crossings, recorded, check)
    check_chains(links, journals, check)
    return check


def _shown(key: Key) -> str:
    return " ".join(str(part) for part in key)


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _status(value: Any) -> int | None:
    return _int(value.get("id")) if isinstance(value, Mapping) else _int(value)


def _status_hash(status: int | None) -> str:
    """What a status entry holds of a move to STATUS: the hash of its content (its first 12)."""
    return content_hash({"status": status})[:12]


def _canonical_keys(body: Mapping[str, Any]) -> set[str]:
    """The canonical fields (workers.canonical) an update's BODY sets: a custom field by its id."""
    keys: set[str] = set()
    for key, value in body.items():
        if key == "customFieldData":
            keys |= {f"cf:{item['field']['id']}" for item in value or ()
                     if isinstance(item, Mapping) and isinstance(item.get("field"), Mapping)}
        else:
            keys.add(CANONICAL_KEYS.get(key, key))
    return keys
