"""Quota-aware coalescing (crosslink.queue.coalesce): the hold a run is given once an account's day would
outrun its quota, decided by a pure function tested over its whole domain; read per account at most
every few seconds; and applied where an event schedules a run, against the real private Redis: a
held task is claimed by no batch job before its hold ends, the edits made meanwhile join its one
run, and below the quota nothing is held."""

from __future__ import annotations

import time
from collections import Counter
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crosslink.queue.claims import claim_batch
from crosslink.queue.coalesce import BASE_HOLD_S, AccountHolds, coalesce_hold_s, usage_hold_s
from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.names import batch_key, dirty_key, pending_key
from planfix.limiter import AccountLimiter
from tests.runs import take_hints
from tests.test_reconcile import links_doc, load
from workers import batch

TTL_MS = 60_000

QUOTA = st.integers(min_value=1, max_value=200_000)
FORECAST = st.floats(min_value=0, max_value=10_000_000, allow_nan=False)
HOLD = st.floats(min_value=0, max_value=600, allow_nan=False)


# --- the pure decision -----------------------------------------------------------------------------

@given(quota=QUOTA, share=st.floats(min_value=0, max_value=1), base=HOLD, most=HOLD)
def test_nothing_is_held_while_the_forecast_stays_within_the_quota(quota, share, base, most):
    assert coalesce_hold_s(quota * share, quota, base, most) == 0.0


@given(forecast=FORECAST, quota=st.integers(min_value=-5, max_value=0), base=HOLD, most=HOLD)
def test_an_account_without_a_quota_is_never_held(forecast, quota, base, most):
    assert coalesce_hold_s(forecast, quota, base, most) == 0.0


@given(forecast=FORECAST, quota=QUOTA, base=HOLD, most=st.floats(max_value=0, min_value=-10, allow_nan=False))
def test_a_zero_cap_turns_coalescing_off(forecast, quota, base, most):
    assert coalesce_hold_s(forecast, quota, base, most) == 0.0


@given(forecast=FORECAST, quota=QUOTA, base=HOLD, most=HOLD)
def test_the_hold_is_capped_and_at_least_the_base_past_the_quota(forecast, quota, base, most):
    hold = coalesce_hold_s(forecast, quota, base, most)
    assert 0.0 <= hold <= max(most, 0.0)
    if forecast > quota and most > 0:
        assert hold >= min(base, most)
    if forecast >= 2 * quota:
        assert hold == max(most, 0.0)


@given(forecast=FORECAST, more=st.floats(min_value=0, max_value=1_000_000, allow_nan=False), quota=QUOTA,
       base=HOLD, most=HOLD)
def test_more_forecast_never_holds_less(forecast, more, quota, base, most):
    assert coalesce_hold_s(forecast + more, quota, base, most) >= coalesce_hold_s(forecast, quota, base, most)


def test_the_hold_grows_from_the_base_just_past_the_quota_to_the_cap_at_twice_it():
    assert coalesce_hold_s(20_000, 20_000, 5, 30) == 0.0
    assert coalesce_hold_s(20_001, 20_000, 5, 30) == pytest.approx(5.0, abs=0.01)
    assert coalesce_hold_s(30_000, 20_000, 5, 30) == pytest.approx(17.5)
    assert coalesce_hold_s(40_000, 20_000, 5, 30) == 30.0


def test_a_usage_at_its_quota_is_held_and_an_idle_one_is_not():
    # 10 requests of 10 with the day not over: the pace runs out before midnight.
    assert BASE_HOLD_S <= usage_hold_s({"used_today": 10, "daily_quota": 10, "day_elapsed_s": 43_200}, 30) <= 30
    assert usage_hold_s({"used_today": 0, "daily_quota": 10, "day_elapsed_s": 43_200}, 30) == 0.0


# --- the per-process reader ------------------------------------------------------------------------

class CountingLimiter:
    """A limiter's usage() with fixed answers per account, counting its reads."""

    def __init__(self, usage: dict[str, dict]):
        self.answers = usage
        self.reads: Counter = Counter()

    def usage(self, account: str) -> dict:
        self.reads[account] += 1
        return self.answers[account]


OVER = {"used_today": 10, "daily_quota": 10, "day_elapsed_s": 43_200}
IDLE = {"used_today": 0, "daily_quota": 10, "day_elapsed_s": 43_200}


