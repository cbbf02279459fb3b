"""workers.hints: what a run reads, decided from the events it coalesced."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crosslink.queue.names import CHECKLIST_HINT, FULL_HINT, event_hint
from workers.hints import MAX_COMMENT_GETS, Hints, Reads, comment_reads, extra_reads, may_trust_snapshot

HINT_ITEMS = st.one_of(
    st.sampled_from(["task_created", "task_changed", FULL_HINT, CHECKLIST_HINT, "resume", "reread", "bogus",
                     "comment_added:x"]),
    st.integers(min_value=1, max_value=10**6).map(lambda n: f"comment_added:{n}"),
)


def test_no_hints_or_unknown_ones_ask_for_a_full_look():
    assert Hints.parse([]).full
    assert Hints.parse(["something new"]).full
    assert Hints.parse(["comment_added:12x"]).full


def test_webhook_events_become_hints():
    assert event_hint("task_created") == "task_created"
    assert event_hint("comment_added", 77) == "comment_added:77"
    assert event_hint("comment_added", None) == FULL_HINT   # a comment event without its id
    hints = Hints.parse([event_hint("task_changed"), event_hint("comment_added", 5),
                         event_hint("comment_added", 5), event_hint("task_changed")])
    assert hints == Hints(full=False, task_events=2, comments=(5,))


@given(st.lists(HINT_ITEMS, max_size=12))
def test_encoding_round_trips(items):
    hints = Hints.parse(items)
    again = Hints.parse(hints.encode())
    assert again.full == hints.full and again.resume == hints.resume and again.reread == hints.reread
    if not hints.full:
        assert again == hints


@given(st.lists(HINT_ITEMS, max_size=8), st.lists(HINT_ITEMS, max_size=8))
def test_merging_keeps_every_event_and_drops_resume(first, second):
    a, b = Hints.parse(first), Hints.parse(second)
    merged = a.merge(b)
    assert not merged.resume                  # new events make kept reads stale
    assert merged.reread == (a.reread or b.reread)
    if a.full or b.full:
        assert merged.full
    else:
        assert merged.task_events == a.task_events + b.task_events
        assert set(merged.comments) == set(a.comments) | set(b.comments)


def test_a_waiting_run_resumes_and_rereads_only_if_it_wrote():
    hints = Hints.parse(["task_changed"])
    assert hints.waited(wrote=False) == Hints(full=False, task_events=1, resume=True)
    assert hints.waited(wrote=True).reread


def test_runs_told_of_comments_or_a_checklist_alone_read_no_task():
    assert Hints.parse(["comment_added:3"]).reads_no_task
    assert Hints.parse([CHECKLIST_HINT]).reads_no_task
    assert Hints.parse(["comment_added:3", CHECKLIST_HINT]).reads_no_task
    assert not Hints.parse(["comment_added:3", "task_changed"]).reads_no_task
    assert not Hints.parse([CHECKLIST_HINT, "task_changed"]).reads_no_task
    assert not Hints.parse([FULL_HINT]).reads_no_task
    assert not Hints.parse([FULL_HINT, CHECKLIST_HINT]).reads_no_task


def test_the_checklist_hint_is_kept_through_storage_merges_and_waits():
    hints = Hints.parse(["comment_added:3", CHECKLIST_HINT])
    assert hints.checklist and Hints.parse(hints.encode()) == hints
    assert Hints.parse(["task_changed"]).merge(Hints.parse([CHECKLIST_HINT])).checklist
    assert hints.waited(wrote=True).checklist
    assert not Hints.parse(["task_changed"]).checklist


def test_extra_reads():
    full = Hints(full=True)
    one_edit = Hints(full=False, task_events=1)
    two_edits = Hints(full=False, task_events=2)
    edit_and_comment = Hints(full=False, task_events=1, comments=(9,))
    asked = Hints(full=False, task_events=1, checklist=True)
    assert extra_reads(full, True) == Reads(comments=True, checklist=True)
    # A field edit explains its event: nothing else is read now (the poller has the checklist
    # looked at later: crosslink.queue.names.stamp_seen).
    assert extra_reads(one_edit, True) == Reads(comments=False, checklist=False)
    # An unexplained task event was a checklist, a file, a comment edit or an unmapped field.
    assert extra_reads(one_edit, False) == Reads(comments=True, checklist=True)
    # Several coalesced task events may hide a comment edit or a checklist change behind a field edit.
    assert extra_reads(two_edits, True) == Reads(comments=True, checklist=True)
    assert extra_reads(edit_and_comment, True) == Reads(comments=True, checklist=False)
    assert extra_reads(asked, True) == Reads(comments=False, checklist=True)
    # A task that never had a comment has none to edit: no list, whatever the task events.
    assert extra_reads(two_edits, True, has_comments=False) == Reads(comments=False, checklist=True)
    assert extra_reads(one_edit, False, has_comments=False) == Reads(comments=False, checklist=True)
    assert extra_reads(full, True, has_comments=False) == Reads(comments=True, checklist=True)


def test_comment_reads_get_a_few_and_list_many():
    few = Hints(full=False, comments=tuple(range(1, MAX_COMMENT_GETS + 1)))
    many = Hints(full=False, comments=tuple(range(1, MAX_COMMENT_GETS + 2)))
    assert comment_reads(few, listing=False) == few.comments
    assert comment_reads(few, listing=True) is None
    assert comment_reads(many, listing=False) is None
    assert comment_reads(Hints(full=True), listing=False) is None


@given(full=st.booleans(), reread=st.booleans(), has_snapshot=st.booleans(), pending=st.booleans(),
       queued=st.booleans(), owners=st.lists(st.sampled_from([None, "partner", "client"]), max_size=4))
def test_the_snapshot_stands_in_only_when_nothing_unseen_matters(full, reread, has_snapshot, pending,
                                                                  queued, owners):
    hints = Hints(full=full, task_events=1, reread=reread)
    trusted = may_trust_snapshot(hints=hints, has_snapshot=has_snapshot, counterpart_pending=pending,
                                 counterpart_queued=queued, changed_owners=owners, source_side="partner")
    expected = (not full and not reread and has_snapshot and not pending and not queued
                and all(owner in (None, "partner") for owner in owners))
    assert trusted == expected
