"""What an operator asks of the journal: an item's history, an export either party can keep, an
anchor now, and an export checked against the anchors in the live accounts.

`crosslink journal show` lists a link's entries (or one task's, across both sides: what crossed
from it and into it, with the ids on each side, the delivery receipts); `export` writes the
self-contained bundle that `crosslink journal verify` checks offline (crosslink.journal.bundle).
`anchor` posts the journal's head on the link's record task in both accounts now, as the
workers do daily (workers.anchors); `verify --live` then reads each anchor the bundle names back
from its account: the comment must state the same sequence and hash, and the bundle's chain must
have that hash there. Only --live talks to Planfix; a bundle is otherwise checked offline.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crosslink.base.settings import Settings, get_settings
from crosslink.journal.bundle import build_bundle, write_bundle
from crosslink.journal.chain import Anchor, Entry
from crosslink.journal.store import Journal, journal_url, utc_now
from crosslink.operations.session import operator_session
from planfix.client import PlanfixClient
from planfix.errors import NotFound
from schemas.links import Link
from workers.anchors import MANUAL, Anchoring, AnchorParts, anchor_link, stated_head
from workers.idempotency import WriteOnce
from workers.state import LinkState


def open_journal(links_path: str | None = None, settings: Settings | None = None) -> Journal:
    """The deployment's journal: CROSSLINK_JOURNAL_URL, else the SQLite file beside the links file."""
    settings = settings or get_settings()
    return Journal(journal_url(settings, links_path))


def item_history(journal: Journal, link: str, side: str | None = None, task: int | None = None) -> list[Entry]:
    """LINK's entries, or SIDE's task TASK's (what crossed from it, and into it from the other side)."""
    if task is not None and side is None:
        raise ValueError("a task number needs its side (partner or client): numbers repeat across accounts")
    return journal.entries(link, side=side, task=task)


def export_journal(journal: Journal, link: str, out: Path) -> dict:
    """Write LINK's bundle (entries, anchors, file hashes, manifest) to OUT; its manifest."""
    bundle = build_bundle(link, journal.entries(link), journal.anchors(link), utc_now())
    write_bundle(bundle, out)
    return bundle["manifest"]


def entry_line(entry: Entry) -> str:
    """One entry as a line for people: sequence, time, kind, from which ids to which, hashes."""
    source = " ".join(f"{key} {value}" for key, value in sorted(entry.source.items()))
    target = " ".join(f"{key} {value}" for key, value in sorted(entry.target.items()))
    arrow = f"{entry.side} {source} -> {target}" if target else f"{entry.side} {source}"
    return f"{entry.seq:>6}  {entry.at}  {entry.kind:<16} {arrow}  content {entry.content[:12]}  " \
           f"rules {entry.rules[:12]}  hash {entry.hash[:12]}"


# --- anchors ----------------------------------------------------------------------------------


def anchor_now(link: Link, links_path: str | None = None) -> Anchoring:
    """Post LINK's journal head in both accounts now (reason "manual"; "setup" or "rules changed"
    when the link's rules are recorded first: workers.anchors.anchor_link). LINKS_PATH: where
    the journal is, when CROSSLINK_JOURNAL_URL names none."""
    journal = open_journal(links_path)
    try:
        with operator_session(link) as session:
            parts = AnchorParts(session.clients, WriteOnce(session.store), LinkState(session.store, link.name), journal)
            return anchor_link(parts, link, MANUAL)
    finally:
        journal.close()


def anchoring_lines(link: Link, result: Anchoring) -> list[str]:
    """Where the head was anchored, per side, for people."""
    if result.head is None:
        return [f"link {link.name}: the journal has no entry yet: nothing to anchor"]
    lines = [f"link {link.name}: journal head #{result.head[0]} sha256:{result.head[1]} ({result.reason})"]
    held = {anchor.side: anchor for anchor in result.anchors}
    for side in link.sides:
        if side in held:
            anchor = held[side]
            how = "posted now" if side in result.posted else f"posted before, at {anchor.at}"
            lines.append(f"{side}: record task #{anchor.task}, comment #{anchor.comment} ({how})")
        elif side in result.failures:
            lines.append(f"{side}: FAILED: {result.failures[side]}")
        else:
            lines.append(f"{side}: skipped: {result.skipped.get(side, 'not anchored')}")
    return lines


@dataclass
class LiveSide:
    """What the live check of one side found: how many of the bundle's anchors it CHECKED, the
    MISMATCHES, and how many heads the account holds past the bundle's (LATER: posted after it
    was exported, or it was cut off: the manifest's exported_at tells which)."""

    side: str
    checked: int = 0
    mismatches: list[str] = field(default_factory=list)
    later: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


