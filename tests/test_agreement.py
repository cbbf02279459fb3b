"""workers.sync.agreement: what a run stores as agreed, from the values it read and wrote alone
(no Redis, no Planfix). The whole runs that rest on it are in tests/test_sync.py and
tests/test_unknown_outcomes.py."""

from __future__ import annotations

from workers.field_diff import QUEUED
from workers.sync.agreement import Agreement, agreement, must_read_back

SOURCE, TARGET = ("partner", 7), ("client", 70)


def agreed(**given) -> Agreement:
    values = {"target_now": None, "written": {}, "target_previous": None, "target_queued": {},
              "source_queued": {}, "unconfirmed": set(), "expected": {}, **given}
    return agreement(SOURCE, TARGET, **values)


def test_the_source_is_agreed_as_read_and_the_target_only_where_this_run_wrote():
    """The target's own edit made meanwhile (its status) keeps the old snapshot value, so the
    target's run still sees it as a change and carries it back."""
    result = agreed(source_now={"name": "New", "status": 2},
                    target_now={"name": "Old", "status": 12},
                    target_after={"name": "New", "status": 13},
                    written={"name": "New"},
                    target_previous={"name": "Old", "status": 12})
    assert result.snapshots == {SOURCE: {"name": "New", "status": 2},
                                TARGET: {"name": "New", "status": 12}}
    assert result.expectations == {TARGET: {}}


def test_a_read_back_that_differs_from_what_was_written_keeps_the_written_value():
    result = agreed(source_now={"name": "Ours"}, target_now={"name": "Before"},
                    target_after={"name": "A person's, meanwhile"}, written={"name": "Ours"},
                    target_previous={"name": "Before"})
    assert result.snapshots[TARGET] == {"name": "Ours"}


def test_without_a_previous_target_snapshot_the_target_is_agreed_as_it_was_before_the_run():
    result = agreed(source_now={"name": "Task", "status": 1}, target_now={"name": "Task", "status": 11},
                    target_after={"name": "Task", "status": 15, "priority": "High"}, written={})
    assert result.snapshots[TARGET] == {"name": "Task", "status": 11, "priority": "High"}


def test_a_key_the_target_snapshot_lacks_stays_out_when_it_has_others():
    """Left out as the target's own run left it (its write Planfix queued, not seen yet)."""
    result = agreed(source_now={"name": "Task"}, target_now={"name": "Task"},
                    target_after={"name": "Task", "status": 13}, target_previous={"name": "Task"})
    assert result.snapshots[TARGET] == {"name": "Task"}


def test_a_queued_write_leaves_its_keys_out_of_the_source_snapshot_and_stays_expected():
    """The 202's keys are carried again by the source's next run; the values it should give the
    target are stored as expected, whatever the run's writer kept."""
    expected = {"status": 13, QUEUED + "status": 13}
    result = agreed(source_now={"name": "Task", "status": 3}, target_now={"name": "Task", "status": 12},
                    target_after={"name": "Task", "status": 12}, target_previous={"name": "Task", "status": 12},
                    unconfirmed={"status"}, expected=expected)
    assert result.snapshots[SOURCE] == {"name": "Task"}
    assert result.expectations == {TARGET: expected}


def test_a_queued_value_seen_on_the_target_is_agreed_there_as_an_echo():
    result = agreed(source_now={"status": 3}, target_now={"status": 13}, target_after={"status": 13},
                    target_previous={"status": 12}, target_queued={"status": 13})
    assert result.snapshots[TARGET] == {"status": 13}


def test_source_expectations_it_now_shows_are_settled_and_none_are_stored_when_it_had_none():
    result = agreed(source_now={"name": "Landed", "status": 2}, target_now={"name": "x"}, target_after={"name": "x"},
                    source_queued={"name": "Landed", "status": 5})
    assert result.expectations[SOURCE] == {"status": 5}
    assert SOURCE not in agreed(source_now={"name": "x"}, target_now={}, target_after={}).expectations


def test_the_counterpart_is_read_back_only_when_an_outcome_was_not_simply_applied():
    assert not must_read_back(read_back=False, unconfirmed=set(), target_now={"name": "x"}, written={"name": "y"})
    assert must_read_back(read_back=True, unconfirmed=set(), target_now={"name": "x"}, written={})
    assert must_read_back(read_back=False, unconfirmed={"name"}, target_now={"name": "x"}, written={})
    # A counterpart just created, with no status written: its status is only known by reading it.
    assert must_read_back(read_back=False, unconfirmed=set(), target_now=None, written={"name": "y"})
    assert not must_read_back(read_back=False, unconfirmed=set(), target_now=None, written={"status": 1})
