"""Whole-pipeline fixtures: a Redis of the module's own, the emulator over loopback, the producer
and a real `celery worker` process, with the emulator's scenarios delivering webhooks over HTTP.

The session Redis of tests/conftest.py is flushed between tests, which would wipe the broker's
bindings under a running worker; so every e2e module starts its own server.
"""

from __future__ import annotations

import contextlib
import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from crosslink.lab.demo import example
from crosslink.lab.embedded_redis import EmbeddedRedis
from crosslink.lab.stack import LocalStack
from planfix.limiter import AccountLimiter
from producers.reconcile import poll_accounts

# Fast limits for the behaviour tests; tests/e2e/test_limits.py runs at Planfix's own 1/s.
E2E_RATE_PER_S = 20.0
# Scenario retries (15 min, 30 min, ...) and the 3-minute pause shrink by this factor.
E2E_SCENARIO_TIME_SCALE = 0.001
WAIT_S = 60.0


def seeds(rate_per_s: float = E2E_RATE_PER_S) -> tuple[dict[str, Any], dict[str, Any]]:
    emulator = copy.deepcopy(example("emulator.yaml"))
    emulator["time_scale"] = E2E_SCENARIO_TIME_SCALE
    for account in emulator["accounts"].values():
        account["limits"] = {"rate_per_s": rate_per_s, "daily_quota": 100000}
    return emulator, copy.deepcopy(example("links.yaml"))


def start_stack(tmp_path_factory: pytest.TempPathFactory, rate_per_s: float = E2E_RATE_PER_S,
                workers: int = 1, edit_links: Callable[[dict[str, Any]], None] | None = None
                ) -> tuple[LocalStack, EmbeddedRedis]:
    server = EmbeddedRedis(persistent=True).start()
    emulator, links = seeds(rate_per_s)
    if edit_links is not None:
        edit_links(links)
    stack = LocalStack(emulator, links, redis_url=server.url, workdir=tmp_path_factory.mktemp("stack"),
                       workers=workers, concurrency=2, time_scale=0.01)
    try:
        stack.start()
        stack.backfill("demo")  # the seeded tasks exist before the link: bring them in
        assert stack.wait_quiet(WAIT_S), "the backfill did not finish"
    except BaseException:
        stack.stop()
        server.cleanup()
        raise
    return stack, server


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    stack, server = start_stack(tmp_path_factory)
    try:
        yield stack
    finally:
        stack.stop()
        server.cleanup()


def eventually(predicate: Callable[[], Any], timeout: float = WAIT_S, what: str = "condition") -> Any:
    """Poll PREDICATE until it returns something truthy; fail the test on timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def settle(stack: LocalStack) -> None:
    assert stack.wait_quiet(WAIT_S), "the pipeline did not become quiet"


# A plan this big puts the poller's budget period below any test's period, so the period asked for
# is the one the polls keep (at 20,000 a day it would be 87 s: producers.reconcile.poll_period_s).
BIG_PLAN_QUOTA = 10_000_000


@contextlib.contextmanager
def polling(stack: LocalStack, period_s: float) -> Iterator[None]:
    """The beat ticking the poller of every account every PERIOD_S while inside; the accounts'
    plan limits as they were after."""
    store = redis.Redis.from_url(stack.redis_url)
    limiter = AccountLimiter(store)
    accounts = [account.account for account in poll_accounts(stack.config)]
    for account in accounts:
        limiter.set_account_limits(account, daily_quota=BIG_PLAN_QUOTA)
    stack.start_beat(period_s)
    try:
        yield
    finally:
        stack.stop_beat()
        for account in accounts:
            limiter.clear_account_limits(account)
        store.close()
