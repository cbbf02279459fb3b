"""What each link side's run of a changed task is queued for, and what the poll remembers of the
task from one poll to the next (the "seen" record): pure decisions, no I/O.

What a poll queues reads only what the poll says changed (workers.hints), decided per link side
by comparing the task's change stamp (dateOfLastUpdate|dateOfLastComment) with the last one known
(``classify``):
- a stamp a sync run recorded as synced (crosslink.queue.names.record_synced_stamp: the run looked at
  everything the stamp may stand for) is not queued: a webhook already brought it;
- a stamp a run recorded as seen but for the checklist (crosslink.queue.names.BUT_CHECKLIST: one field
  edit's run, on a link that carries the checklist) is queued with ``CHECKLIST_HINT``: one
  checklist list, no task read, after which the stamp counts as whole; one whose comment date
  moved since gets the hint with its comments;
- only the comment date moved: the comment feed (filter 3000, the same window) names the new
  comments, and the run reads just those (``comment_added:<id>``); comments our robot wrote (the
  sync's own mirrors and notes, which the worker skips anyway), comments an earlier poll
  already named for the same stamp (see the "seen" record), and comments a run already
  mirrored (their fingerprints are kept for the audit) queue nothing. The comment feed
  is requested only in a poll that found such a task: filter 79 already lists commented tasks,
  and the ids save the run a task read and three lists (comments, checklist, files) for one
  request shared by the whole poll;
- the task changed: two task events (``POLL_TASK_HINTS``). A poll's change stands for any
  number of events, as coalesced webhooks do: the run reads the task, and lists checklist and
  files when no mapped field explains the change. A run explained by a field after several
  events records no stamp, so the next poll queues the task once more and that run, finding
  nothing mapped changed, looks at checklist and files: a checklist tick lost together with a
  field edit is still synced, one period later;
- nothing known about the task on that side (a creation whose webhook was lost, a task untouched
  for SYNCED_STAMP_TTL_S): a full look, as a first look must see everything.

Why a "seen" record: with the overlap a change is found by two or three polls in a row. A stamp
an earlier poll queued, when that poll came safely after the stamp (STAMP_SETTLE_S), is queued
again only while no run recorded it and fewer than REQUEUE_LIMIT polls queued it. A stamp
without seconds (or unparseable) is never taken as seen or synced: the task is queued, which
costs a no-op sync but never loses a change. The record also keeps the comments polls named
for the stamp: a run told of comments reads just those, never the task, so it records no
stamp, and every poll until the stamp settled would name them again, each a comment read that
finds nothing new (with a poll every few seconds, a third of an account's requests). A poll
of the same stamp names only comments not named yet, and queues nothing when none is left; a
new stamp (another comment, a task change) starts afresh. A record written before comments
were kept names none.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crosslink.queue.names import BUT_CHECKLIST, CHECKLIST_HINT, FULL_HINT, known_stamp
from producers.reconcile.stamps import STAMP_SETTLE_S, Stamp, exact_epoch

# A stamp no run recorded (the run found the task out of scope, gone, or failed) is queued by at
# most this many polls: the second look is the one that reads checklist and files.
REQUEUE_LIMIT = 2
# What a poll-queued run of a changed task is told: two task events (see the module docstring).
POLL_TASK_HINTS = ("task_changed", "task_changed")
# What a poll-queued run of a commented task is told, followed by the comment's id.
COMMENT_HINT = "comment_added:"


@dataclass(frozen=True)
class Seen:
    """A poll at POLLED_AT found the task with STAMP; QUEUED polls queued that stamp, the last
    one as KIND (SKIP when none did); COMMENTS: the comments polls named to runs for that very
    stamp (``comment_added``), which a later poll of the stamp does not name again."""

    stamp: str
    polled_at: float
    queued: int = 1
    kind: str = "task"
    comments: frozenset[int] = frozenset()


# What a link side's run of a task is queued for (classify).
SKIP = "skip"          # nothing to do: a run recorded the stamp, or polls queued it enough
FULL = "full"          # nothing known about the task on that side: a full look
TASK = "task"          # the task changed: POLL_TASK_HINTS
COMMENT = "comment"    # only the comment date moved: the comment feed names the comments
ECHO = "echo"          # no new comment needs a run: our robot's, or ones already named for the stamp
CHECKLIST = "checklist"  # all but the checklist was seen at the stamp: CHECKLIST_HINT


@dataclass(frozen=True)
class Verdict:
    kind: str
    # COMMENT: comments after this time are the new ones (None: every comment in the window).
    comments_since: float | None = None
    # COMMENT: comments earlier polls named to runs for this very stamp (Seen.comments): the
    # runs read them, so naming them again would cost a read each and find nothing new.
    named: frozenset[int] = frozenset()
    # COMMENT: the update date was seen but for the checklist (BUT_CHECKLIST): the run looks
    # at the checklist too.
    checklist: bool = False


def settled(before: Seen, stamp: Stamp) -> bool:
    """Whether BEFORE's poll came safely after STAMP (STAMP_SETTLE_S): then nothing it named can
    hide a later change behind an equal stamp."""
    return (stamp.epoch is not None and before.stamp == stamp.text
            and before.polled_at >= stamp.epoch + STAMP_SETTLE_S)


def classify(stamp: Stamp, synced: str | None, before: Seen | None) -> Verdict:
    """What a link side's run of a task found with STAMP is queued for.

    SYNCED: the stamp the side's last run recorded (crosslink.queue.names.record_synced_stamp), if any,
    maybe seen but for the checklist (BUT_CHECKLIST); BEFORE: what earlier polls of the
    account saw of the task, if any.
    Assumes a stamp with seconds changes with every change but one in the same second; an
    inexact stamp says nothing and is always queued. A COMMENT verdict for the stamp BEFORE
    polls queued carries the comments they named (``named``); any other stamp starts afresh.
    A stamp queued REQUEUE_LIMIT times, the last time safely after it, is not queued again.
    """
    partial = synced is not None and synced.startswith(BUT_CHECKLIST)
    if stamp.epoch is None:
        return Verdict(TASK)
    if synced == stamp.text:
        return Verdict(SKIP)
    same = before is not None and before.stamp == stamp.text
    synced = known_stamp(synced)
    given_up = same and before is not None and settled(before, stamp) and before.queued >= REQUEUE_LIMIT
    if synced == stamp.text:  # seen but for the checklist (whole ones were skipped above)
        return Verdict(CHECKLIST) if not given_up else Verdict(SKIP)
    if same and before is not None:
        if given_up or (settled(before, stamp) and before.kind in (COMMENT, ECHO, SKIP) and not partial):
            return Verdict(SKIP)
        if before.kind in (COMMENT, ECHO):
            known = synced
            return Verdict(COMMENT, _comment_epoch(known) if known is not None else None, before.comments,
                           checklist=partial)
        return Verdict(TASK)
    known = synced if synced is not None else (before.stamp if before is not None else None)
    if known is None:
        return Verdict(FULL)
    known_update, _, known_comment = known.partition("|")
    if known_update == stamp.update and known_comment != stamp.comment:
        return Verdict(COMMENT, _comment_epoch(known), checklist=partial)
    return Verdict(TASK)


def _comment_epoch(stamp_text: str) -> float | None:
    return exact_epoch(stamp_text.partition("|")[2])


@dataclass(frozen=True)
class FeedComment:
    """A comment from the account's comment feed: its id, its owner ("user:N"), when (exact)."""

    id: int
    owner: str | None
    at: float | None


