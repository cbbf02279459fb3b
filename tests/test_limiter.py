"""The account-wide limiter against the real private Redis: spacing of grants (property-based),
many threads and several processes sharing one account, the daily quota, shared pauses and
per-account overrides.

Grant times are Redis's own clock (Permit.at_us), so spacing is checked exactly as the Lua
script decided it, not through the jitter of the test process.
"""

from __future__ import annotations

import multiprocessing
import threading
import time

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from planfix.limiter import (
    DAY_S,
    DEFAULT_SAFETY,
    FORECAST_MIN_WINDOW_S,
    RESERVATION_GRACE_MS,
    AccountLimiter,
    Outlook,
    Permit,
    forecast_day_requests,
)

# Rates used in tests are high (tens per second) so a run proves spacing in a fraction of a
# second; the same script serves 1 req/s in production.
FAST_RATE = 20.0
# Redis TIME has microsecond resolution and the script rounds the bucket to whole µs.
ROUNDING_US = 2
# Share of the possible grants a spinning caller must get: below 1 because a loaded test
# machine (2 cores, other suites running) makes callers miss slots; the limit itself is
# checked exactly.
STARVATION_FLOOR = 0.7


def grant_times(limiter: AccountLimiter, account: str, duration_s: float) -> list[int]:
    """Spin on acquire for DURATION_S; return the Redis times of the grants."""
    grants = []
    deadline = time.monotonic() + duration_s
    while time.monotonic() < deadline:
        permit = limiter.acquire(account)
        if permit.go:
            grants.append(permit.at_us)
    return grants


def assert_spacing(grants: list[int], interval_us: float, burst: int = 1) -> None:
    """GCRA's promise: any k+1 grants span at least (k - burst + 1) intervals."""
    grants = sorted(grants)
    for i in range(len(grants)):
        for k in range(burst, min(len(grants) - i, burst + 4)):
            span = grants[i + k] - grants[i]
            assert span >= (k - burst + 1) * interval_us - ROUNDING_US, (i, k, span, interval_us)


# -- spacing ---------------------------------------------------------------------------------


def test_first_request_goes_and_the_second_waits_one_interval(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=2.0, safety=0.05)
    first = limiter.acquire("acme")
    second = limiter.acquire("acme")
    assert first.go and first.reason is None and first.wait_ms == 0
    assert not second.go and second.reason == "rate"
    # 1/2 s * 1.05 = 525 ms minus the time between the two calls (generous for a busy CI box).
    assert 300 <= second.wait_ms <= 525
    assert not second  # a refusal is falsy, a grant truthy
    assert first


def test_waiting_the_named_time_is_enough(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=FAST_RATE)
    assert limiter.acquire("acme").go
    refusal = limiter.acquire("acme")
    assert not refusal.go
    time.sleep(refusal.wait_ms / 1000.0)
    assert limiter.acquire("acme").go


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rate=st.floats(min_value=10.0, max_value=80.0), burst=st.integers(min_value=1, max_value=3),
       safety=st.sampled_from([0.0, 0.05, 0.2]))
def test_grants_are_never_closer_than_the_interval(redis_client, rate, burst, safety):
    limiter = AccountLimiter(redis_client, rate_per_s=rate, burst=burst, safety=safety,
                             prefix=f"prop:{time.monotonic_ns()}")
    grants = grant_times(limiter, "acme", 0.25)
    interval_us = 1_000_000 / rate * (1 + safety)
    assert_spacing(grants, interval_us, burst)
    # And the limiter is not starving us: the budget is actually used (the lower bound leaves
    # room for a loaded machine that misses slots; the upper one is the limit itself).
    span_s = (grants[-1] - grants[0]) / 1e6
    expected = burst + int(span_s * 1e6 / interval_us)
    assert expected * STARVATION_FLOOR - 1 <= len(grants) <= expected + 1


def test_accounts_are_independent(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=1.0)
    assert limiter.acquire("partner").go
    assert not limiter.acquire("partner").go
    assert limiter.acquire("client").go


def test_safety_stretches_the_interval(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=1.0, safety=0.05)
    assert limiter.interval_s("acme") == pytest.approx(1.05)
    assert limiter.acquire("acme").go
    assert limiter.acquire("acme").wait_ms > 1000