def verify_live(path: Path, link: Link) -> dict[str, LiveSide]:
    """Check the anchors of the bundle at PATH (verified offline first: crosslink.journal.bundle)
    against the record tasks of LINK's live accounts, per side."""
    bundle = json.loads(Path(path).read_text(encoding="utf-8"))
    anchors = [Anchor(**item) for item in bundle["anchors"]]
    chain = {int(item["seq"]): str(item["hash"]) for item in bundle["entries"]}
    with operator_session(link) as session:
        state = LinkState(session.store, link.name)
        return {side: live_side(side, [anchor for anchor in anchors if anchor.side == side], chain,
                                session.clients[side], state.record_task(side))
                for side in link.sides}


def live_side(side: str, anchors: list[Anchor], chain: Mapping[int, str], client: PlanfixClient,
              record: int | None) -> LiveSide:
    """SIDE's ANCHORS (the bundle's) against the comments of the record tasks they name (and
    RECORD, the record task Redis knows), read through CLIENT; CHAIN: the bundle's hash by sequence.
    Any other head the account holds is checked against the chain too."""
    verdict = LiveSide(side)
    comments: dict[int, Mapping[str, Any]] = {}
    for task in sorted({anchor.task for anchor in anchors if anchor.task is not None} | {record} - {None}):
        try:
            for comment in client.list_task_comments(task, fields="id,description,isDeleted,sourceObjectId",
                                                     type_list="All"):
                comments[int(comment["id"])] = {**comment, "task": task}
        except NotFound:
            verdict.mismatches.append(f"record task #{task} is gone from the {side} account")
    for anchor in anchors:
        verdict.checked += 1
        problem = anchor_problem(anchor, comments.get(anchor.comment) if anchor.comment is not None else None, chain)
        if problem:
            verdict.mismatches.append(problem)
    named = {anchor.comment for anchor in anchors}
    verdict.mismatches += other_heads(verdict, _posted(comments, named), chain)
    return verdict


def anchor_problem(anchor: Anchor, comment: Mapping[str, Any] | None, chain: Mapping[int, str]) -> str | None:
    """What is wrong with ANCHOR, given the COMMENT it names as read live and the bundle's CHAIN;
    None when the comment states the anchor's head and the chain has that hash there."""
    where = f"anchor #{anchor.seq} (task #{anchor.task}, comment #{anchor.comment})"
    if comment is None:
        return f"{where}: no such comment on the record task"
    if comment.get("isDeleted"):
        return f"{where}: the comment was deleted"
    stated = stated_head(comment.get("description"))
    if stated is None:
        return f"{where}: the comment states no journal head"
    if stated != (anchor.seq, anchor.hash):
        return (f"{where}: the account states #{stated[0]} sha256:{stated[1]}, the bundle #{anchor.seq} "
                f"sha256:{anchor.hash}")
    if chain.get(anchor.seq) != anchor.hash:
        return f"{where}: the bundle's chain has sha256:{chain.get(anchor.seq)} at #{anchor.seq}"
    return None


def _posted(comments: Mapping[int, Mapping[str, Any]], named: Iterable[int | None]) -> list[Mapping[str, Any]]:
    """The heads Crosslink posted (a marker no person can set) among COMMENTS the bundle does not name."""
    skip = set(named)
    return [comment for number, comment in sorted(comments.items())
            if number not in skip and comment.get("sourceObjectId") and not comment.get("isDeleted")]


def other_heads(verdict: LiveSide, comments: list[Mapping[str, Any]], chain: Mapping[int, str]) -> list[str]:
    """Problems with the heads in COMMENTS, which the bundle names no anchor of: one within the
    chain must have its hash; one past it is kept in VERDICT.later."""
    last = max(chain, default=0)
    problems = []
    for comment in comments:
        stated = stated_head(comment.get("description"))
        if stated is None:
            continue
        if stated[0] > last:
            verdict.later.append(stated)
        elif chain.get(stated[0]) != stated[1]:
            problems.append(f"comment #{comment['id']} on task #{comment['task']} states #{stated[0]} "
                            f"sha256:{stated[1]}, the bundle's chain has sha256:{chain.get(stated[0])} there")
    return problems


def live_lines(sides: Mapping[str, LiveSide]) -> list[str]:
    """Per side, OK or MISMATCH with what differs, for people."""
    lines = []
    for side, verdict in sides.items():
        later = (f"; {len(verdict.later)} later head(s) posted there, the newest #{max(verdict.later)[0]}"
                 if verdict.later else "")
        if verdict.ok:
            what = f"{verdict.checked} anchor(s) match" if verdict.checked else "no anchors in the bundle"
            lines.append(f"{side}: OK, {what}{later}")
        else:
            lines.append(f"{side}: MISMATCH, {len(verdict.mismatches)} problem(s) in {verdict.checked} anchor(s)"
                         f"{later}")
            lines += [f"  {problem}" for problem in verdict.mismatches]
    return lines