def comment_hints(verdict: Verdict, comments: Iterable[FeedComment], robot: str) -> tuple[str, ...]:
    """The hints of a COMMENT verdict, given the feed's comments of that task.

    The comments after ``verdict.comments_since`` (all, without it; any whose time is not
    known) are the new ones (one in the same second as the known last comment would not have
    moved the stamp either). People's comments are named, but not those an earlier poll named
    for the same stamp (``verdict.named``: their runs read them); when every new one is our
    ROBOT's (the sync's mirrors and notes, which the worker skips) or already named, there is
    nothing to queue; when the feed names none (deleted since, or not visible) the task-event
    hints make the run look itself.
    """
    new = [c for c in comments
           if verdict.comments_since is None or c.at is None or c.at > verdict.comments_since]
    people = sorted({c.id for c in new if c.owner != robot} - verdict.named)
    if people:
        return tuple(f"{COMMENT_HINT}{number}" for number in people)
    if new:
        return ()
    return POLL_TASK_HINTS


def named_comments(hints: Iterable[str]) -> frozenset[int]:
    """The comments HINTS name to a run (comment_hints)."""
    return frozenset(int(hint[len(COMMENT_HINT):]) for hint in hints if hint.startswith(COMMENT_HINT))


def hints_for(verdict: Verdict, comments: Iterable[FeedComment], robot: str) -> tuple[str, ...]:
    """The hints a link side's run is queued with (empty: not queued)."""
    if verdict.kind == FULL:
        return (FULL_HINT,)
    if verdict.kind == TASK:
        return POLL_TASK_HINTS
    if verdict.kind == CHECKLIST:
        return (CHECKLIST_HINT,)
    if verdict.kind == COMMENT:
        hints = comment_hints(verdict, comments, robot)
        # A task run (POLL_TASK_HINTS) looks at the checklist itself.
        return hints + (CHECKLIST_HINT,) if verdict.checklist and hints != POLL_TASK_HINTS else hints
    return ()


