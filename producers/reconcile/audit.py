"""The comment audit: finding comments edited or deleted with no event to say so.

What the feeds cannot see: an edited or deleted comment changes neither filter 79's dates nor a
comment date (the emulator agrees). The comment audit (``audit_comments``) finds those: after
each poll it lists the comments of a few tasks whose people's comments we mirrored, in a
rotation over all of them, and queues a run naming each comment whose text or deletion no
longer matches the fingerprint the last run mirrored (crosslink.queue.names.comment_fingerprint). How
many tasks each audit may list is the budget's (producers.reconcile.budget.audit_allowance). A
full turn over an account's N commented tasks takes about N / (AUDIT_SHARE x quota) days: an
edit whose webhook was lost is mirrored within that turn.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import redis

from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.names import COMMENT_PRINTS_KEY, comment_fingerprint
from planfix.client import PlanfixClient
from planfix.errors import NotFound
from producers.reconcile.accounts import PollAccount
from producers.reconcile.records import AUDIT_POSITION_KEY, LAST_POLL_TTL_S, key

log = logging.getLogger("crosslink.reconcile")

# What the audit reads of a comment: what its fingerprint covers, and who wrote it.
AUDIT_COMMENT_FIELDS = "id,description,owner,isDeleted"


# ----------------------------------------------------------------------------------------------
# The comment audit (pure)

def audit_round(candidates: Iterable[str], after: str | None, count: int) -> list[str]:
    """The next COUNT of CANDIDATES (their sorted order) after AFTER, wrapping round once; the
    rotation survives candidates coming and going, as it keeps a key, not an index."""
    ordered = sorted(set(candidates))
    if count <= 0 or not ordered:
        return []
    start = 0 if after is None else next((i for i, c in enumerate(ordered) if c > after), len(ordered))
    rotated = ordered[start:] + ordered[:start]
    return rotated[:count]


def edited_comments(comments: Iterable[Mapping[str, Any]], prints: Mapping[int, str], robot: str) -> tuple[int, ...]:
    """The comments (of one task, as listed with AUDIT_COMMENT_FIELDS, deleted ones included)
    whose text or deletion differs from the fingerprint the last run mirrored (PRINTS): edited or
    deleted since, with no run to see it. Comments without a fingerprint (new ones: the feeds
    see those; mirrors; our ROBOT's) are not for the audit."""
    found = []
    for comment in comments:
        number = int(comment["id"])
        owner = comment.get("owner")
        if number not in prints or (isinstance(owner, Mapping) and owner.get("id") == robot):
            continue
        now = comment_fingerprint(comment.get("description") or "", bool(comment.get("isDeleted")))
        if now != prints[number]:
            found.append(number)
    return tuple(found)


# ----------------------------------------------------------------------------------------------
# The comment audit (I/O)

@dataclass
class AuditReport:
    account: str
    tasks: int = 0
    requests: int = 0
    # (link, side, task, comment ids) of every run queued.
    runs: list[tuple[str, str, int, tuple[int, ...]]] = field(default_factory=list)


def audit_candidates(group: PollAccount, store: redis.Redis) -> dict[str, tuple[str, str, int]]:
    """Every task of GROUP's link sides with people's comments mirrored: its fingerprints' key ->
    (link, side, task)."""
    sides = {(member.link, member.side) for member in group.members}
    found = {}
    prefix = COMMENT_PRINTS_KEY.split("{", 1)[0]
    for raw in store.scan_iter(match=f"{prefix}*", count=1000):
        name = raw.decode() if isinstance(raw, bytes) else str(raw)
        link, side, task = name[len(prefix):].rsplit(":", 2)
        if (link, side) in sides and task.isdigit():
            found[name] = (link, side, int(task))
    return found


def audit_comments(group: PollAccount, client: PlanfixClient, enqueuer: Enqueuer, store: redis.Redis,
                   count: int) -> AuditReport:
    """List the comments of the next COUNT tasks of GROUP's rotation and queue a run for each
    task with comments edited or deleted since they were mirrored (naming them). The position
    moves past each task once it is looked at, so a Planfix error stops the audit where it was;
    a task gone is passed over."""
    report = AuditReport(group.key)
    candidates = audit_candidates(group, store)
    position_key = key(AUDIT_POSITION_KEY, group.key)
    position = store.get(position_key)
    after = position.decode() if isinstance(position, bytes) else position
    for name in audit_round(candidates, after, count):
        link, side, task = candidates[name]
        report.requests += 1
        try:
            comments = list(client.list_task_comments(task, fields=AUDIT_COMMENT_FIELDS, type_list="All"))
        except NotFound:
            comments = []  # the task is gone: nothing of it to mirror
        prints = {int(k): (v.decode() if isinstance(v, bytes) else str(v)) for k, v in store.hgetall(name).items()}
        edited = edited_comments(comments, prints, group.robot)
        for comment in edited:
            enqueuer.sync(link, side, task, f"comment_added:{comment}")
        if edited:
            report.runs.append((link, side, task, edited))
            log.info("comment audit: %d comment(s) of task %s edited or deleted with no event", len(edited), task,
                     extra={"account": group.key, "link": link, "side": side})
        report.tasks += 1
        store.set(position_key, name, ex=LAST_POLL_TTL_S)
    return report