# -- answers: the floor under the next grant ------------------------------------------------


def _redis_now_us(client: redis.Redis) -> int:
    seconds, micros = client.time()
    return int(seconds) * 1_000_000 + int(micros)


def test_an_answer_holds_the_next_grant_one_interval_after_it(redis_client):
    """Planfix counts a request when it arrives, which may be long after its grant; it has
    arrived by the time its answer is back, so the next grant comes a whole interval after the
    answer, not only after the grant (which, answered late, would be too soon)."""
    limiter = AccountLimiter(redis_client, rate_per_s=FAST_RATE, daily_quota=0)
    first = limiter.acquire("acme", "a")
    assert first.go
    time.sleep(0.04)  # the request spends most of an interval before its answer comes
    before_us = _redis_now_us(redis_client)
    floor_us = limiter.answered("acme")
    interval_us = 1_000_000 / FAST_RATE
    assert before_us + interval_us <= floor_us <= _redis_now_us(redis_client) + interval_us
    # Grant spacing alone would let the next one go at first + 52.5 ms, 12.5 ms after the answer.
    assert floor_us > first.at_us + interval_us * (1 + DEFAULT_SAFETY)
    refused = limiter.acquire("acme", "b")
    assert not refused.go and refused.reason == "rate"
    outlook = limiter.peek("acme", "b")
    assert outlook.held and abs(outlook.wait_ms - refused.wait_ms) <= 5
    assert limiter.peek("acme", "c").wait_ms >= refused.wait_ms - 5
    time.sleep(refused.wait_ms / 1000.0)
    second = None
    while second is None or not second.go:
        second = limiter.acquire("acme", "b")
    assert second.at_us >= floor_us


def test_a_prompt_answer_leaves_the_grant_spacing_as_it_was(redis_client):
    """The floor costs nothing while answers come back within the safety margin."""
    limiter = AccountLimiter(redis_client, rate_per_s=FAST_RATE, daily_quota=0)
    first = limiter.acquire("acme")
    assert first.go
    limiter.answered("acme")
    grants = [first.at_us] + grant_times(limiter, "acme", 0.12)[:1]
    assert len(grants) == 2
    spacing_us = 1_000_000 / FAST_RATE * (1 + DEFAULT_SAFETY)
    assert spacing_us - ROUNDING_US <= grants[1] - grants[0] <= spacing_us + 20_000


def test_answers_set_no_floor_without_a_rate_limit_or_with_a_burst(redis_client):
    unlimited = AccountLimiter(redis_client, rate_per_s=0, daily_quota=0)
    assert unlimited.acquire("free").go and unlimited.answered("free") == 0
    assert unlimited.acquire("free").go
    bursty = AccountLimiter(redis_client, rate_per_s=1.0, daily_quota=0)
    bursty.set_account_limits("bursty", burst=3)
    assert bursty.acquire("bursty").go and bursty.answered("bursty") == 0
    assert bursty.acquire("bursty").go


def test_reset_forgets_the_floor(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=1.0, daily_quota=0)
    assert limiter.acquire("acme").go and limiter.answered("acme") > 0
    limiter.reset("acme")
    assert limiter.acquire("acme").go


# -- concurrency -----------------------------------------------------------------------------


