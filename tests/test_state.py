"""The registry, snapshots, severance and parking in Redis; the mirror markers."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from workers.field_diff import ALTERNATIVES
from workers.state import LinkState, mirror_marker, mirror_source_id, parse_marker


def test_pairs_are_stored_both_ways(redis_client):
    state = LinkState(redis_client, "acme")
    state.pair("task", "partner", 5, "client", 12)
    assert state.counterpart("task", "partner", 5) == 12
    assert state.counterpart("task", "client", 12) == 5
    assert state.counterpart("task", "client", 5) is None
    assert state.counterpart_number("partner", 5) == 12


def test_links_do_not_see_each_others_state(redis_client):
    LinkState(redis_client, "a").pair("task", "partner", 1, "client", 2)
    assert LinkState(redis_client, "b").counterpart("task", "partner", 1) is None


def test_snapshots_round_trip(redis_client):
    state = LinkState(redis_client, "acme")
    snap = {"name": "x", "assignees": ["user:1"], "status": 3}
    state.save_snapshots({("partner", 5): snap})
    assert state.snapshot("partner", 5) == snap
    assert state.snapshot("client", 5) is None


def test_sever_park_and_take(redis_client):
    state = LinkState(redis_client, "acme")
    assert state.sever("client", "token revoked", 1.0)
    assert not state.sever("client", "again", 2.0)  # first reason kept
    assert state.severed() == {"client": {"reason": "token revoked", "at": 1.0}}
    state.park({"side": "partner", "task": 1})
    state.park({"side": "client", "task": 2})
    assert state.parked_count() == 2
    assert [e["task"] for e in state.take_parked()] == [1, 2]
    assert state.parked_count() == 0
    state.restore("client")
    assert state.severed() == {}


def test_dead_letters_keep_the_event_and_reason(redis_client):
    state = LinkState(redis_client, "acme")
    state.dead_letter({"side": "partner", "task": 3}, "not found", 5.0)
    assert state.dead_letters() == [{"side": "partner", "task": 3, "reason": "not found", "at": 5.0}]


@given(st.from_regex(r"[a-z0-9-]{1,20}", fullmatch=True), st.sampled_from(["partner", "client"]),
       st.integers(min_value=1, max_value=10**12))
def test_markers_round_trip_and_fit_planfix(link, side, number):
    marker = mirror_marker(link, side, number)
    assert len(marker) <= 100
    assert parse_marker(marker) == (link, side, number)
    assert mirror_source_id(link, side, "task", number) == mirror_source_id(link, side, "task", number)
    assert mirror_source_id(link, side, "task", number) != mirror_source_id(link, side, "comment", number)


def test_foreign_markers_are_not_ours():
    for value in (None, "", "v2", "other:acme:partner:5", "crosslink:acme:partner:x", "crosslink:a:b"):
        assert parse_marker(value) is None


def test_children_wait_for_their_parent_once(redis_client):
    state = LinkState(redis_client, "acme")
    state.wait_for_parent("partner", 1, 5)
    state.wait_for_parent("partner", 1, 6)
    state.wait_for_parent("partner", 1, 5)
    assert state.take_waiting_children("partner", 1) == [5, 6]
    assert state.take_waiting_children("partner", 1) == []
    assert state.take_waiting_children("client", 1) == []


def test_a_runs_state_reads_once_and_sees_its_own_writes(redis_client):
    from workers.state import RunState

    LinkState(redis_client, "acme").save_snapshots({("partner", 5): {"name": "before"}})
    run = RunState(redis_client, "acme")
    assert run.snapshot("partner", 5) == {"name": "before"}
    # Another writer (none can, while the run holds its lock) is not seen: the read is kept.
    LinkState(redis_client, "acme").save_snapshots({("partner", 5): {"name": "elsewhere"}})
    assert run.snapshot("partner", 5) == {"name": "before"}
    run.save_snapshots({("partner", 5): {"name": "mine"}})
    assert run.snapshot("partner", 5) == {"name": "mine"}
    # The registry is read afresh: other runs pair other tasks meanwhile.
    assert run.counterpart("task", "partner", 7) is None
    LinkState(redis_client, "acme").pair("task", "partner", 7, "client", 12)
    assert run.counterpart("task", "partner", 7) == 12
    run.save_queued_expectations("client", 12, {"name": "x"})
    assert run.queued_expectations("client", 12) == {"name": "x"}
    run.save_queued_expectations("client", 12, {})
    assert run.queued_expectations("client", 12) == {}
    # What it read before its lock is forgotten on demand.
    LinkState(redis_client, "acme").save_snapshots({("partner", 5): {"name": "newer"}})
    run.forget()
    assert run.snapshot("partner", 5) == {"name": "newer"}


def test_a_run_writes_what_it_agreed_on_when_it_ends_with_its_lock_release(redis_client):
    from workers.idempotency import TaskLock
    from workers.state import RunState

    lock = TaskLock(redis_client, ("crosslink:lock:acme:partner:5",))
    assert lock.acquire(10_000)
    run = RunState(redis_client, "acme")
    run.save_snapshots({("partner", 5): {"name": "agreed"}})
    run.save_queued_expectations("client", 12, {"name": "queued"})
    # Nobody else reads it before the run ends (they would need the lock): not written yet.
    assert LinkState(redis_client, "acme").snapshot("partner", 5) is None
    run.close(lock.release_in, synced=True)
    assert LinkState(redis_client, "acme").snapshot("partner", 5) == {"name": "agreed"}
    assert LinkState(redis_client, "acme").queued_expectations("client", 12) == {"name": "queued"}
    assert LinkState(redis_client, "acme").last_sync() is not None
    assert not redis_client.exists("crosslink:lock:acme:partner:5")


def test_a_run_that_failed_part_way_writes_nothing_but_lets_go_of_its_lock(redis_client):
    from workers.idempotency import TaskLock
    from workers.state import RunState

    lock = TaskLock(redis_client, ("crosslink:lock:acme:partner:5",))
    assert lock.acquire(10_000)
    run = RunState(redis_client, "acme")
    run.save_snapshots({("partner", 5): {"name": "half-done"}})
    run.close(lock.release_in, synced=False)
    assert LinkState(redis_client, "acme").snapshot("partner", 5) is None
    assert LinkState(redis_client, "acme").last_sync() is None
    assert not redis_client.exists("crosslink:lock:acme:partner:5")


def test_a_run_seeded_by_its_batch_reads_nothing_of_its_pair_again(redis_client):
    from workers.state import RunState

    run = RunState(redis_client, "acme")
    run.seed("partner", 5, "client", 12, mine='{"name": "p"}', theirs='{"name": "c"}', queued=None,
             expected='{"status": 3}', pending=True)
    redis_client.flushdb()  # what the batch read is what the run sees
    assert run.counterpart("task", "partner", 5) == 12
    assert run.snapshot("partner", 5) == {"name": "p"}
    assert run.snapshot("client", 12) == {"name": "c"}
    assert run.queued_expectations("client", 12) == {}
    assert run.queued_expectations("partner", 5) == {"status": 3}
    assert run.has_pending("client", 12)
    # Other tasks of the registry are read from Redis.
    LinkState(redis_client, "acme").pair("task", "partner", 7, "client", 13)
    assert run.counterpart("task", "partner", 7) == 13
    # Nothing to write for expectations that neither were nor are.
    run.save_queued_expectations("client", 12, {})
    run.close(lambda pipe: None, synced=True)
    assert not redis_client.exists("crosslink:queued:acme")


def test_a_failed_runs_writes_stay_expected_though_it_saves_nothing_else(redis_client):
    from workers.state import RunState

    LinkState(redis_client, "acme").save_queued_expectations("client", 12, {"name": "queued"})
    run = RunState(redis_client, "acme")
    run.save_snapshots({("partner", 5): {"name": "half-done"}})
    run.expect_ahead("client", 12, {"status": 13})
    run.close(lambda pipe: None, synced=False)
    state = LinkState(redis_client, "acme")
    assert state.queued_expectations("client", 12) == {"name": "queued", "status": 13}
    assert state.snapshot("partner", 5) is None


def test_values_expected_ahead_of_a_write_are_in_redis_before_the_run_closes(redis_client):
    """A run killed after its write never closes: what it wrote must already be expected."""
    from workers.state import RunState

    run = RunState(redis_client, "acme")
    assert run.expect_ahead("client", 12, {"status": 12}) == {}
    assert run.expect_ahead("client", 12, {"status": 13}) == {"status": 12}
    assert LinkState(redis_client, "acme").queued_expectations("client", 12) == {
        "status": 13, ALTERNATIVES + "status": [12]}


def test_a_finished_run_replaces_what_it_expected_ahead(redis_client):
    """Finished, the run agreed on its writes: what it expected ahead goes, and what was expected
    before stays unless the run saved expectations of its own."""
    from workers.state import RunState

    LinkState(redis_client, "acme").save_queued_expectations("client", 12, {"name": "queued"})
    run = RunState(redis_client, "acme")
    run.expect_ahead("client", 12, {"status": 13})
    run.expect_ahead("partner", 5, {"status": 3})
    run.save_queued_expectations("partner", 5, {"priority": "Urgent"})
    run.close(lambda pipe: None, synced=True)
    state = LinkState(redis_client, "acme")
    assert state.queued_expectations("client", 12) == {"name": "queued"}
    assert state.queued_expectations("partner", 5) == {"priority": "Urgent"}


def test_a_write_surely_not_applied_is_withdrawn_at_once(redis_client):
    from workers.state import RunState

    run = RunState(redis_client, "acme")
    before = run.expect_ahead("client", 12, {"status": 13})
    run.withdraw_ahead("client", 12, before)
    assert LinkState(redis_client, "acme").queued_expectations("client", 12) == {}


def test_the_first_start_of_serving_a_side_stands_and_decisions_clear_the_wait(redis_client):
    state = LinkState(redis_client, "demo")
    assert state.since("partner") is None
    state.begin(["partner"], 100.0)
    state.begin(["partner", "client"], 200.0)
    assert (state.since("partner"), state.since("client")) == (100.0, 200.0)
    for side, number in (("partner", 5), ("client", 7), ("client", 8)):
        state.await_decision(side, number, {"name": "Weekly status call"})
    assert set(state.awaiting()) == {"partner:5", "client:7", "client:8"}
    state.decided_pair([("partner", 5), ("client", 7)])
    assert not state.decided_mirror("client", 8)
    state.decide_mirror("client", 8, by="olga", at=300.0)
    assert state.decided_mirror("client", 8) and state.awaiting() == {}


def test_the_pollers_registry_key_is_the_one_the_runs_write(redis_client):
    from crosslink.queue.names import registry_key

    LinkState(redis_client, "demo").pair("task", "client", 5, "partner", 9)
    assert redis_client.hget(registry_key("demo", "task"), "client:5") == "9"


def test_a_removed_task_is_marked_once_until_it_is_back(redis_client):
    state = LinkState(redis_client, "demo")
    assert state.mark_removed("client", 5, {"how": "moved to the trash"})
    assert not state.mark_removed("client", 5, {"how": "deleted"})
    assert state.removed("client", 5) and state.removed_tasks()["client:5"]["how"] == "moved to the trash"
    state.unmark_removed("client", 5)
    assert not state.removed("client", 5) and state.removed_tasks() == {}


def test_a_runs_pair_is_looked_up_as_removed_in_one_read(redis_client):
    state = LinkState(redis_client, "demo")
    state.mark_removed("client", 7, {"how": "trashed"})
    assert state.removed_among([("partner", 5), ("client", 7)]) == {("client", 7)}
    assert state.removed_among([("partner", 5)]) == set()


def test_mirrored_from_names_the_original_only_for_this_links_mirrors_of_that_side():
    from workers.state import mirrored_from

    assert mirrored_from(mirror_marker("acme", "partner", 7), "acme", "partner") == 7
    assert mirrored_from(mirror_marker("acme", "partner", 7), "acme", "client") is None
    assert mirrored_from(mirror_marker("other", "partner", 7), "acme", "partner") is None
    assert mirrored_from(None, "acme", "partner") is None and mirrored_from("a person's", "acme", "partner") is None
