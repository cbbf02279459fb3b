"""crosslink.queue.enqueue and the batch claims (crosslink.queue.claims): one pending run per task, the events'
hints beside it, lone events batched per link side, bursts coalesced."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path

import pytest

from crosslink.queue.claims import Claim, claim_batch, settle_batch
from crosslink.queue.enqueue import COALESCE_DELAY_S, HOT_WINDOW_MS, Enqueuer
from crosslink.queue.names import (
    ANCHOR_LINK,
    FULL_HINT,
    PROBE_LINK,
    RECONCILE_POLL,
    RECONCILE_TICK,
    SYNC_BATCH,
    SYNC_QUEUE,
    SYNC_TASK,
    batch_key,
    claims_key,
    dirty_key,
    hints_key,
    job_fields,
    job_label,
    pending_key,
    pending_since_key,
)
from tests.runs import take_hints

TTL_MS = 60_000


@pytest.fixture
def enqueuer(redis_url):
    made = Enqueuer(redis_url)
    yield made
    made.close()


def queued_jobs(redis_client) -> list[dict]:
    """Jobs in the queue, oldest first."""
    return [json.loads(raw) for raw in reversed(redis_client.lrange(SYNC_QUEUE, 0, -1))]


def job(message: dict) -> tuple[str, list, str | None]:
    """(task name, args, eta) of a queued Celery message (its args from the body: argsrepr is a label)."""
    headers = message["headers"]
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return headers["task"], args, headers.get("eta")


def test_events_while_a_run_waits_join_it_with_their_hints(enqueuer, redis_client):
    assert enqueuer.sync("demo", "partner", 5, "task_changed")
    assert not enqueuer.sync("demo", "partner", 5, "comment_added:9")
    assert len(queued_jobs(redis_client)) == 1
    # The run takes both hints as it clears the flag, in one transaction.
    assert take_hints(redis_client, "demo", "partner", 5) == ["task_changed", "comment_added:9"]
    assert not redis_client.exists(pending_key("demo", "partner", 5), hints_key("demo", "partner", 5))


def test_callers_that_do_not_say_ask_for_a_full_look(enqueuer, redis_client):
    enqueuer.sync("demo", "client", 7)
    assert take_hints(redis_client, "demo", "client", 7) == [FULL_HINT]


def test_lone_events_of_one_side_share_one_batch_job(enqueuer, redis_client):
    first = enqueuer.queue("demo", "partner", 5, "task_changed")
    second = enqueuer.queue("demo", "partner", 6, "task_changed")
    other_side = enqueuer.queue("demo", "client", 6, "task_changed")
    assert first == second != other_side
    jobs = [job(message) for message in queued_jobs(redis_client)]
    assert jobs == [(SYNC_BATCH, ["demo", "partner"], None), (SYNC_BATCH, ["demo", "client"], None)]
    assert queued_jobs(redis_client)[0]["headers"]["id"] == first
    assert redis_client.zrange(dirty_key("demo", "partner"), 0, -1) == ["5", "6"]   # in order of arrival


def test_a_bursts_next_event_queues_the_tasks_own_job_late(enqueuer, redis_client):
    batch = enqueuer.queue("demo", "partner", 5, "task_changed")
    claim_batch(redis_client, "demo", "partner", batch, TTL_MS)     # the batch job started
    take_hints(redis_client, "demo", "partner", 5)                  # ...and began the task's run
    enqueuer.sync("demo", "partner", 5, "task_changed")              # within the hot window: a burst
    name, args, eta = job(queued_jobs(redis_client)[-1])
    assert (name, args) == (SYNC_TASK, ["demo", "partner", 5]) and eta is not None
    assert redis_client.zscore(dirty_key("demo", "partner"), "5") is None
    # Another task's event is not part of the burst: it joins the running batch job.
    assert enqueuer.queue("demo", "partner", 6, "task_changed") == batch
    assert redis_client.zrange(dirty_key("demo", "partner"), 0, -1) == ["6"]


def test_after_the_hot_window_an_event_is_lone_again(enqueuer, redis_client):
    batch = enqueuer.queue("demo", "partner", 5, "task_changed")
    claim_batch(redis_client, "demo", "partner", batch, TTL_MS)
    take_hints(redis_client, "demo", "partner", 5)
    time.sleep(HOT_WINDOW_MS / 1000 + 0.1)
    assert enqueuer.queue("demo", "partner", 5, "task_changed") == batch   # joins the running batch
    assert redis_client.zrange(dirty_key("demo", "partner"), 0, -1) == ["5"]
    assert len(queued_jobs(redis_client)) == 1
    assert COALESCE_DELAY_S > 0


def test_a_batch_job_holds_its_side_while_it_runs_and_lets_go_once_none_wait(enqueuer, redis_client):
    for task in (7, 5, 6):
        enqueuer.sync("demo", "partner", task, "task_changed")
        time.sleep(0.002)
    first = queued_jobs(redis_client)[0]["headers"]["id"]
    # The two that waited longest; the job holds the side's flag, so events join it.
    assert claim_batch(redis_client, "demo", "partner", first, TTL_MS, most=2) == Claim([5, 7], 1, True)
    assert redis_client.get(batch_key("demo", "partner")) == first
    assert enqueuer.queue("demo", "partner", 8, "task_changed") == first
    assert len(queued_jobs(redis_client)) == 1
    settle_batch(redis_client, "demo", "partner", first, [5, 7])            # their runs are done
    assert claim_batch(redis_client, "demo", "partner", first, TTL_MS) == Claim([6, 8], 0, True)
    settle_batch(redis_client, "demo", "partner", first, [6, 8])
    # Nothing waits: the job lets go of the side in the same step, and the next event sends a job.
    assert claim_batch(redis_client, "demo", "partner", first, TTL_MS) == Claim([], 0, True)
    assert not redis_client.exists(batch_key("demo", "partner"))
    second = enqueuer.queue("demo", "partner", 9, "task_changed")
    assert second != first and redis_client.get(batch_key("demo", "partner")) == second
    assert len(queued_jobs(redis_client)) == 2


def test_a_job_whose_link_has_no_slot_near_claims_nothing_and_keeps_the_side_to_hand_on(enqueuer, redis_client):
    """MOST 0 (workers.batch.turn_outlook): no run is begun, the job keeps (or takes) the side's
    flag while tasks wait, so it can hand it to a job due at its link's slot; once none wait it
    lets go. A job delivered again still takes back its own claims (their runs look in full)."""
    first = enqueuer.queue("demo", "partner", 5, "task_changed")
    enqueuer.queue("demo", "partner", 6, "task_changed")
    assert claim_batch(redis_client, "demo", "partner", first, TTL_MS, most=0) == Claim([], 2, True)
    assert redis_client.zcard(dirty_key("demo", "partner")) == 2
    assert not redis_client.exists(claims_key("demo", "partner"))
    redis_client.delete(batch_key("demo", "partner"))          # its flag lapsed: it takes the side
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS, most=0) == Claim([], 2, True)
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS, most=1) == Claim([5], 1, True)
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS, most=0) == Claim([5], 1, True)
    settle_batch(redis_client, "demo", "partner", "job-2", [5])
    assert claim_batch(redis_client, "demo", "partner", "a-helper", TTL_MS, most=0) == Claim([], 1, False)
    redis_client.delete(dirty_key("demo", "partner"))
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS, most=0) == Claim([], 0, True)
    assert not redis_client.exists(batch_key("demo", "partner"))


def test_claims_that_lapsed_count_as_waiting_until_taken(enqueuer, redis_client):
    enqueuer.sync("demo", "partner", 5, "task_changed")
    enqueuer.sync("demo", "partner", 6, "task_changed")
    assert claim_batch(redis_client, "demo", "partner", "dead-job", 200).tasks == [5, 6]
    time.sleep(0.25)
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS, most=0) == Claim([], 2, False)
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS, most=1).left == 1


def test_a_job_that_does_not_hold_the_side_claims_one_batch_and_leaves_the_flag_alone(enqueuer, redis_client):
    queued = enqueuer.queue("demo", "partner", 5, "task_changed")
    # A helper (or an old job delivered again): it takes what waits, but the side stays the queued job's.
    assert claim_batch(redis_client, "demo", "partner", "a-helper", TTL_MS) == Claim([5], 0, False)
    assert claim_batch(redis_client, "demo", "partner", "a-helper", TTL_MS).owner is False
    assert redis_client.get(batch_key("demo", "partner")) == queued


def test_a_job_finding_the_side_free_takes_it(enqueuer, redis_client):
    enqueuer.queue("demo", "partner", 5, "task_changed")
    redis_client.delete(batch_key("demo", "partner"))          # say its flag expired
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS) == Claim([5], 0, True)
    assert redis_client.get(batch_key("demo", "partner")) == "job-2"


def test_a_job_whose_turn_is_over_hands_the_side_to_a_new_job(enqueuer, redis_client):
    first = enqueuer.queue("demo", "partner", 5, "task_changed")
    claim_batch(redis_client, "demo", "partner", first, TTL_MS)
    redis_client.delete(SYNC_QUEUE)
    nxt = enqueuer.hand_off_batch("demo", "partner", first)
    assert nxt not in (None, first) and redis_client.get(batch_key("demo", "partner")) == nxt
    assert [message["headers"]["id"] for message in queued_jobs(redis_client)] == [nxt]
    # A job that no longer holds the side hands off nothing.
    assert enqueuer.hand_off_batch("demo", "partner", first) is None
    assert len(queued_jobs(redis_client)) == 1


def test_a_helper_is_sent_without_taking_the_side(enqueuer, redis_client):
    first = enqueuer.queue("demo", "partner", 5, "task_changed")
    helper = enqueuer.help_batch("demo", "partner")
    assert helper != first and redis_client.get(batch_key("demo", "partner")) == first
    assert [job(message) for message in queued_jobs(redis_client)] == [(SYNC_BATCH, ["demo", "partner"], None)] * 2


def test_claims_of_a_job_that_died_are_taken_again_once_they_lapse(enqueuer, redis_client):
    enqueuer.sync("demo", "partner", 5, "task_changed")
    assert claim_batch(redis_client, "demo", "partner", "dead-job", 200).tasks == [5]
    assert claim_batch(redis_client, "demo", "partner", "job-2", TTL_MS).tasks == []   # claim still live
    time.sleep(0.25)
    assert claim_batch(redis_client, "demo", "partner", "job-3", TTL_MS).tasks == [5]
    assert redis_client.hget(claims_key("demo", "partner"), "5").endswith(":job-3")


def test_a_job_delivered_again_takes_its_own_claims_back_at_once(enqueuer, redis_client):
    enqueuer.sync("demo", "partner", 5, "task_changed")
    assert claim_batch(redis_client, "demo", "partner", "killed-job", TTL_MS).tasks == [5]
    assert claim_batch(redis_client, "demo", "partner", "other-job", TTL_MS).tasks == []
    assert claim_batch(redis_client, "demo", "partner", "killed-job", TTL_MS).tasks == [5]


def test_settling_drops_only_the_jobs_own_claims(enqueuer, redis_client):
    for task in (5, 6):
        enqueuer.sync("demo", "partner", task, "task_changed")
    claim_batch(redis_client, "demo", "partner", "job-1", TTL_MS)
    redis_client.hset(claims_key("demo", "partner"), "6", f"{int(time.time() * 1000) + TTL_MS}:job-2")
    settle_batch(redis_client, "demo", "partner", "job-1", [5, 6])
    assert redis_client.hgetall(claims_key("demo", "partner")) == {"6": redis_client.hget(
        claims_key("demo", "partner"), "6")}
    assert redis_client.hget(claims_key("demo", "partner"), "6").endswith(":job-2")


def test_send_batch_only_for_a_side_with_waiting_tasks_and_no_job(enqueuer, redis_client):
    assert enqueuer.send_batch("demo", "partner") is None                 # nothing waits
    redis_client.hset(claims_key("demo", "partner"), "5", "0:dead-job")    # a dead job's claim
    sent = enqueuer.send_batch("demo", "partner")
    assert sent is not None and redis_client.get(batch_key("demo", "partner")) == sent
    assert enqueuer.send_batch("demo", "partner") is None                 # one is queued
    assert [job(message) for message in queued_jobs(redis_client)] == [(SYNC_BATCH, ["demo", "partner"], None)]


def test_a_job_that_could_not_be_sent_leaves_no_flag_behind(enqueuer, redis_client, monkeypatch):
    def refuse(*_, **__):
        raise ConnectionError("broker gone")

    monkeypatch.setattr(enqueuer.celery, "send_task", refuse)
    with pytest.raises(ConnectionError):
        enqueuer.sync("demo", "partner", 5, "task_changed")
    assert not redis_client.exists(pending_key("demo", "partner", 5), batch_key("demo", "partner"))
    monkeypatch.undo()
    # The sender's retry of the webhook queues it after all (the task waits in the dirty set).
    assert enqueuer.sync("demo", "partner", 5, "task_changed")
    assert claim_batch(redis_client, "demo", "partner", "job-1", TTL_MS).tasks == [5]


def test_a_batch_job_lost_with_its_flag_kept_is_sent_again_once_tasks_waited_too_long(enqueuer, redis_client):
    lost = enqueuer.queue("demo", "partner", 5, "task_changed")
    redis_client.delete(SYNC_QUEUE)                       # the message is gone, the flag is not
    assert enqueuer.send_batch("demo", "partner", stale_s=5) is None     # not waited long enough
    time.sleep(0.3)
    again = enqueuer.send_batch("demo", "partner", stale_s=0.2)
    assert again not in (None, lost) and redis_client.get(batch_key("demo", "partner")) == again
    assert [job(message) for message in queued_jobs(redis_client)] == [(SYNC_BATCH, ["demo", "partner"], None)]


def test_a_backlog_waiting_its_turns_is_not_taken_for_a_lost_job(enqueuer, redis_client):
    """Tasks left unclaimed while their link's slots are taken wait as long as the turns take: the
    side's job, handed on due at its link's next slot, is lost only once it is overdue by the
    staleness (then a job is sent again); their pending flags are that job's, not lost ones."""
    first = enqueuer.queue("demo", "partner", 5, "task_changed")
    enqueuer.queue("demo", "partner", 6, "task_changed")
    time.sleep(0.3)                                       # they have waited past the staleness ...
    assert claim_batch(redis_client, "demo", "partner", first, TTL_MS, most=0).left == 2
    nxt = enqueuer.hand_off_batch("demo", "partner", first, countdown_s=0.4)   # ... but their job is due
    redis_client.delete(SYNC_QUEUE)                       # and its message will be lost
    assert enqueuer.send_batch("demo", "partner", stale_s=0.2) is None
    assert enqueuer.recover_pending("demo", "partner", stale_s=0.2) == []
    time.sleep(0.4 + 0.25)                                # it is overdue: lost
    assert enqueuer.recover_pending("demo", "partner", stale_s=0.2) == []
    again = enqueuer.send_batch("demo", "partner", stale_s=0.2)
    assert again not in (None, nxt) and redis_client.get(batch_key("demo", "partner")) == again
    assert [job(message) for message in queued_jobs(redis_client)] == [(SYNC_BATCH, ["demo", "partner"], None)]
    assert enqueuer.send_batch("demo", "partner", stale_s=0.2) is None     # the new one is due now