def test_a_sides_hold_is_its_accounts_larger_read_once_per_cache_period(tmp_path):
    config = load(tmp_path, links_doc(2))   # demo: partner/client; client-1: partner/client-1
    limiter = CountingLimiter({"partner": IDLE, "client": OVER, "client-1": IDLE})
    now = [0.0]
    holds = AccountHolds(limiter, config.links, 30, cache_s=5, clock=lambda: now[0])
    # A run of either side of demo reads one account and writes the other: both are held.
    assert holds.side_hold_s("demo", "partner") == holds.side_hold_s("demo", "client") >= BASE_HOLD_S
    assert holds.side_hold_s("client-1", "partner") == 0.0
    assert holds.side_hold_s("nobody", "partner") == 0.0
    assert limiter.reads == Counter(partner=1, client=1, **{"client-1": 1})
    assert not holds.stale("demo", "partner")
    now[0] = 5.0
    assert holds.stale("demo", "partner")
    limiter.answers["client"] = IDLE
    assert holds.side_hold_s("demo", "partner") == 0.0
    assert limiter.reads["client"] == 2


def test_with_coalescing_off_no_usage_is_read(tmp_path):
    config = load(tmp_path, links_doc(1))
    limiter = CountingLimiter({})
    holds = AccountHolds(limiter, config.links, 0)
    assert holds.side_hold_s("demo", "partner") == 0.0 and not holds.stale("demo", "partner")
    assert not limiter.reads


# --- applied where an event schedules a run (real Redis) --------------------------------------------

# A short hold, so the test waits it out: from HOLD_BASE_S just past the quota to HOLD_MAX_S.
HOLD_BASE_S, HOLD_MAX_S = 1.0, 2.0
# A person's next edit: after the burst window (a lone event), well within the hold.
NEXT_EDIT_S = 0.6


@pytest.fixture
def config(tmp_path):
    return load(tmp_path, links_doc(1))      # link demo: accounts partner and client


def spend_the_quota(redis_client, account: str = "partner") -> None:
    """ACCOUNT's quota is 10 and 10 went today: at this pace it would not last the day."""
    limiter = AccountLimiter(redis_client, rate_per_s=0)
    limiter.set_account_limits(account, daily_quota=10)
    for _ in range(10):
        assert limiter.acquire(account).go


@pytest.fixture
def sides(redis_client, redis_url, config, monkeypatch):
    """An enqueuer with the producer's holds, whose batch jobs are kept (when due, id) to be run by
    hand through the real batch job (_sync_batch): each run stands in for a sync run that takes its
    task's events (its pending flag and hints) and records them. The runs' own turns at the
    accounts are not under test: they ask a limiter of their own with no limits."""
    holds = AccountHolds(AccountLimiter(redis_client, rate_per_s=0), config.links, HOLD_MAX_S,
                         base_hold_s=HOLD_BASE_S)
    enqueuer = Enqueuer(redis_url, holds=holds)
    due: list[tuple[float, str]] = []
    monkeypatch.setattr(enqueuer, "_send_batch_job", lambda link, side, job_id, countdown_s=0.0, retries=0: due.append(
        (time.monotonic() + (countdown_s or 0.0), job_id)))
    runs: list[tuple[int, list[str]]] = []

    def begin(link, side, numbers, job_id):
        return [(number, SimpleNamespace(number=number, waits_s=None,
                                         hints=take_hints(redis_client, link.name, side, number),
                                         lock=SimpleNamespace(release=lambda: None))) for number in numbers]

    def finish(run, prefetched=None):
        runs.append((run.number, run.hints))
        return "updated"

    turns = AccountLimiter(redis_client, rate_per_s=0, daily_quota=0, prefix="test:turns")
    monkeypatch.setattr(batch, "runtime", lambda: SimpleNamespace(
        redis=redis_client, limiter=turns, enqueuer=enqueuer, settings=SimpleNamespace(time_scale=1.0),
        link=lambda name: next(link for link in config.links if link.name == name)))
    monkeypatch.setattr(batch, "begin_runs", begin)
    monkeypatch.setattr(batch, "finish", finish)
    monkeypatch.setattr(batch, "read_sources", lambda link, side, begun: {})
    monkeypatch.setattr(batch.telemetry, "count_run", lambda link, side, result: None)

    def run_due_jobs(until: float) -> int:
        """Run each batch job sent as it falls due, until UNTIL (time.monotonic): how many ran."""
        ran = 0
        while due and min(due)[0] <= until:
            due.sort()
            when, job_id = due.pop(0)
            time.sleep(max(0.0, when - time.monotonic()))
            batch.sync_side("demo", "client", job_id)
            ran += 1
        return ran

    yield SimpleNamespace(enqueuer=enqueuer, due=due, runs=runs, run_due_jobs=run_due_jobs)
    enqueuer.close()