def next_seen(stamp: Stamp, before: Seen | None, queued_kinds: Iterable[str], now: float,
              named: Iterable[int] = ()) -> Seen:
    """What to remember of a task found with STAMP at NOW, whose link sides were queued as
    QUEUED_KINDS (empty: none was), naming the comments NAMED. A task queued for any side counts
    one more queue of the stamp; a side's TASK or FULL run outweighs a COMMENT one (it may need
    the second look). The comments named add to those named before for the same stamp; a new
    stamp starts afresh. They are kept per task, not per link side: a side the poll did not name
    a comment to had it already (no newer than the side's synced stamp, or than the stamp an
    earlier poll queued to it)."""
    kinds = set(queued_kinds)
    same = before is not None and before.stamp == stamp.text
    if not kinds:
        if same and before is not None:
            return before
        return Seen(stamp.text, now, 0, SKIP)
    kind = TASK if kinds & {TASK, FULL, CHECKLIST} else (COMMENT if COMMENT in kinds else ECHO)
    count = (before.queued if same and before is not None else 0) + (kind != ECHO)
    comments = (before.comments if same and before is not None else frozenset()) | frozenset(named)
    return Seen(stamp.text, now, count, kind, comments)


def seen_record(seen: Seen) -> str:
    """SEEN as stored in SEEN_KEY: [stamp, polled_at, queued, kind], then the comments named
    only when there are any (a record without them reads as none named: parse_seen)."""
    fields: list[Any] = [seen.stamp, seen.polled_at, seen.queued, seen.kind]
    if seen.comments:
        fields.append(sorted(seen.comments))
    return json.dumps(fields)


def parse_seen(raw: str | bytes) -> Seen | None:
    """A stored seen record (seen_record, or one written before comments were kept: none
    named); None when damaged, which only means one more sync."""
    try:
        stamp, polled_at, queued, kind, *rest = json.loads(raw)
        comments = frozenset(int(number) for number in rest[0]) if rest else frozenset()
        return Seen(str(stamp), float(polled_at), int(queued), str(kind), comments)
    except (ValueError, TypeError):
        return None