def test_a_batch_begins_its_runs_in_one_step(enqueuer, redis_client):
    from crosslink.queue.names import lock_key
    from schemas.links import load_links
    from workers.runner import take_batch
    from workers.state import LinkState

    link = load_links(Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml").links[0]
    state = LinkState(redis_client, link.name)
    state.pair("task", "partner", 5, "client", 12)
    state.save_snapshots({("partner", 5): {"name": "p"}, ("client", 12): {"name": "c"}})
    state.expect_ahead("partner", 5, {"status": 3})                   # a write whose run did not finish
    for task in (5, 6, 7):
        enqueuer.sync(link.name, "partner", task, "task_changed")
    enqueuer.sync(link.name, "client", 12, "task_changed")             # the counterpart's own event waits
    redis_client.set(lock_key(link.name, "partner", 7), "another-run")
    five, six, seven = take_batch(redis_client, link, "partner", [5, 6, 7], "tok", 10_000)
    assert (five.counterpart, five.locked, five.hints, five.pending) == (12, False, ["task_changed"], True)
    assert json.loads(five.mine) == {"name": "p"} and json.loads(five.theirs) == {"name": "c"}
    assert five.queued is None and five.blocked is None and five.kept is None
    assert json.loads(five.expected) == {"status": 3}
    assert redis_client.get(lock_key(link.name, "partner", 5)) == redis_client.get(
        lock_key(link.name, "client", 12)) == "tok"
    assert (six.counterpart, six.locked, six.theirs) == (None, False, None)
    assert redis_client.get(lock_key(link.name, "partner", 6)) == "tok"
    # Taken: a later event queues a run of its own.
    assert not redis_client.exists(pending_key(link.name, "partner", 5), hints_key(link.name, "partner", 5))
    since = pending_since_key(link.name, "partner")
    assert redis_client.zscore(since, 5) is None and redis_client.zscore(since, 7) is not None
    # A pair another run holds: nothing taken, its event still waits for it.
    assert seven.locked and seven.hints == []
    assert redis_client.exists(pending_key(link.name, "partner", 7), hints_key(link.name, "partner", 7)) == 2
    # A severed link touches nothing: each run parks its event.
    state.sever("client", "token revoked", time.time())
    enqueuer.sync(link.name, "partner", 8, "task_changed")
    assert take_batch(redis_client, link, "partner", [8], "tok", 10_000) is None
    assert redis_client.exists(pending_key(link.name, "partner", 8)) and not redis_client.exists(
        lock_key(link.name, "partner", 8))


def test_a_running_jobs_hold_on_its_side_lapses_with_its_claims(enqueuer, redis_client):
    first = enqueuer.queue("demo", "partner", 5, "task_changed")
    assert claim_batch(redis_client, "demo", "partner", first, 200).owner   # killed right after
    enqueuer.queue("demo", "partner", 6, "task_changed")                     # joins the dead job
    time.sleep(0.25)
    assert not redis_client.exists(batch_key("demo", "partner"))
    second = enqueuer.queue("demo", "partner", 7, "task_changed")            # sends a job again
    assert second not in (None, first) and len(queued_jobs(redis_client)) == 2


def test_a_pending_flag_whose_job_was_lost_is_sent_its_job_again(enqueuer, redis_client):
    """A worker killed between taking a job message from the queue and recording it as unacked
    loses it; its task's pending flag would swallow every later event until it lapsed."""
    enqueuer.sync("demo", "partner", 5, "task_changed")
    redis_client.delete(SYNC_QUEUE, batch_key("demo", "partner"), dirty_key("demo", "partner"))   # lost
    assert not enqueuer.sync("demo", "partner", 5, "comment_added:9")    # swallowed behind the flag
    assert enqueuer.recover_pending("demo", "partner", stale_s=5) == []  # not set for long enough
    time.sleep(0.3)
    assert enqueuer.recover_pending("demo", "partner", stale_s=0.2) == [5]
    assert [job(message) for message in queued_jobs(redis_client)] == [(SYNC_TASK, ["demo", "partner", 5], None)]
    assert enqueuer.recover_pending("demo", "partner", stale_s=0.2) == []  # sent once per staleness
    # The job begins as any does: it takes both events, and the task is no longer pending.
    assert take_hints(redis_client, "demo", "partner", 5) == ["task_changed", "comment_added:9"]
    assert redis_client.zscore(pending_since_key("demo", "partner"), 5) is None


def test_a_flag_gone_without_its_job_beginning_is_forgotten(enqueuer, redis_client):
    enqueuer.sync("demo", "client", 6, "task_changed")
    redis_client.delete(pending_key("demo", "client", 6))  # lapsed, or its send failed
    time.sleep(0.1)
    assert enqueuer.recover_pending("demo", "client", stale_s=0.05) == []
    assert not redis_client.exists(pending_since_key("demo", "client"))


# --- what a job is called where people watch it (Flower's args column) -------------------------


def test_every_job_is_labelled_with_its_link_side_and_task(enqueuer, redis_client):
    """Flower's tasks page shows a message's argsrepr: a sync job's reads "link · side · #task",
    a batch job's "link · side · batch"; the worker still gets the JSON args."""
    batch = enqueuer.queue("partner-client", "client", 123, "task_changed")   # a lone event: the side's batch job
    claim_batch(redis_client, "partner-client", "client", batch, TTL_MS)
    take_hints(redis_client, "partner-client", "client", 123)
    enqueuer.queue("partner-client", "client", 123, "task_changed")          # a burst: the task's own job
    labels = [(message["headers"]["argsrepr"], job(message)[1]) for message in queued_jobs(redis_client)]
    assert labels == [("partner-client · client · batch", ["partner-client", "client"]),
                      ("partner-client · client · #123", ["partner-client", "client", 123])]


@pytest.mark.parametrize("name, args, label", [
    (SYNC_TASK, ["acme", "partner", 7], "acme · partner · #7"),
    (SYNC_BATCH, ["acme", "client"], "acme · client · batch"),
    (PROBE_LINK, ["acme"], "acme · probe"),
    (ANCHOR_LINK, [None, "daily"], "every link · anchor: daily"),
    (ANCHOR_LINK, ["acme", "severed"], "acme · anchor: severed"),
    (RECONCILE_POLL, ["partner", 60.0], "partner · poll"),
    (RECONCILE_TICK, [60.0, 60.0], None),       # Celery's own repr
    (SYNC_TASK, ["acme"], None),                # not the shape a sync job is sent with
])
def test_job_labels(name, args, label):
    assert job_label(name, args) == label


@pytest.mark.parametrize("name, args, fields", [
    (SYNC_TASK, ["acme", "partner", 7], {"link": "acme", "side": "partner", "task": 7}),
    (SYNC_BATCH, ["acme", "client"], {"link": "acme", "side": "client"}),
    (PROBE_LINK, ["acme"], {"link": "acme"}),
    (ANCHOR_LINK, [None, "daily"], {}),
    (RECONCILE_POLL, ["partner", 60.0], {"account": "partner"}),
    (RECONCILE_TICK, [60.0, 60.0], {}),
    (SYNC_TASK, "acme", {}),
])
def test_job_fields_name_what_a_job_serves_for_its_log_lines(name, args, fields):
    assert job_fields(name, args) == fields
