"""Reconciliation end to end: webhooks dropped on purpose (the accounts' scenarios switched off),
then `crosslink reconcile` reports the drift and `--repair` removes it, and the beat-driven poller
repairs a dropped change within one reconciliation period (one poll per account), and its comment
audit a comment edit no feed shows. Real Redis,
real worker and beat processes, the emulator over loopback, the CLI as an operator runs it (a
subprocess)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time

import pytest
import redis

from planfix.limiter import AccountLimiter
from producers.reconcile import CURSOR_KEY, STAMP_SETTLE_S, key, poll_accounts
from tests.e2e.conftest import eventually, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL, IRINA_P, MARAT = 2, 4, 6
# A short period so the test is quick; the poller's logic does not depend on its length.
PERIOD_S = 2.0
# A plan this big gives the poller a budget period below PERIOD_S, so PERIOD_S is the period (at
# the workers' 20,000 a day it would be 87 s: producers.reconcile.poll_period_s).
BIG_PLAN_QUOTA = 10_000_000
# Beyond the period: the poll itself, the queued sync run and its writes at the e2e rate limit.
PIPELINE_S = 10.0


@contextlib.contextmanager
def webhooks_dropped(stack):
    """No scenario fires in either account while inside; restored after (nothing is replayed)."""
    for account in ("partner", "client"):
        stack.world.set_scenarios(account, [])
    try:
        yield
    finally:
        stack.point_scenarios_at(stack.producer.url)


def reconcile(stack, tmp_path, *args):
    report_path = tmp_path / f"report-{time.monotonic_ns()}.json"
    done = subprocess.run([sys.executable, "-m", "crosslink.cli", "reconcile", "--link", LINK,
                           "--json", str(report_path), *args],
                          env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=180)
    assert report_path.exists(), done.stderr[-2000:]
    return done, json.loads(report_path.read_text(encoding="utf-8"))


def comment_texts(stack, number):
    """Every comment text of the client's task NUMBER, joined."""
    listed = stack.world.list_task_comments("client", number, {"typeList": "All", "fields": "id,description"})
    return " ".join(comment["description"] for comment in listed)


def kinds(drift):
    return sorted((item["kind"], item["side"], item["task"]) for item in drift)


def test_reconcile_reports_drift_and_repair_removes_it(stack, tmp_path):
    settle(stack)
    done, report = reconcile(stack, tmp_path)
    assert done.returncode == 0 and report["drift"] == [], done.stdout

    kickoff_mirror = stack.mirror_of(LINK, "partner", 1)["id"]
    deliveries = len(stack.world.deliveries("partner")) + len(stack.world.deliveries("client"))
    with webhooks_dropped(stack):
        quiet = stack.world.create_task("partner", {
            "name": "Made while no webhook fired", "processId": 1, "project": {"id": 10},
            "assignees": {"users": [{"id": f"user:{IRINA_P}"}]}}, author=PAVEL)
        stack.world.update_task("partner", 1, {"name": "Kick-off, renamed quietly"}, author=PAVEL)
        stack.world.add_comment("client", kickoff_mirror, {"description": "A comment nobody heard"},
                                author=MARAT)
    settle(stack)
    assert len(stack.world.deliveries("partner")) + len(stack.world.deliveries("client")) == deliveries
    assert stack.mirror_of(LINK, "partner", quiet) is None  # nothing moved by itself

    done, report = reconcile(stack, tmp_path)
    assert done.returncode == 1
    assert kinds(report["drift"]) == [("diverged", "partner", 1), ("missing", "partner", quiet)]
    diverged = next(item for item in report["drift"] if item["kind"] == "diverged")
    assert diverged["counterpart"] == kickoff_mirror
    assert any("name differs" in detail for detail in diverged["details"])
    assert any("not mirrored" in detail for detail in diverged["details"])  # the client's comment
    assert "missing" in done.stdout and f"partner #{quiet}" in done.stdout

    done, report = reconcile(stack, tmp_path, "--repair")
    assert done.returncode == 0, done.stdout + done.stderr
    assert kinds(report["drift"]) == [("diverged", "partner", 1), ("missing", "partner", quiet)]
    assert report["repair"]["settled"] and report["repair"]["after"] == []
    assert stack.mirror_of(LINK, "partner", quiet) is not None
    assert stack.mirror_of(LINK, "partner", 1)["name"] == "Kick-off, renamed quietly"

    done, report = reconcile(stack, tmp_path)
    assert done.returncode == 0 and report["drift"] == [] and report["remaining"] == 0