def test_many_threads_never_get_two_grants_within_one_interval(redis_url):
    rate = FAST_RATE
    client = redis.Redis.from_url(redis_url)
    limiter = AccountLimiter(client, rate_per_s=rate)
    grants: list[int] = []
    lock = threading.Lock()

    def hammer() -> None:
        mine = grant_times(limiter, "acme", 1.0)
        with lock:
            grants.extend(mine)

    threads = [threading.Thread(target=hammer) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    interval_us = 1_000_000 / rate * 1.05
    assert_spacing(grants, interval_us)
    assert len(set(grants)) == len(grants)
    # About one second's worth of grants, not fewer (nobody starves the account).
    per_second = 1_000_000 / interval_us
    assert per_second * STARVATION_FLOOR <= len(grants) <= per_second + 2


def _process_hammer(url: str, rate: float, duration_s: float, start, out: multiprocessing.Queue) -> None:
    limiter = AccountLimiter(redis.Redis.from_url(url), rate_per_s=rate)
    limiter.usage("acme")  # connect before the start line
    start.wait(timeout=30)
    out.put(grant_times(limiter, "acme", duration_s))


def test_several_processes_share_one_budget(redis_url):
    rate = FAST_RATE
    context = multiprocessing.get_context("fork")
    out = context.Queue()
    start = context.Barrier(4)
    workers = [context.Process(target=_process_hammer, args=(redis_url, rate, 1.0, start, out))
               for _ in range(4)]
    for worker in workers:
        worker.start()
    results = [out.get(timeout=30) for _ in workers]
    for worker in workers:
        worker.join(timeout=10)
        assert worker.exitcode == 0
    grants = [g for result in results for g in result]
    # GCRA serves whoever asks first after a slot opens, not each caller in turn: on a loaded
    # 2-core machine one of four spinning processes can miss every slot. Sharing is shown by
    # grants going to more than one process while the total stays within one budget.
    assert sum(1 for result in results if result) >= 2, "grants went to more than one process"
    interval_us = 1_000_000 / rate * 1.05
    assert_spacing(grants, interval_us)
    per_second = 1_000_000 / interval_us
    assert per_second * STARVATION_FLOOR <= len(grants) <= per_second + 2


# -- daily quota -----------------------------------------------------------------------------


def _ms_to_utc_midnight(client: redis.Redis) -> int:
    seconds, micros = client.time()
    now_us = seconds * 1_000_000 + micros
    return ((seconds // 86400 + 1) * 86400 * 1_000_000 - now_us) // 1000


def test_daily_quota_counts_grants_and_refuses_until_utc_midnight(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=0, daily_quota=5)
    permits = [limiter.acquire("acme") for _ in range(7)]
    assert [p.go for p in permits] == [True] * 5 + [False] * 2
    assert [p.used_today for p in permits[:5]] == [1, 2, 3, 4, 5]
    refusal = permits[-1]
    assert refusal.reason == "daily_quota"
    assert abs(refusal.wait_ms - _ms_to_utc_midnight(redis_client)) < 2000
    assert limiter.usage("acme")["used_today"] == 5


def test_refusals_do_not_count_against_the_quota(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=1.0, daily_quota=3)
    for _ in range(10):
        limiter.acquire("acme")
    assert limiter.usage("acme")["used_today"] == 1


def test_the_counter_starts_again_on_a_new_utc_day(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=0, daily_quota=2)
    assert limiter.acquire("acme").go and limiter.acquire("acme").go
    assert not limiter.acquire("acme").go
    # Pretend the counter was written yesterday (Redis's clock cannot be moved).
    seconds, _ = redis_client.time()
    redis_client.hset("crosslink:limiter:acme:state", "day", seconds // 86400 - 1)
    fresh = limiter.acquire("acme")
    assert fresh.go and fresh.used_today == 1


def test_zero_quota_and_zero_rate_mean_no_limit(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=0, daily_quota=0)
    assert all(limiter.acquire("acme").go for _ in range(50))


def test_usage_says_how_far_into_the_utc_day_redis_is(redis_client):
    seconds, micros = redis_client.time()
    elapsed = AccountLimiter(redis_client).usage("acme")["day_elapsed_s"]
    assert 0 <= elapsed < DAY_S
    # The same day, a moment later (unless midnight fell in between).
    assert 0 <= (elapsed - (seconds % DAY_S + micros / 1e6)) % DAY_S < 5


# -- the day's forecast (pure) ---------------------------------------------------------------

USED = st.integers(min_value=0, max_value=10_000_000)
ELAPSED = st.floats(min_value=0, max_value=2 * DAY_S, allow_nan=False)


def test_forecast_projects_the_pace_linearly_once_an_hour_has_passed():
    assert forecast_day_requests(5000, DAY_S / 4) == pytest.approx(20_000)
    assert forecast_day_requests(1000, 2 * 3600) == pytest.approx(12_000)
    assert forecast_day_requests(0, 12 * 3600) == 0


def test_forecast_damps_a_burst_in_the_first_hour():
    # 60 requests in the first minute are not 86,400 a day: the pace is taken over an hour.
    assert forecast_day_requests(60, 60) == pytest.approx(60 + 60 / 3600 * (DAY_S - 60))
    assert forecast_day_requests(60, 0) == pytest.approx(60 + 60 * DAY_S / FORECAST_MIN_WINDOW_S)


@given(used=USED, elapsed=ELAPSED)
def test_forecast_is_never_below_what_was_used_and_is_it_at_the_days_end(used, elapsed):
    forecast = forecast_day_requests(used, elapsed)
    assert forecast >= used
    if elapsed >= DAY_S:
        assert forecast == used
    # Never more than the pace over the shortest window allows, for the whole day ahead.
    assert forecast <= used * (1 + DAY_S / FORECAST_MIN_WINDOW_S) * (1 + 1e-12)


@given(used=USED, more=st.integers(min_value=0, max_value=1000), elapsed=ELAPSED)
def test_more_requests_so_far_never_forecast_fewer(used, more, elapsed):
    assert forecast_day_requests(used + more, elapsed) >= forecast_day_requests(used, elapsed)


@given(used=USED, elapsed=ELAPSED, later=st.floats(min_value=0, max_value=DAY_S, allow_nan=False))
def test_the_same_requests_later_in_the_day_never_forecast_more(used, elapsed, later):
    assert forecast_day_requests(used, elapsed + later) <= forecast_day_requests(used, elapsed) * (1 + 1e-12)


@given(used=USED, elapsed=st.floats(min_value=FORECAST_MIN_WINDOW_S, max_value=DAY_S, allow_nan=False))
def test_after_the_first_hour_the_forecast_is_the_plain_average_pace(used, elapsed):
    assert forecast_day_requests(used, elapsed) == pytest.approx(used * DAY_S / elapsed, rel=1e-9)


@given(used=USED, elapsed=st.floats(min_value=0, max_value=FORECAST_MIN_WINDOW_S, allow_nan=False),
       step=st.floats(min_value=0, max_value=60, allow_nan=False))
def test_the_forecast_moves_smoothly_through_the_first_hour(used, elapsed, step):
    """No jump where the damping ends: the forecast is continuous in the time of day, its
    slope never steeper than the plain projection's at the end of the first hour."""
    here, later = forecast_day_requests(used, elapsed), forecast_day_requests(used, elapsed + step)
    steepest = used * DAY_S / FORECAST_MIN_WINDOW_S ** 2
    assert 0 <= here - later <= steepest * step * (1 + 1e-9) + 1e-9


@pytest.mark.parametrize("args", [(-1, 0), (0, -1)])
def test_forecast_refuses_negative_counts_and_times(args):
    with pytest.raises(ValueError):
        forecast_day_requests(*args)


def test_forecast_refuses_a_window_outside_the_day():
    for window in (0, DAY_S + 1):
        with pytest.raises(ValueError):
            forecast_day_requests(1, 1, min_window_s=window)


# -- shared pauses ---------------------------------------------------------------------------


def test_block_until_pauses_every_process_then_lifts(redis_client, redis_url):
    limiter = AccountLimiter(redis_client, rate_per_s=0)
    other_process = AccountLimiter(redis.Redis.from_url(redis_url), rate_per_s=0)
    assert limiter.block_until("acme", 0.3) >= 299
    refusal = other_process.acquire("acme")
    assert not refusal.go and refusal.reason == "daily_quota"
    assert 200 < refusal.wait_ms <= 300
    assert other_process.acquire("elsewhere").go
    time.sleep(refusal.wait_ms / 1000.0 + 0.01)
    assert other_process.acquire("acme").go


def test_a_pause_only_extends(redis_client):
    limiter = AccountLimiter(redis_client)
    limiter.block_until("acme", 5)
    assert limiter.block_until("acme", 0.1) > 4000
    assert limiter.acquire("acme").wait_ms > 4000


def test_block_reason_is_reported(redis_client):
    limiter = AccountLimiter(redis_client)
    limiter.block_until("acme", 1, reason="rate")
    permit = limiter.acquire("acme")
    assert permit.reason == "rate"
    usage = limiter.usage("acme")
    assert usage["blocked_reason"] == "rate" and 0 < usage["blocked_ms"] <= 1000
    limiter.reset("acme")
    assert limiter.acquire("acme").go


# -- blocking acquire ------------------------------------------------------------------------


def test_acquire_blocking_sleeps_for_the_next_slot(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=10.0)
    assert limiter.acquire("acme").go
    started = time.monotonic()
    permit = limiter.acquire_blocking("acme", max_wait_s=2.0)
    elapsed = time.monotonic() - started
    assert permit.go
    assert 0.08 <= elapsed < 1.0


def test_acquire_blocking_gives_up_at_once_when_the_wait_is_too_long(redis_client):
    limiter = AccountLimiter(redis_client)
    limiter.block_until("acme", 60)
    started = time.monotonic()
    permit = limiter.acquire_blocking("acme", max_wait_s=0.5)
    assert not permit.go and permit.wait_ms > 50_000
    assert time.monotonic() - started < 0.5


# -- overrides and validation ----------------------------------------------------------------


def test_per_account_overrides_apply_only_to_that_account(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=1.0, daily_quota=100)
    limiter.set_account_limits("big", rate_per_s=FAST_RATE, daily_quota=3)
    assert limiter.limits("big") == {"rate_per_s": FAST_RATE, "burst": 1, "daily_quota": 3}
    assert limiter.interval_s("big") == pytest.approx(1 / FAST_RATE * 1.05)
    grants = grant_times(limiter, "big", 0.3)
    assert len(grants) == 3  # the quota override
    assert_spacing(grants, 1_000_000 / FAST_RATE * 1.05)
    assert grants[-1] - grants[0] < 200_000  # the rate override (1/s would take 2 s)
    limiter.clear_account_limits("big")
    assert limiter.limits("big")["daily_quota"] == 100


def test_burst_override_allows_back_to_back_requests(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=1.0)
    limiter.set_account_limits("acme", burst=3)
    assert [limiter.acquire("acme").go for _ in range(4)] == [True, True, True, False]


@pytest.mark.parametrize("kwargs", [{"rate_per_s": -1}, {"burst": 0}, {"safety": -0.1}])
def test_bad_settings_are_refused(redis_client, kwargs):
    with pytest.raises(ValueError):
        AccountLimiter(redis_client, **kwargs)


@pytest.mark.parametrize("kwargs", [{"rate_per_s": -1}, {"burst": 0}, {"daily_quota": -5}])
def test_bad_overrides_are_refused(redis_client, kwargs):
    limiter = AccountLimiter(redis_client)
    with pytest.raises(ValueError):
        limiter.set_account_limits("acme", **kwargs)


def test_works_with_a_bytes_redis_client(redis_url):
    limiter = AccountLimiter(redis.Redis.from_url(redis_url), rate_per_s=1.0)
    assert isinstance(limiter.acquire("acme"), Permit)
    assert limiter.acquire("acme").reason == "rate"


def _lane_grants(limiter: AccountLimiter, demand: dict[str, int], duration_s: float) -> dict[str, int]:
    """Lanes asking over and over, DEMAND[lane] callers each, the way re-queued jobs come back
    for their reservation; how many grants each lane got."""
    granted = {lane: 0 for lane in demand}
    come_back = {(lane, n): 0.0 for lane, callers in demand.items() for n in range(callers)}
    start = time.monotonic()
    while time.monotonic() - start < duration_s:
        now = time.monotonic()
        for (lane, n), at in come_back.items():
            if at <= now:
                permit = limiter.acquire("acct", lane)
                if permit.go:
                    granted[lane] += 1
                    come_back[(lane, n)] = now
                else:
                    come_back[(lane, n)] = now + permit.wait_ms / 1000.0
        time.sleep(0.002)
    return granted


def test_lanes_take_turns_however_many_callers_each_has(redis_client):
    """A busy link with many jobs gets no more of a shared account than a link with one."""
    limiter = AccountLimiter(redis_client, rate_per_s=20, daily_quota=0)
    granted = _lane_grants(limiter, {"busy": 12, "quiet": 1, "middle": 3}, duration_s=3.0)
    shares = list(granted.values())
    jain = sum(shares) ** 2 / (len(shares) * sum(share * share for share in shares))
    # Without turns the busy lane would take about 12/16 of the slots (Jain's index ~0.5). On a
    # loaded machine a lane's callers come back late and lose a turn now and then (CI once saw
    # 0.93 with 24/20/12 grants): the bar is the product's fairness floor, 0.9.
    assert jain >= 0.9, granted
    # Work-conserving: together they used (nearly) every slot there was.
    assert sum(granted.values()) >= 0.85 * 3.0 * 20 / (1 + DEFAULT_SAFETY), granted


def test_a_lone_lane_gets_every_slot(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=20, daily_quota=0)
    granted = _lane_grants(limiter, {"only": 4}, duration_s=2.0)
    assert granted["only"] >= 0.85 * 2.0 * 20 / (1 + DEFAULT_SAFETY), granted


def test_a_reservation_is_kept_for_its_lane_then_lapses(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=10, daily_quota=0)
    assert limiter.acquire("acct", "a").go
    refused = limiter.acquire("acct", "b")        # b now holds the next slot
    assert not refused.go and refused.wait_ms > 0
    time.sleep(refused.wait_ms / 1000.0 + 0.01)
    assert not limiter.acquire("acct", "c").go    # the slot that came is b's, not c's
    assert limiter.acquire("acct", "b").go
    # A lane that never comes back loses its slot after the grace, and the others go on.
    assert not limiter.acquire("acct", "gone").go
    time.sleep(RESERVATION_GRACE_MS / 1000.0 + 0.3)
    assert limiter.acquire("acct", "c").go


# -- peek: what a lane would get, taking nothing ---------------------------------------------


def test_peek_takes_no_slot_and_holds_none(redis_client):
    """Peeking as often as one likes leaves the budget as it was: the next acquire is granted,
    nothing counts against the quota, and no lane is given a reservation."""
    limiter = AccountLimiter(redis_client, rate_per_s=10, daily_quota=100)
    for _ in range(5):
        outlook = limiter.peek("acct", "a")
        assert (outlook.wait_ms, outlook.free, outlook.held, outlook.reason) == (0, 1, False, "rate")
    assert limiter.usage("acct")["used_today"] == 0
    assert not redis_client.exists("crosslink:limiter:acct:lanes")
    assert limiter.acquire("acct", "a").go


def test_peek_says_when_the_lanes_next_slot_comes_as_acquire_would(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=10, daily_quota=0)
    assert limiter.acquire("acct", "a").go
    ahead = limiter.peek("acct", "b")
    assert not ahead.held and 50 < ahead.wait_ms <= 105
    refused = limiter.acquire("acct", "b")                  # b now holds that slot
    assert not refused.go and abs(refused.wait_ms - ahead.wait_ms) <= 5
    mine, theirs = limiter.peek("acct", "b"), limiter.peek("acct", "c")
    assert mine.held and abs(mine.wait_ms - refused.wait_ms) <= 5
    # c's next slot comes after the one b holds: lanes take turns.
    assert not theirs.held and theirs.wait_ms > mine.wait_ms + 50
    assert (mine.others, theirs.others) == (0, 1)
    assert mine.interval_s == pytest.approx(0.1 * (1 + DEFAULT_SAFETY), rel=1e-3)
    time.sleep(mine.wait_ms / 1000.0 + 0.01)
    assert limiter.peek("acct", "b").wait_ms == 0 and limiter.peek("acct", "c").wait_ms > 0
    assert limiter.acquire("acct", "b").go


def test_peek_counts_a_burst_allowance_and_the_quota_left(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=10, daily_quota=0)
    limiter.set_account_limits("acct", burst=4)
    assert limiter.peek("acct").free == 4
    assert limiter.acquire("acct").go and limiter.acquire("acct").go
    assert limiter.peek("acct").free == 2
    limiter.set_account_limits("acct", daily_quota=3)
    assert limiter.peek("acct").free == 1
    assert limiter.acquire("acct").go
    spent = limiter.peek("acct")
    assert spent.free == 0 and spent.reason == "daily_quota"
    assert abs(spent.wait_ms - _ms_to_utc_midnight(redis_client)) < 2000


def test_peek_without_limits_and_during_a_pause(redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=0, daily_quota=0)
    assert limiter.peek("acme") == Outlook(wait_ms=0, reason=None, free=None, held=False, interval_s=0.0, others=0)
    limiter.block_until("acme", 0.3, reason="rate")
    paused = limiter.peek("acme")
    assert paused.reason == "rate" and 200 < paused.wait_ms <= 300 and paused.free == 0
