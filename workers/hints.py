"""What a sync run must read, decided from the events it coalesced: the API-economy rules.

Planfix allows one request per second per account, so a run reads only what its events point
at instead of everything a task carries. The decisions are pure; workers.sync asks them.

A run's hints are the webhook events coalesced into it (crosslink.queue.names.event_hint): a task
created or changed, a comment added (with its id), or "full" for anything that is not a webhook
(the reconciliation poller, backfill, replays) and for a job whose hints were lost.

Assumptions, each with what backs it up:
- A comment-only run (only comment_added hints, and maybe the poller's CHECKLIST_HINT) on a
  task already mirrored needs no task read: the comment names its task (read in the same
  request, and a comment of another task is rejected, never mirrored: workers.sync), and the
  task's own changes come with their own task events.
- New comments always come with a comment_added event; when one is lost, the poller's filter
  79 ("changed or commented") queues a full run. So a task event lists comments only when it
  cannot be explained otherwise (below) or when several task events were coalesced (a comment
  edit or deletion arrives as a task event, and the poller cannot see those).
- A task event is *explained* when the task read shows a mapped field changed against the
  source snapshot, and not to a value of the sync's own writes that the snapshot could not yet
  take (a write Planfix queued and applied late, or one a failed run had sent:
  field_diff.agreed_with_echoes), nor a key whose write Planfix still holds queued (workers.sync
  carries it again: it is ours, no person's). An
  unexplained one (nothing mapped changed) was a checklist, a card file, a comment edit or an
  unmapped field: the run then looks at comments, checklist and card files.
  The card's files come with the task read (workers.canonical), so every run that read the
  task carries them. The checklist is one more list: a run looks at it when its event is not
  explained, or several task events were coalesced, or a poll asked for it. One explained
  event leaves it unseen: a checklist change made before the field edit, with its webhook lost,
  shows only in the task's dateOfLastUpdate, which the edit moved on. The run then records the
  stamp as seen but for the checklist (crosslink.queue.names.stamp_seen), and the poller has the
  checklist alone looked at a period later (CHECKLIST_HINT: one list, no task read), once for
  all of a period's edits of the task, rather than each edit's run paying a list at once (a
  backlog of one client's edits then drained at half the pace: the client's account read two
  for every write).
- The counterpart is taken from its snapshot, not read again, only when nothing can have
  changed it unseen that matters: it has a snapshot, no event of its own is waiting, no write
  to it is still queued by Planfix (202), the run is not a full look, and every field the
  source changed is one the source wins anyway (no owner on the other side). A person's edit
  on the counterpart whose webhook is still in flight then loses exactly as it would to an
  owner-less "last event wins" conflict (workers.conflict).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from crosslink.queue.names import CHECKLIST_HINT, FULL_HINT

TASK_EVENTS = ("task_created", "task_changed")
COMMENT_PREFIX = "comment_added:"
# Set by the job itself when it re-queues a run that waited for its turn mid-way: RESUME, the
# run's reads were kept (workers.tasks) and stand while no new event came; REREAD, it
# had already written, so the counterpart's snapshot is out of date and must not stand in.
RESUME = "resume"
REREAD = "reread"
# Up to this many hinted comments are read one by one (GET /comment/{id}); more, or a task
# event, and one list call is cheaper.
MAX_COMMENT_GETS = 2


@dataclass(frozen=True)
class Hints:
    """The coalesced events of one run."""

    full: bool = True
    task_events: int = 0
    comments: tuple[int, ...] = ()
    resume: bool = False
    reread: bool = False
    # The poller asks for the checklist to be looked at (CHECKLIST_HINT).
    checklist: bool = False

    @classmethod
    def parse(cls, raw: Iterable[str]) -> "Hints":
        """Hints from their stored form; none at all (a job from before hints, a lost list) or
        anything unknown asks for a full look, which is always safe."""
        items = list(raw)
        if not items:
            return cls(full=True)
        full, task_events, comments, resume, reread, checklist = False, 0, [], False, False, False
        for item in items:
            if item == RESUME:
                resume = True
            elif item == CHECKLIST_HINT:
                checklist = True
            elif item == REREAD:
                reread = True
            elif item in TASK_EVENTS:
                task_events += 1
            elif item.startswith(COMMENT_PREFIX) and item[len(COMMENT_PREFIX):].isdigit():
                comment = int(item[len(COMMENT_PREFIX):])
                if comment not in comments:
                    comments.append(comment)
            else:
                full = True
        return cls(full=full, task_events=task_events, comments=tuple(comments), resume=resume,
                   reread=reread, checklist=checklist)

    def encode(self) -> list[str]:
        """The stored form again (a re-queued job carries its hints along)."""
        flags = [RESUME] * self.resume + [REREAD] * self.reread
        if self.full:
            return [FULL_HINT, *flags]
        return (["task_changed"] * self.task_events + [f"{COMMENT_PREFIX}{c}" for c in self.comments]
                + [CHECKLIST_HINT] * self.checklist + flags)

    def merge(self, newer: "Hints") -> "Hints":
        """These hints with NEWER events': new events make kept reads stale (no resume)."""
        reread = self.reread or newer.reread
        if self.full or newer.full:
            return Hints(full=True, reread=reread)
        comments = tuple(dict.fromkeys(self.comments + newer.comments))
        return Hints(full=False, task_events=self.task_events + newer.task_events, comments=comments,
                     reread=reread, checklist=self.checklist or newer.checklist)

    def waited(self, wrote: bool) -> "Hints":
        """The hints of a run re-queued for its turn mid-way (WROTE: it had written already)."""
        return Hints(full=self.full, task_events=self.task_events, comments=self.comments,
                     resume=True, reread=self.reread or wrote, checklist=self.checklist)

    @property
    def reads_no_task(self) -> bool:
        """Told of new comments or of a checklist to look at (CHECKLIST_HINT), and of no task
        event: such a run of a mirrored task needs no task read (see the assumptions)."""
        return not self.full and self.task_events == 0 and (bool(self.comments) or self.checklist)


@dataclass(frozen=True)
class Reads:
    """What a run reads besides the source task (the card's files come with it)."""

    comments: bool
    checklist: bool


def extra_reads(hints: Hints, explained: bool, has_comments: bool = True) -> Reads:
    """What else a run that read its source task must look at (see the module's assumptions).

    EXPLAINED: the read showed a change, not an echo of the sync's own writes, that explains
    the task's events.
    HAS_COMMENTS: the task has had a comment (its dateOfLastComment is set); one that never had
    any has none to edit or delete, and a new one comes with its own comment event.
    """
    if hints.full:
        return Reads(comments=True, checklist=True)
    return Reads(comments=bool(hints.comments) or (has_comments and (not explained or hints.task_events > 1)),
                 checklist=not explained or hints.task_events > 1 or hints.checklist)


def comment_reads(hints: Hints, listing: bool) -> tuple[int, ...] | None:
    """The comment ids to read one by one, or None for one list of all the task's comments."""
    if listing or hints.full or len(hints.comments) > MAX_COMMENT_GETS:
        return None
    return hints.comments


def may_trust_snapshot(*, hints: Hints, has_snapshot: bool, counterpart_pending: bool,
                       counterpart_queued: bool, changed_owners: Iterable[str | None],
                       source_side: str) -> bool:
    """Whether the counterpart's snapshot may stand in for reading it (see the assumptions).

    CHANGED_OWNERS: the owner (a side, or None) of each field the source changed.
    """
    if hints.full or hints.reread or not has_snapshot or counterpart_pending or counterpart_queued:
        return False
    return all(owner is None or owner == source_side for owner in changed_owners)
