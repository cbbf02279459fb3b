"""The retry policy: every failure kind gets its own answer, every delay stays under the broker's
visibility timeout, and only real attempts are counted."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planfix.errors import (
    AccessDenied,
    AuthError,
    InvalidRequest,
    NotFound,
    PermanentError,
    Queued,
    RateLimited,
    ScopeDenied,
    TransientError,
)
from workers.idempotency import LeaseBusy
from workers.retry import (
    BROKER_VISIBILITY_TIMEOUT_S,
    MAX_REASON,
    POLICY,
    Action,
    Backoff,
    FailureKind,
    LimiterWait,
    ReadBack,
    RetryPolicy,
    decide,
    failure_kind,
)

EXPECTED_KIND = [
    (TransientError("POST /task/5: HTTP 503", http_status=503), FailureKind.TRANSIENT),
    (RateLimited("429", retry_after_ms=1500, scope="rate"), FailureKind.RATE_LIMITED),
    (RateLimited("code 22", retry_after_ms=120_000, scope="daily_quota"), FailureKind.RATE_LIMITED),
    (LeaseBusy("demo:task:partner:5"), FailureKind.BUSY),
    (FailureKind.BUSY, FailureKind.BUSY),
    (Queued(), FailureKind.QUEUED),
    (InvalidRequest("HTTP 400 code 41", http_status=400, code=41), FailureKind.PERMANENT),
    (NotFound("HTTP 404 code 1000", http_status=404, code=1000), FailureKind.PERMANENT),
    (PermanentError("odd"), FailureKind.PERMANENT),
    (AuthError("HTTP 401 code 1"), FailureKind.SEVERING),
    (ScopeDenied("HTTP 405 code 5"), FailureKind.SEVERING),
    (AccessDenied("HTTP 403 code 6"), FailureKind.SEVERING),
    (KeyError("a bug"), FailureKind.PERMANENT),
]
EXPECTED_ACTION = {
    FailureKind.TRANSIENT: Action.RETRY, FailureKind.RATE_LIMITED: Action.WAIT, FailureKind.BUSY: Action.WAIT,
    FailureKind.QUEUED: Action.VERIFY, FailureKind.PERMANENT: Action.DEAD_LETTER, FailureKind.SEVERING: Action.PARK,
}


@pytest.mark.parametrize("error, kind", EXPECTED_KIND)
def test_each_error_has_its_kind_and_its_action(error, kind):
    assert failure_kind(error) is kind
    assert decide(error, 0, 1.0, jitter=0.5).action is EXPECTED_ACTION[kind]


def test_the_cap_stays_well_under_the_brokers_visibility_timeout():
    from workers.app import VISIBILITY_TIMEOUT_S

    assert BROKER_VISIBILITY_TIMEOUT_S == VISIBILITY_TIMEOUT_S
    assert POLICY.max_delay_s <= VISIBILITY_TIMEOUT_S / 2
    assert POLICY.transient.cap_s < POLICY.max_delay_s and POLICY.queued.cap_s < POLICY.max_delay_s


def test_a_policy_whose_delays_reach_the_visibility_timeout_is_refused():
    with pytest.raises(ValueError, match="visibility"):
        RetryPolicy(max_delay_s=BROKER_VISIBILITY_TIMEOUT_S)
    with pytest.raises(ValueError, match="exceeds"):
        RetryPolicy(transient=Backoff(cap_s=POLICY.max_delay_s + 1))
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(queued=ReadBack(max_attempts=0))


def test_transient_back_off_doubles_within_its_jitter_window_up_to_the_cap():
    rule = POLICY.transient
    attempts = range(rule.max_attempts - 1)
    lows = [decide(TransientError("503"), attempt, 1.0, jitter=0.0).delay_s for attempt in attempts]
    highs = [decide(TransientError("503"), attempt, 1.0, jitter=1.0).delay_s for attempt in attempts]
    for attempt, (low, high) in enumerate(zip(lows, highs)):
        ceiling = min(rule.cap_s, rule.base_s * 2 ** attempt)
        assert low == pytest.approx(ceiling / 2) and high == pytest.approx(ceiling)
    assert lows == sorted(lows) and max(highs) <= rule.cap_s
    assert rule.ceiling(10 ** 6) == rule.cap_s  # an absurd attempt count neither overflows nor passes the cap
    assert lows[0] == pytest.approx(rule.base_s / 2)


def test_transient_failures_give_up_after_max_attempts_with_a_dead_letter():
    attempt, retries = 0, 0
    while True:
        decision = decide(TransientError("POST /task/5: HTTP 500"), attempt, 0.01, jitter=0.3)
        assert decision.attempt == attempt + 1
        if decision.action is not Action.RETRY:
            break
        retries += 1
        attempt = decision.attempt
    assert decision.action is Action.DEAD_LETTER and retries == POLICY.transient.max_attempts - 1
    assert decision.reason == f"gave up after {POLICY.transient.max_attempts} attempts: POST /task/5: HTTP 500"
    assert decision.delay_s == 0


def test_rate_limited_waits_exactly_the_limiters_time_unscaled_and_counts_nothing():
    decision = decide(RateLimited("429", retry_after_ms=1234, scope="rate"), 5, 0.01)
    assert decision.action is Action.WAIT and decision.delay_s == 1.234 and decision.attempt == 5
    # A daily quota reset hours away: waited in steps the broker can hold, asking the limiter again.
    day = decide(RateLimited("code 22", retry_after_ms=86_400_000, scope="daily_quota"), 0, 1.0)
    assert day.delay_s == POLICY.rate_limited.cap_s < BROKER_VISIBILITY_TIMEOUT_S


def test_busy_waits_a_short_fixed_scaled_time_without_counting():
    for error in (LeaseBusy("k"), FailureKind.BUSY):
        decision = decide(error, 3, 0.5)
        assert (decision.action, decision.delay_s, decision.attempt) == (Action.WAIT, POLICY.busy.delay_s * 0.5, 3)


def test_a_queued_write_is_read_back_later_each_time_later_then_dead_lettered():
    delays, attempt = [], 0
    while True:
        decision = decide(Queued(), attempt, 1.0)
        if decision.action is not Action.VERIFY:
            break
        delays.append(decision.delay_s)
        attempt = decision.attempt
    assert delays[0] == POLICY.queued.first_s and delays == sorted(delays) and max(delays) <= POLICY.queued.cap_s
    assert len(delays) == POLICY.queued.max_attempts - 1
    assert decision.action is Action.DEAD_LETTER and "not seen applied" in decision.reason


def test_severing_parks_and_probes_later_and_permanent_dead_letters_with_the_reason():
    park = decide(AuthError("GET /task/5: HTTP 401 code 1: bad token"), 2, 0.1)
    assert park.action is Action.PARK and park.delay_s == pytest.approx(POLICY.severed.probe_after_s * 0.1)
    assert park.attempt == 2
    dead = decide(InvalidRequest("POST /task/: HTTP 400 code 41: project: not found"), 4, 1.0)
    assert dead.action is Action.DEAD_LETTER and dead.reason == "POST /task/: HTTP 400 code 41: project: not found"
    assert dead.attempt == 4


def test_an_unexpected_error_is_named_and_its_reason_is_bounded():
    decision = decide(KeyError("x" * 1000), 0)
    assert decision.action is Action.DEAD_LETTER
    assert decision.reason.startswith("KeyError: ") and len(decision.reason) == MAX_REASON


def test_a_stricter_policy_is_just_data():
    policy = RetryPolicy(transient=Backoff(base_s=1.0, cap_s=4.0, max_attempts=2),
                         rate_limited=LimiterWait(cap_s=10.0))
    assert decide(TransientError("503"), 0, 1.0, jitter=1.0, policy=policy).delay_s == 1.0
    assert decide(TransientError("503"), 1, 1.0, policy=policy).action is Action.DEAD_LETTER
    assert decide(RateLimited("q", retry_after_ms=60_000, scope="daily_quota"), 0, policy=policy).delay_s == 10.0


ERRORS = st.one_of(
    st.builds(lambda: TransientError("503", http_status=503)),
    st.builds(lambda ms, scope: RateLimited("limited", retry_after_ms=ms, scope=scope),
              st.integers(min_value=-10, max_value=10 ** 10), st.sampled_from(["rate", "daily_quota", "limiter"])),
    st.builds(lambda: LeaseBusy("k")),
    st.just(FailureKind.BUSY),
    st.builds(Queued),
    st.builds(lambda: InvalidRequest("400")),
    st.builds(lambda: NotFound("404")),
    st.builds(lambda: AuthError("401")),
    st.builds(lambda: AccessDenied("403")),
    st.builds(lambda: ValueError("bug")),
)


@settings(max_examples=400, deadline=None)
@given(ERRORS, st.integers(min_value=-3, max_value=10 ** 6), st.floats(min_value=0, max_value=1000),
       st.one_of(st.none(), st.floats(min_value=-1, max_value=2)))
def test_every_decision_keeps_delays_bounded_and_attempts_monotone(error, attempt, scale, jitter):
    decision = decide(error, attempt, scale, jitter=jitter)
    assert 0.0 <= decision.delay_s <= POLICY.max_delay_s < BROKER_VISIBILITY_TIMEOUT_S
    start = max(0, attempt)
    assert start <= decision.attempt <= start + 1
    kind = failure_kind(error)
    assert decision.action is (EXPECTED_ACTION[kind] if decision.action is not Action.DEAD_LETTER
                               else Action.DEAD_LETTER)
    if kind in (FailureKind.RATE_LIMITED, FailureKind.BUSY, FailureKind.SEVERING, FailureKind.PERMANENT):
        assert decision.attempt == start, "only real attempts count"
    if kind is FailureKind.RATE_LIMITED:
        assert decision.delay_s == min(error.retry_after_ms / 1000, POLICY.rate_limited.cap_s)
    if kind in (FailureKind.TRANSIENT, FailureKind.QUEUED):
        assert decision.attempt == start + 1
        gives_up = start + 1 >= (POLICY.transient if kind is FailureKind.TRANSIENT else POLICY.queued).max_attempts
        assert (decision.action is Action.DEAD_LETTER) == gives_up


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(["transient", "rate", "busy"]), max_size=60))
def test_waiting_for_the_limiter_or_a_lock_never_uses_up_the_retry_budget(outcomes):
    """A job meeting any mix of limits, locks and transient failures dead-letters exactly at the
    max_attempts-th transient failure, never earlier."""
    errors = {"transient": TransientError("503"), "rate": RateLimited("429", retry_after_ms=900, scope="rate"),
              "busy": LeaseBusy("k")}
    attempt, transient_seen = 0, 0
    for outcome in outcomes:
        decision = decide(errors[outcome], attempt, 0.01, jitter=0.5)
        transient_seen += outcome == "transient"
        if decision.action is Action.DEAD_LETTER:
            assert transient_seen == POLICY.transient.max_attempts
            return
        assert decision.attempt >= attempt
        attempt = decision.attempt
    assert transient_seen < POLICY.transient.max_attempts and attempt == transient_seen
