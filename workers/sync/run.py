"""One sync run: bring the counterpart of one task up to date with it. Load, decide, write.

The decisions (scope, mapping, delegation, diff, conflicts, comment policy) are pure functions in
the sibling modules; this module only reads from Planfix, asks them, and writes what they say,
each write idempotent:
- a missing counterpart is created once (check-then-create through WriteOnce, the mirror marked
  with sourceObjectId/sourceDataVersion so it can be found again if an answer was lost);
- field updates set absolute values, so repeating one changes nothing;
- each comment and each file is mirrored once (WriteOnce), edits update the mirror, a deletion
  marks the mirror withdrawn and never deletes it.

Changes made by the integration user are the sync's own: its comments are never mirrored back,
and its task edits show up as "nothing changed" against the snapshot written after the sync.

A write Planfix answers with 202 (the task was locked; the change is queued) is not yet a change
both sides agree on: the fields it carried keep their old source snapshot, so the next run still
sees them as unsynced, and the run reports them (`SyncReport.queued`) so the job reads the task
back after the retry policy's delay (workers.retry) and plans again.

Why this module: it is the run's orchestration alone, one named step after another (TaskSync._run
reads as the list of them). The steps that need more than a few lines live beside it: whether
the task is followed (follow), the writes and their outcomes (writer), comment, checklist and
file mirroring (comments, checklist, files), the notes left for people (notices), and what both
sides agree on (agreement); every request goes through the run's Gateway (gateway).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crosslink.queue.names import WHOLE, change_stamp, promote_stamp, record_synced_stamp, stamp_seen, synced_stamp
from planfix.client import PlanfixClient
from schemas.links import Link
from workers.canonical import canonical_task, task_fields
from workers.conflict import owner_of
from workers.field_diff import agreed_with_echoes, changed_fields, entries_of, still_to_land
from workers.hints import Hints, Reads, comment_reads, extra_reads, may_trust_snapshot
from workers.idempotency import WriteOnce
from workers.plan import SyncPlan, plan_task_sync
from workers.record import Recorder
from workers.state import LinkState
from workers.sync.agreement import agreement, must_read_back, save_agreement
from workers.sync.attachments import flows
from workers.sync.checklist import sync_checklist
from workers.sync.comments import sync_comments
from workers.sync.context import RunContext, SyncReport
from workers.sync.files import sync_task_files
from workers.sync.follow import counterpart_to_follow, read_source
from workers.sync.gateway import Gateway
from workers.sync.notices import leave_note, settle_notes, tell_of_held_status, tell_of_lost_edits
from workers.sync.views import expected_view, people_names
from workers.sync.writer import TaskWriter


@dataclass
class PairView:
    """The run's task (SOURCE_RAW as read) and its counterpart as the plan sees them: each as it
    is now and as last agreed, with echoes of the sync's own writes taken in (field_diff)."""

    source_raw: Mapping[str, Any]
    source_now: dict[str, Any]
    source_snapshot: dict[str, Any] | None
    source_changed: set[str]
    target_now: dict[str, Any] | None = None
    target_snapshot: dict[str, Any] | None = None
    landing: dict[str, Any] = field(default_factory=dict)

    def explained(self) -> bool:
        """Whether a change that is no echo of ours explains the task's event.
        Keys out of the source's snapshot while it has one are ours, unconfirmed (a write
        Planfix queued): carried again, they explain no event."""
        snapshot = self.source_snapshot
        unconfirmed = {key for key in self.source_changed if snapshot is not None and key not in snapshot}
        return bool(self.source_changed - unconfirmed)


def registry_lookup(state: LinkState) -> Callable[[str, int], int | None]:
    """The registry as the plan saw it, each task looked up once: a parent paired by another
    run after the plan looked must still count as unpaired when the run decides whether the
    child waits for it (TaskSync._await_parent), since the write went without it."""
    looked: dict[tuple[str, int], int | None] = {}

    def lookup(of_side: str, number: int) -> int | None:
        if (of_side, number) not in looked:
            looked[(of_side, number)] = state.counterpart_number(of_side, number)
        return looked[(of_side, number)]

    return lookup