def test_a_dropped_webhook_is_repaired_by_the_poller_within_one_period(stack):
    settle(stack)
    store = redis.Redis.from_url(stack.redis_url)
    accounts = poll_accounts(stack.config)
    assert len(accounts) == 2  # one poll per account: the partner's and the client's
    limiter = AccountLimiter(store)
    for account in accounts:
        limiter.set_account_limits(account.account, daily_quota=BIG_PLAN_QUOTA)
    comment = stack.world.add_comment("partner", 1, {"description": "<p>Agreed: v1</p>"}, author=PAVEL)
    mirror = stack.mirror_of(LINK, "partner", 1)["id"]
    commented = time.monotonic()
    eventually(lambda: "Agreed: v1" in comment_texts(stack, mirror), what="the comment mirrored")
    try:
        stack.start_beat(PERIOD_S)
        # The poller runs: beat ticks, a worker polls each account and moves its cursor.
        eventually(lambda: all(store.exists(key(CURSOR_KEY, account.key)) for account in accounts),
                   timeout=PERIOD_S * 3 + PIPELINE_S, what="the first polls")
        settle(stack)
        deliveries = len(stack.world.deliveries("partner"))
        with webhooks_dropped(stack):
            stack.world.update_task("partner", 2, {"name": "Migration plan, renamed with no webhook"}, author=PAVEL)
            started = time.monotonic()
        assert len(stack.world.deliveries("partner")) == deliveries
        eventually(lambda: (stack.mirror_of(LINK, "partner", 2) or {}).get("name")
                   == "Migration plan, renamed with no webhook",
                   timeout=PERIOD_S + PIPELINE_S, what="the poller's repair")
        repaired_in = time.monotonic() - started
        assert repaired_in < PERIOD_S + PIPELINE_S

        # A comment edit changes no date the poll's feeds filter by: the comment audit finds it.
        # Until its stamp settles, the polls read the new comment again (its run, reading just
        # the comment, recorded no stamp): wait that out, so only the audit can see the edit.
        time.sleep(max(0.0, commented + STAMP_SETTLE_S + 2 * PERIOD_S - time.monotonic()))
        settle(stack)
        with webhooks_dropped(stack):
            stack.world.update_comment("partner", comment, {"description": "<p>Agreed: v2</p>"}, author=PAVEL)
        eventually(lambda: "Agreed: v2" in comment_texts(stack, mirror), timeout=PERIOD_S * 2 + PIPELINE_S,
                   what="the comment audit's repair of an edit with no webhook")
    finally:
        stack.stop_beat()
        for account in accounts:
            limiter.clear_account_limits(account.account)  # the module's stack set no other
        store.close()
    settle(stack)


def test_during_a_cut_reconcile_reports_the_side_it_reads_and_an_acknowledged_drift_fails_nothing(stack, tmp_path):
    settle(stack)
    link = stack.config.links[0]
    token = stack.env[link.sides["client"].token_env]
    stack.world.revoke_token("client", token)
    try:
        done, report = reconcile(stack, tmp_path)
    finally:
        stack.world.restore_token("client", token)
    assert done.returncode == 3, done.stdout + done.stderr
    assert list(report["unreadable"]) == ["client"] and "AuthError" in report["unreadable"]["client"]
    partner_tasks = [task for task in stack.dumps(link.name)["partner"]   # the link's record task is no task of it
                     if (task.get("project") or {}).get("id") == 10 and not task.get("isDeleted")]
    assert report["readable"]["partner"]["tasks"] >= len(partner_tasks) > 0
    assert "client side cannot be read" in done.stdout

    with webhooks_dropped(stack):
        stack.world.update_task("partner", 2, {"name": "Kept apart on purpose"}, author=PAVEL)
    done, report = reconcile(stack, tmp_path)
    assert done.returncode == 1 and kinds(report["drift"]) == [("diverged", "partner", 2)]
    acked = subprocess.run([sys.executable, "-m", "crosslink.cli", "acknowledge", "--link", LINK, "partner:2",
                            "--why", "the client keeps its own title", "--by", "olga"],
                           env={**os.environ, **stack.env}, capture_output=True, text=True, timeout=180)
    assert acked.returncode == 0, acked.stdout + acked.stderr
    done, report = reconcile(stack, tmp_path)
    assert done.returncode == 0 and report["remaining"] == 0, done.stdout
    assert [item["task"] for item in report["acknowledged"]] == [2] and "keeps its own title" in done.stdout
    # Changed since it was acknowledged: it fails again.
    with webhooks_dropped(stack):
        stack.world.update_task("partner", 2, {"name": "Kept apart, renamed again"}, author=PAVEL)
    done, report = reconcile(stack, tmp_path)
    assert done.returncode == 1 and report["acknowledged"] == []
    done, report = reconcile(stack, tmp_path, "--repair")
    assert done.returncode == 0, done.stdout