def test_over_the_quota_two_edits_within_the_hold_make_one_run(redis_client, sides):
    spend_the_quota(redis_client)      # the partner account, where runs of the client side write
    start = time.monotonic()
    assert sides.enqueuer.queue("demo", "client", 5, "task_changed")
    # Its batch job is due at the hold's end, not now.
    assert len(sides.due) == 1 and sides.due[0][0] >= start + HOLD_BASE_S - 0.05
    # A job of the side that runs meanwhile (one due for another task, a helper) claims nothing yet.
    early = claim_batch(redis_client, "demo", "client", "another-job", TTL_MS)
    assert (early.tasks, early.left) == ([], 0) and 0 < early.held_s <= HOLD_MAX_S
    time.sleep(NEXT_EDIT_S)
    # The person's next edit joins the held run: no job of its own.
    assert sides.enqueuer.queue("demo", "client", 5, "comment_added:9") is None
    assert len(sides.due) == 1
    jobs = sides.run_due_jobs(start + 10)
    assert sides.runs == [(5, ["task_changed", "comment_added:9"])]
    assert jobs == 1
    assert time.monotonic() - start >= HOLD_BASE_S - 0.05          # the latency it cost
    assert not redis_client.exists(dirty_key("demo", "client"), pending_key("demo", "client", 5),
                                   batch_key("demo", "client"))


def test_under_the_quota_nothing_is_held_and_each_edit_after_a_run_has_its_own(redis_client, sides):
    start = time.monotonic()
    assert sides.enqueuer.queue("demo", "client", 5, "task_changed")
    assert sides.due[0][0] <= time.monotonic()                      # due at once
    sides.run_due_jobs(time.monotonic())
    assert sides.runs == [(5, ["task_changed"])]
    time.sleep(max(0.0, start + NEXT_EDIT_S - time.monotonic()))
    assert sides.enqueuer.queue("demo", "client", 5, "comment_added:9")
    sides.run_due_jobs(time.monotonic())
    assert sides.runs == [(5, ["task_changed"]), (5, ["comment_added:9"])]


def test_a_job_finding_only_held_tasks_hands_its_side_on_due_at_the_first_holds_end(redis_client, sides):
    """A job does not spin on tasks not yet due: one due now (another task's, put back before the
    hold began) syncs what is due, and the side's next job is due when the held task is."""
    spend_the_quota(redis_client)
    sides.enqueuer.queue("demo", "client", 5, "task_changed")
    held_until, first_job = sides.due.pop()
    batch.sync_side("demo", "client", first_job)                  # delivered before it was due
    assert sides.runs == []
    assert len(sides.due) == 1 and abs(sides.due[0][0] - held_until) < 0.1
    assert redis_client.get(batch_key("demo", "client"))            # the side stays with its job
    assert sides.run_due_jobs(held_until + 1) == 1
    assert [number for number, _ in sides.runs] == [5]


def test_due_tasks_are_claimed_before_held_ones_and_the_held_wait(redis_client, sides):
    spend_the_quota(redis_client)
    sides.enqueuer.queue("demo", "client", 5, "task_changed")      # held
    # Task 6 was put back waiting for its turn (workers.runner.wait_for_turn): due now.
    sides.enqueuer.wait_for_turn("demo", "client", 6, ["task_changed"], "", 0.0)
    claim = claim_batch(redis_client, "demo", "client", "job", TTL_MS)
    assert claim.tasks == [6] and claim.left == 0 and claim.held_s is not None
    assert redis_client.zrange(dirty_key("demo", "client"), 0, -1) == ["5"]


def test_a_run_put_back_for_its_turn_is_not_held_by_an_event_that_came_during_it(redis_client, sides):
    spend_the_quota(redis_client)
    sides.enqueuer.queue("demo", "client", 5, "task_changed")      # held: due later
    sides.enqueuer.wait_for_turn("demo", "client", 5, ["task_changed"], "", 0.0)
    claim = claim_batch(redis_client, "demo", "client", "job", TTL_MS)
    assert claim.tasks == [5]


def test_the_poller_sends_a_lost_sides_job_due_at_its_first_holds_end(redis_client, sides):
    spend_the_quota(redis_client)
    sides.enqueuer.queue("demo", "client", 5, "task_changed")
    redis_client.delete(batch_key("demo", "client"))                # the side's job and flag were lost
    sides.due.clear()
    before = time.monotonic()
    assert sides.enqueuer.send_batch("demo", "client")
    assert sides.due[0][0] >= before + HOLD_BASE_S - 0.2


# --- the setting ------------------------------------------------------------------------------------

def test_the_cap_is_a_setting_that_zero_turns_off_and_that_cannot_be_negative():
    from crosslink.base.settings import Settings

    assert Settings.from_env({}).coalesce_max_s == 30.0
    assert Settings.from_env({"CROSSLINK_COALESCE_MAX_S": "0"}).coalesce_max_s == 0.0
    with pytest.raises(ValueError, match="CROSSLINK_COALESCE_MAX_S"):
        Settings.from_env({"CROSSLINK_COALESCE_MAX_S": "-1"})