class TaskSync:
    """Syncs SIDE's task NUMBER of LINK into the other side."""

    def __init__(self, link: Link, side: str, number: int, clients: Mapping[str, PlanfixClient],
                 state: LinkState, writes: WriteOnce, hints: Hints | None = None,
                 kept_reads: Mapping[str, Any] | None = None, prefetched: Mapping[str, Any] | None = None,
                 guard: Callable[[], None] | None = None, recorder: Recorder | None = None):
        self.link = link
        self.hints = hints if hints is not None else Hints(full=True)
        self.side = side
        self.other = link.other(side)
        self.number = number
        self.state = state
        self.writes = writes
        self.report = SyncReport(link.name, side, number)
        self.ctx = RunContext(link, side, number, state, self.report, recorder)
        # This run's pair has no agreed state yet and the run may not make it (its task is the
        # mirror, or the mirror was found, made by an earlier run): the original's next run does.
        self._hand_over = False
        # Every request to Planfix, on either side (admission, kept reads, failures by side).
        self.gateway = Gateway(clients, kept_reads=kept_reads, prefetched=prefetched, guard=guard)
        # The writes to the pair's tasks, and what their outcomes leave to agree on.
        self.writer = TaskWriter(self.ctx, gateway=self.gateway, writes=writes)

    # What workers.runner and tests read of the run's requests: the gateway's.
    @property
    def kept_reads(self) -> dict[str, Any]:
        return self.gateway.kept_reads

    @property
    def writes_sent(self) -> int:
        return self.gateway.writes_sent

    @property
    def wrote_to(self) -> set[str]:
        return self.gateway.wrote_to

    def resumable_reads(self) -> dict[str, Any]:
        """The reads this run keeps for its next attempt (Gateway.resumable_reads)."""
        return self.gateway.resumable_reads()

    def _call(self, side: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """Gateway.call, under the name tests/test_sync.py makes a run's requests by."""
        return self.gateway.call(side, method, *args, **kwargs)

    # ------------------------------------------------------------------------------------
    def run(self) -> SyncReport:
        report = self._run()
        self.gateway.hold()  # what it agreed on is saved only while the run may still act
        return report

    def _run(self) -> SyncReport:
        known = self.state.counterpart("task", self.side, self.number)
        if known is not None and self.hints.reads_no_task:
            return self._run_without_task(known)
        source_raw = read_source(self.ctx, known, gateway=self.gateway, writes=self.writes)
        if source_raw is None:
            return self.report
        self.ctx.version = change_stamp(source_raw)
        counterpart, followed = counterpart_to_follow(self.ctx, source_raw, gateway=self.gateway, writes=self.writes)
        if not followed:
            return self.report
        self.report.counterpart = counterpart
        pair = self._read_pair(source_raw, counterpart)
        lookup = registry_lookup(self.state)
        # Person ids repeat across accounts (both robots may be user:1): source names only.
        plan = plan_task_sync(self.link, self.side, pair.source_now, pair.source_snapshot, pair.target_now,
                              pair.target_snapshot, lookup, people_names(source_raw), landing=pair.landing)
        counterpart, written = self._write_plan(plan, counterpart, pair.target_now)
        self.report.counterpart = counterpart
        source_now = self._await_parent(pair.source_now, lookup)
        source_now = self._move_statuses(plan, counterpart, source_now, written)
        self.report.parked.extend(plan.parked)
        self._tell(plan, pair, counterpart, source_now, written)
        explained = pair.explained()
        has_comments = bool(source_raw.get("dateOfLastComment"))
        reads = extra_reads(self.hints, explained, has_comments=has_comments)
        one_by_one = comment_reads(self.hints, listing=not explained or self.hints.task_events > 1)
        if reads.comments:
            sync_comments(self.ctx, counterpart, one_by_one, gateway=self.gateway, writes=self.writes)
        if reads.checklist:
            sync_checklist(self.ctx, counterpart, gateway=self.gateway, writes=self.writes)
        sync_task_files(self.ctx, counterpart, source_raw.get("files"), gateway=self.gateway, writes=self.writes)
        if not self._hand_over:
            self._agree(counterpart, source_now, pair.target_now, written)
        self._record_stamp(source_raw, reads, comments_listed=reads.comments and one_by_one is None,
                           has_comments=has_comments, explained=explained)
        return self.report

    def _run_without_task(self, known: int) -> SyncReport:
        """A run whose events read nothing of the task itself (workers.hints): its comments, or
        its checklist, carried to KNOWN, the counterpart already paired."""
        link, side, report = self.link, self.side, self.report
        # The comment names its task (checked as it is read: workers.sync.comments) and the
        # task's own changes bring their own events. A checklist the poller asked for
        # (workers.hints): a run saw all but the checklist at the stamp recorded, so once
        # the checklist is looked at, the stamp counts as whole.
        report.counterpart = known
        found = synced_stamp(self.state.redis, link.name, side, self.number) if self.hints.checklist else None
        if self.hints.comments:
            sync_comments(self.ctx, known, comment_reads(self.hints, listing=False), gateway=self.gateway,
                          writes=self.writes)
        if self.hints.checklist:
            sync_checklist(self.ctx, known, gateway=self.gateway, writes=self.writes)
            promote_stamp(self.state.redis, link.name, side, self.number, found)
        wrote = report.comments_created or report.comments_updated or report.comments_withdrawn
        if not wrote and report.rejected:
            report.outcome = "rejected"
        elif not wrote and report.missing:
            report.outcome = "missing"
        return report

    def _read_pair(self, source_raw: Mapping[str, Any], counterpart: int | None) -> PairView:
        """The run's task and its counterpart, now and as last agreed (PairView)."""
        link, side, other = self.link, self.side, self.other
        counterpart_pending = counterpart is not None and self.state.has_pending(other, counterpart)
        if counterpart_pending:
            self.gateway.forget_resumed(other)
        source_now = canonical_task(source_raw, link, side)
        # Values our own unagreed writes put there are no one's change (field_diff); found there
        # first by this run, they are recorded now.
        source_expected = self.state.queued_expectations(side, self.number)
        source_agreed = self.state.snapshot(side, self.number)
        self.writer.find_landed(side, self.number, source_expected, source_now, source_agreed)
        source_snapshot = agreed_with_echoes(source_agreed, source_now, source_expected)
        if (counterpart is not None and source_snapshot is None and self.state.snapshot(other, counterpart) is None
                and self.state.is_mirror("task", side, self.number)):
            # This task is a mirror no run agreed on yet (its creating run died, its answer
            # lost): its fields are what some run wrote, no one's change; carried back, they
            # undid the original's (the quick chaos run saw a delegation stand-in come back as
            # an assignee). The original's run, next, carries the original's values over as at
            # creation; this one agrees on nothing of them.
            source_snapshot = dict(source_now)
            self._hand_over = True
            self.report.follow_up.append((other, counterpart))
        pair = PairView(source_raw, source_now, source_snapshot, changed_fields(source_snapshot, source_now))
        if counterpart is not None:
            pair.target_now = self._counterpart_view(counterpart, pair.source_changed, counterpart_pending)
            target_expected = self.state.queued_expectations(other, counterpart)
            target_agreed = self.state.snapshot(other, counterpart)
            pair.target_snapshot = agreed_with_echoes(target_agreed, pair.target_now, target_expected)
            pair.landing = still_to_land(target_expected, pair.target_now, target_agreed)
            self.writer.find_landed(other, counterpart, target_expected, pair.target_now, target_agreed)
            # Writes Planfix queued and not landed yet stay expected, whatever this run writes.
            self.writer.expected = entries_of(target_expected, pair.landing)
        return pair

    def _write_plan(self, plan: SyncPlan, counterpart: int | None,
                    target_now: dict[str, Any] | None) -> tuple[int | None, dict[str, Any]]:
        """Create or update the counterpart as PLAN says: the counterpart, and what was written."""
        link, other = self.link, self.other
        # The target values this run wrote and saw applied: they, not a read-back that may
        # already hold a person's concurrent edit, are what both sides agreed on.
        written: dict[str, Any] = {}
        if plan.create:
            counterpart, made = self.writer.create_counterpart(plan.update_body)
            if not made:
                # An earlier run made the mirror (its answer lost), from the task as it was
                # then: this run's body is not what it holds. The next run, with no agreed state
                # on either side, sets the task's values on it as they are by then.
                self._hand_over = True
                self.report.follow_up.append((self.side, self.number))
            written = expected_view(canonical_task({}, link, other), plan.update_body)
            initial = link.sides[other].create.initial_status
            if initial is not None:
                # The create set the status too, implicitly: whatever the read-back shows
                # instead is a person's move, to be carried back by the target's own run.
                written.setdefault("status", initial)
            self.report.outcome = "created"
        elif plan.update_body:
            written = self.writer.update_fields(counterpart, plan.update_body, plan.fields, target_now)
            self.report.fields = sorted(plan.fields)
            self.report.outcome = "updated"
        return counterpart, written

    def _await_parent(self, source_now: dict[str, Any], lookup: Callable[[str, int], int | None]) -> dict[str, Any]:
        """SOURCE_NOW as it may be agreed on: a parent not mirrored yet is not."""
        side = self.side
        parent = source_now.get("parent")
        if parent is not None and lookup(side, parent) is None:
            # Mirrored without its parent for now: remember the child, and do not record the
            # parent as agreed, so the run after the parent's mirror carries it.
            self.state.wait_for_parent(side, parent, self.number)
            if self.state.counterpart("task", side, parent) is not None:
                # The parent's run paired it meanwhile, and may have taken its waiting children
                # before this one was added: run again now rather than wait for a later event.
                self.report.follow_up.append((side, self.number))
            previous_parent = (self.state.snapshot(side, self.number) or {}).get("parent")
            source_now = {**source_now, "parent": previous_parent}
        return source_now

    def _move_statuses(self, plan: SyncPlan, counterpart: int | None, source_now: dict[str, Any],
                       written: dict[str, Any]) -> dict[str, Any]:
        """Move the counterpart along PLAN's status path, and either task as the plan's source
        moves say; WRITTEN takes the counterpart's moves seen applied. Returns SOURCE_NOW with the
        source's."""
        for status in plan.status_path:
            if not self.writer.move_status(self.other, counterpart, status):
                break
            written["status"] = status
            self.report.statuses.append(status)
            if self.report.outcome == "noop":
                self.report.outcome = "updated"
        for moved_side, status in plan.source_status_moves:
            number = self.number if moved_side == self.side else counterpart
            if self.writer.move_status(moved_side, number, status):
                if moved_side == self.side:
                    source_now = {**source_now, "status": status}
                else:
                    written["status"] = status
        return source_now

    def _tell(self, plan: SyncPlan, pair: PairView, counterpart: int | None, source_now: Mapping[str, Any],
              written: Mapping[str, Any]) -> None:
        """The notes PLAN calls for: edits that lost, a status move held back, a delegation; and
        first those an earlier run sent without learning whether Planfix took them."""
        settle_notes(self.ctx, counterpart, gateway=self.gateway, writes=self.writes)
        tell_of_lost_edits(self.ctx, plan, counterpart, gateway=self.gateway, writes=self.writes)
        tell_of_held_status(self.ctx, plan, counterpart, pair.source_raw, source_now,
                            written.get("status", (pair.target_now or {}).get("status")),
                            moved="status" in pair.source_changed or "status" in written,
                            gateway=self.gateway, writes=self.writes)
        previous = self.state.snapshot(self.side, self.number) or {}
        occasion = json.dumps([previous.get("assignees"), source_now.get("assignees")])
        for delegation_note in plan.notes:
            leave_note(self.ctx, self.other, counterpart, delegation_note, occasion, gateway=self.gateway,
                       writes=self.writes)
            self.report.notes += 1

    def _record_stamp(self, source_raw: Mapping[str, Any], reads: Reads, *, comments_listed: bool,
                      has_comments: bool, explained: bool) -> None:
        """Record the task's change stamp as synced, whole or but its checklist, when this run
        saw everything the stamp may stand for (crosslink.queue.names.stamp_seen)."""
        link, side = self.link, self.side
        seen = stamp_seen(source_raw, synced_stamp(self.state.redis, link.name, side, self.number),
                          checklist_looked=reads.checklist,
                          checklist_carried=flows(link.fields.checklist.direction, side, self.other),
                          comments_listed=comments_listed or not has_comments,
                          one_explained_event=explained and self.hints.task_events == 1 and not self.hints.full)
        if seen is not None:
            record_synced_stamp(self.state.redis, link.name, side, self.number, source_raw,
                                checklist_seen=seen == WHOLE)

    def _counterpart_view(self, counterpart: int, source_changed: set[str], pending: bool) -> dict[str, Any]:
        """The counterpart's canonical view: its snapshot where that is safe (workers.hints),
        else read over REST. PENDING: an event of the counterpart's own waits."""
        link, other = self.link, self.other
        snapshot = self.state.snapshot(other, counterpart)
        if snapshot is not None and may_trust_snapshot(
                hints=self.hints, has_snapshot=True,
                counterpart_pending=pending,
                counterpart_queued=bool(self.state.queued_expectations(other, counterpart)),
                changed_owners=[owner_of(link, key, self.side) for key in source_changed],
                source_side=self.side):
            return dict(snapshot)
        target_raw = self.gateway.call(other, "get_task", counterpart, fields=task_fields(link, other))
        return canonical_task(target_raw, link, other)

    def _agree(self, counterpart: int, source_now: dict[str, Any], target_now: dict[str, Any] | None,
               written: Mapping[str, Any]) -> None:
        """Record what both sides now agree on: workers.sync.agreement decides it from what this
        run read and wrote; this reads the counterpart back when it must, and stores the answer."""
        link, other, writer = self.link, self.other, self.writer
        if must_read_back(read_back=writer.read_back, unconfirmed=writer.unconfirmed, target_now=target_now,
                          written=written):
            target_raw = self.gateway.call(other, "get_task", counterpart, fields=task_fields(link, other))
            target_after = canonical_task(target_raw, link, other)
        else:
            # Every write was applied as sent (HTTP 200, no per-field failure): the counterpart
            # now holds what it held plus what was written; reading it back would cost a request
            # and show nothing more (a person's concurrent edit brings its own event).
            target_after = {**(target_now or canonical_task({}, link, other)), **written}
        agreed = agreement((self.side, self.number), (other, counterpart), source_now=source_now,
                           target_now=target_now, target_after=target_after, written=written,
                           target_previous=self.state.snapshot(other, counterpart),
                           target_queued=self.state.queued_expectations(other, counterpart),
                           source_queued=self.state.queued_expectations(self.side, self.number),
                           unconfirmed=writer.unconfirmed, expected=writer.expected)
        save_agreement(self.state, agreed)
