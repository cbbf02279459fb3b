"""The metrics an operator scrapes, read the way Prometheus reads them: from the producer's
/metrics over HTTP (Starlette TestClient) against the real private Redis, with Planfix requests
sent to the emulator on loopback. The producer alone serves the gauges read from Redis (the
queue, the links, each account's capacity); a worker serves its pool's counters. The worker's
side, with a real worker process, is tests/e2e/test_metrics.py; here are the parts that need no
worker: the multiprocess summing a worker relies on, its server serving no Redis gauge, and the
mapping of sync results to outcomes.

Counters live for the whole test process, so every check compares a value before and after.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families
from starlette.testclient import TestClient

from crosslink.lab.embedded_redis import free_port
from crosslink.queue.names import HEARTBEAT_KEY, HEARTBEAT_MAX_AGE_S, dirty_key
from planfix.client import PlanfixClient
from planfix.errors import AuthError, RateLimited
from planfix.limiter import DAY_S, FORECAST_MIN_WINDOW_S, AccountLimiter
from producers.receiver import create_app
from producers.scenarios import hook_path
from tests.test_receiver import ENV, SECRETS, auth_headers, client, config, post  # noqa: F401 - fixtures too
from workers.heartbeat import record_beat
from workers.state import LinkState
from workers.telemetry import RUN_OUTCOMES, fresh_directory, job_context, serve_pool_metrics

ROOT = Path(__file__).resolve().parents[1]
# Seeded in tests/conftest.py EMULATOR_SEED.
PARTNER_TOKEN = "tok-partner-sync"
WRONG_TOKEN = "tok-wrong-0123456789"


@pytest.fixture
def producer(client: TestClient) -> TestClient:
    """The receiver of tests/test_receiver.py: links alpha and beta, recognisable secrets."""
    return client


def event(name: str, task: int) -> dict:
    return {"event": name, "task": task}


def scrape(client: TestClient) -> str:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


def value(text: str, name: str, **labels: str) -> float | None:
    """The sample NAME{LABELS} in an exposition TEXT, None when it is not there."""
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return sample.value
    return None


def webhooks(text: str, outcome: str, side: str = "partner", link: str = "alpha") -> float:
    return value(text, "crosslink_webhooks_total", link=link, side=side, outcome=outcome) or 0.0


# --- the producer's /metrics ------------------------------------------------------------------


def test_webhooks_are_counted_by_link_side_and_outcome(producer):
    before = scrape(producer)
    assert post(producer, "alpha", "partner", event("task_changed", 5)).status_code == 200
    assert post(producer, "alpha", "partner", event("task_changed", 5)).status_code == 200  # coalesced
    assert post(producer, "alpha", "client", event("task_created", 6)).status_code == 200
    assert post(producer, "alpha", "partner", "{not json at all").status_code == 200  # rejected, visibly
    assert post(producer, "alpha", "partner", event("test", 1)).status_code == 200  # crosslink doctor's
    assert post(producer, "alpha", "partner", event("task_changed", 5),
                headers=auth_headers("wrong-secret", "header")).status_code == 401
    assert producer.post(hook_path("nolink", "partner"), content="{}").status_code == 404
    after = scrape(producer)

    moved = {(side, outcome): webhooks(after, outcome, side) - webhooks(before, outcome, side)
             for side in ("partner", "client")
             for outcome in ("accepted", "coalesced", "rejected", "test", "unauthorized", "unavailable")}
    assert {key: n for key, n in moved.items() if n} == {
        ("partner", "accepted"): 1, ("partner", "coalesced"): 1, ("client", "accepted"): 1,
        ("partner", "rejected"): 1, ("partner", "test"): 1, ("partner", "unauthorized"): 1}
    # A path nobody configured is counted, but its link and side never become label values.
    assert webhooks(after, "unknown", "", "") - webhooks(before, "unknown", "", "") == 1
    assert "nolink" not in after


def test_an_unreachable_redis_is_counted_as_spooled_and_the_scrape_still_answers(config, tmp_path):
    env = {**ENV, "CROSSLINK_SPOOL_DIR": str(tmp_path), "CROSSLINK_SPOOL_MAX": "1"}
    app = create_app(config, f"redis://127.0.0.1:{free_port()}/0", env)  # nothing listens there
    with TestClient(app) as unready:
        before = scrape(unready)
        assert value(before, "crosslink_spooled_webhooks") == 0
        assert post(unready, "alpha", "client", event("task_changed", 9)).status_code == 200
        after = scrape(unready)
        # The spool holds its cap of one: the next is refused, and counted so.
        assert post(unready, "alpha", "client", event("task_changed", 10)).status_code == 503
        full = scrape(unready)
    assert webhooks(after, "spooled", "client") - webhooks(before, "spooled", "client") == 1
    assert value(after, "crosslink_spooled_webhooks") == 1
    assert value(after, "crosslink_spool_capacity_webhooks") == 1
    assert webhooks(full, "unavailable", "client") - webhooks(after, "unavailable", "client") == 1
    assert value(after, "crosslink_redis_up") == 0
    assert value(after, "crosslink_queue_jobs", queue="crosslink.sync") is None


def test_queue_depth_age_dead_letters_and_lag_are_read_from_redis_at_scrape(producer, redis_client):
    assert post(producer, "alpha", "partner", event("task_changed", 41)).status_code == 200
    assert post(producer, "beta", "client", event("task_changed", 42)).status_code == 200
    state = LinkState(redis_client, "alpha")
    state.dead_letter({"link": "alpha", "side": "partner", "task": 43}, "HTTP 400", time.time())
    time.sleep(0.2)
    text = scrape(producer)
    assert value(text, "crosslink_redis_up") == 1
    assert value(text, "crosslink_queue_jobs", queue="crosslink.sync") == 2  # no worker takes them
    assert 0.2 <= value(text, "crosslink_queue_oldest_job_age_seconds", queue="crosslink.sync") < 30
    assert (value(text, "crosslink_dead_letters", link="alpha"), value(text, "crosslink_dead_letters", link="beta")) \
        == (1, 0)
    assert value(text, "crosslink_parked_events", link="alpha") == 0
    assert value(text, "crosslink_link_lag_seconds", link="alpha") is None  # never synced yet

    state.mark_synced(time.time() - 120)
    assert 120 <= value(scrape(producer), "crosslink_link_lag_seconds", link="alpha") < 150


def test_each_link_sides_severance_is_a_gauge_of_every_configured_side(producer, redis_client):
    """1 while a side's access is lost, 0 otherwise, for every side links.yaml names and no other."""
    LinkState(redis_client, "alpha").sever("client", "HTTP 401: access withdrawn", time.time())
    LinkState(redis_client, "ghost").sever("client", "not a configured link", time.time())
    text = scrape(producer)
    served = {(sample.labels["link"], sample.labels["side"]): sample.value
              for family in text_string_to_metric_families(text) for sample in family.samples
              if sample.name == "crosslink_side_severed"}
    assert served == {("alpha", "partner"): 0, ("alpha", "client"): 1, ("beta", "partner"): 0,
                      ("beta", "client"): 0}
    assert "ghost" not in text and "withdrawn" not in text  # the reason is no label value

    LinkState(redis_client, "alpha").restore("client")
    assert value(scrape(producer), "crosslink_side_severed", link="alpha", side="client") == 0


def test_a_links_oldest_waiting_change_ages_while_a_quiet_link_stays_at_zero(producer, redis_client):
    """Unlike the lag since the last run, this stays 0 for a link that merely has nothing to do."""
    text = scrape(producer)
    assert (value(text, "crosslink_link_oldest_change_age_seconds", link="alpha"),
            value(text, "crosslink_link_oldest_change_age_seconds", link="beta")) == (0, 0)
    assert post(producer, "alpha", "client", event("task_changed", 7)).status_code == 200  # a lone change
    time.sleep(0.5)
    text = scrape(producer)
    assert 0.4 <= value(text, "crosslink_link_oldest_change_age_seconds", link="alpha") < 30
    assert value(text, "crosslink_link_oldest_change_age_seconds", link="beta") == 0

    # A task held for coalescing (due later, crosslink.queue.coalesce) is not late before it is due.
    redis_client.zadd(dirty_key("beta", "partner"), {"8": (time.time() + 60) * 1000})
    assert value(scrape(producer), "crosslink_link_oldest_change_age_seconds", link="beta") == 0


def test_worker_heartbeats_are_counted_and_aged_by_the_producer_without_node_labels(producer, redis_client):
    text = scrape(producer)
    assert value(text, "crosslink_workers_beating") == 0
    assert value(text, "crosslink_worker_heartbeat_age_seconds") is None  # no worker ever beat

    now = time.time()
    record_beat(redis_client, "celery@fresh", now - 5)
    record_beat(redis_client, "celery@hung", now - HEARTBEAT_MAX_AGE_S - 60)
    text = scrape(producer)
    assert value(text, "crosslink_workers_beating") == 1
    assert 5 <= value(text, "crosslink_worker_heartbeat_age_seconds") < 35
    assert "celery@" not in text

    redis_client.zrem(HEARTBEAT_KEY, "celery@fresh")  # its clean shutdown
    text = scrape(producer)
    assert value(text, "crosslink_workers_beating") == 0
    assert value(text, "crosslink_worker_heartbeat_age_seconds") >= HEARTBEAT_MAX_AGE_S + 60


# The accounts of tests/test_receiver.py's links: derived from each side's base_url.
ACCOUNTS = ["alpha-partner.planfix.com", "alpha-client.planfix.com", "beta-partner.planfix.com",
            "beta-client.planfix.com"]
ACCOUNT_GAUGES = ["crosslink_account_requests_today", "crosslink_account_daily_quota",
                  "crosslink_account_requests_forecast", "crosslink_account_reconcile_share",
                  "crosslink_account_coalesce_hold_seconds"]


def labelled(text: str, name: str, label: str) -> list[str]:
    """The LABEL values of NAME's samples, in the order served."""
    return [sample.labels[label] for family in text_string_to_metric_families(text)
            for sample in family.samples if sample.name == name]


def test_each_accounts_requests_quota_forecast_and_reconcile_share_are_read_from_redis(producer, redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=0)
    for _ in range(30):
        assert limiter.acquire("alpha-partner.planfix.com").go
    limiter.set_account_limits("beta-client.planfix.com", daily_quota=100_000)
    limiter.set_account_limits("beta-partner.planfix.com", daily_quota=10)
    for _ in range(10):  # at this pace its quota would not last the day: its runs are held
        assert limiter.acquire("beta-partner.planfix.com").go
    # A limiter key of an account no link names (another deployment's, a typo) is no label value.
    limiter.acquire("stray.planfix.com")
    text = scrape(producer)

    for name in ACCOUNT_GAUGES:
        assert labelled(text, name, "account") == ACCOUNTS, name  # each account once, none else
    assert "stray" not in text

    def gauge(name: str, account: str) -> float:
        return value(text, name, account=account)

    assert gauge("crosslink_account_requests_today", "alpha-partner.planfix.com") == 30
    assert gauge("crosslink_account_requests_today", "alpha-client.planfix.com") == 0
    assert gauge("crosslink_account_daily_quota", "alpha-partner.planfix.com") == 20_000  # the default
    assert gauge("crosslink_account_daily_quota", "beta-client.planfix.com") == 100_000  # its override
    # At the pace so far, damped over the first hour of the UTC day.
    assert 30 <= gauge("crosslink_account_requests_forecast", "alpha-partner.planfix.com") \
        <= 30 * (1 + DAY_S / FORECAST_MIN_WINDOW_S)
    assert gauge("crosslink_account_requests_forecast", "alpha-client.planfix.com") == 0
    # The reconciliation's 5 %, the comment audit's 1.25 % part of it (the settings' defaults).
    assert gauge("crosslink_account_reconcile_share", "beta-partner.planfix.com") == pytest.approx(0.05)
    # The latency coalescing costs: none within the quota, 5 s to CROSSLINK_COALESCE_MAX_S (30) past it.
    assert gauge("crosslink_account_coalesce_hold_seconds", "alpha-partner.planfix.com") == 0
    assert 5 <= gauge("crosslink_account_coalesce_hold_seconds", "beta-partner.planfix.com") <= 30


def test_the_account_gauges_are_served_once_by_the_producer_and_not_by_a_worker(producer, redis_client, tmp_path):
    """With N workers scraped beside the producer, a gauge any worker served too would come
    out N+1 times, and a sum() over the targets would multiply it."""
    text = scrape(producer)
    assert [family.name for family in text_string_to_metric_families(text)].count(
        "crosslink_account_requests_today") == 1
    port = free_port()
    server = serve_pool_metrics(tmp_path, "127.0.0.1", port)
    assert server is not None
    try:
        worker = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    finally:
        server.shutdown()
    assert worker.status_code == 200
    served = {family.name for family in text_string_to_metric_families(worker.text)}
    redis_gauges = {family.name for family in text_string_to_metric_families(text)
                    if family.type == "gauge" and family.name.startswith("crosslink_")
                    and family.name not in ("crosslink_spooled_webhooks", "crosslink_spool_capacity_webhooks")}
    assert {"crosslink_redis_up", "crosslink_queue_jobs", *ACCOUNT_GAUGES} <= redis_gauges
    assert not served & redis_gauges


def test_planfix_requests_are_counted_by_account_and_status_and_no_secret_is_exposed(
        producer, emulator_server):
    before = scrape(producer)
    with PlanfixClient(emulator_server.base_url("partner"), PARTNER_TOKEN, account="partner") as good:
        good.ping()
        good.get_task(1)
    with PlanfixClient(emulator_server.base_url("partner"), WRONG_TOKEN, account="partner",
                       read_retries=0) as bad, pytest.raises(AuthError):
        bad.ping()
    post(producer, "alpha", "partner", event("task_changed", 5), headers=auth_headers(ENV["BETA_P_SECRET"], "header"))
    after = scrape(producer)

    def requests(status: str) -> float:
        return (value(after, "crosslink_planfix_requests_total", account="partner", status=status) or 0) \
            - (value(before, "crosslink_planfix_requests_total", account="partner", status=status) or 0)

    assert (requests("200"), requests("401")) == (2, 1)
    assert value(after, "crosslink_planfix_request_duration_seconds_count", account="partner") >= 3
    for secret in [*SECRETS.values(), PARTNER_TOKEN, WRONG_TOKEN]:
        assert secret not in after


def test_planfix_requests_are_counted_by_the_link_the_client_serves(emulator_server):
    def by_link(link: str) -> float:
        return REGISTRY.get_sample_value("crosslink_link_planfix_requests_total",
                                         {"link": link, "account": "partner"}) or 0

    before = {link: by_link(link) for link in ("alpha", "")}
    with PlanfixClient(emulator_server.base_url("partner"), PARTNER_TOKEN, account="partner", link="alpha") as mine:
        mine.ping()
        mine.get_task(1)
    with PlanfixClient(emulator_server.base_url("partner"), PARTNER_TOKEN, account="partner") as nobodys:
        nobodys.ping()  # the poller's: one poll serves every link of its account
    assert (by_link("alpha") - before["alpha"], by_link("") - before[""]) == (2, 1)


def test_limiter_waits_are_counted_where_the_client_is_told_to_wait(redis_url, emulator_server):
    labels = {"account": "partner", "reason": "rate"}
    waits_before = REGISTRY.get_sample_value("crosslink_limiter_waits_total", labels) or 0
    seconds_before = REGISTRY.get_sample_value("crosslink_limiter_wait_seconds_total", labels) or 0
    store = redis.Redis.from_url(redis_url)
    limiter = AccountLimiter(store, rate_per_s=0.5, daily_quota=None)
    with PlanfixClient(emulator_server.base_url("partner"), PARTNER_TOKEN, account="partner",
                       limiter=limiter) as client:
        client.ping()
        with pytest.raises(RateLimited):
            client.ping()  # within 2 s of the first: told to wait, and not allowed to sleep
    store.close()
    assert REGISTRY.get_sample_value("crosslink_limiter_waits_total", labels) - waits_before == 1
    waited = REGISTRY.get_sample_value("crosslink_limiter_wait_seconds_total", labels) - seconds_before
    assert 1.0 < waited < 3.0  # about one interval at 0.5 requests/s, with the limiter's margin


# --- what a worker relies on --------------------------------------------------------------------

FORKED_COUNTS = """
import multiprocessing, sys
from prometheus_client import generate_latest
from crosslink.base import metrics  # prometheus_client is imported before the worker switches modes

metrics.use_multiprocess_values(sys.argv[1])

def run():
    metrics.SYNC_RUNS.labels(link="forked", side="partner", kind="noop", outcome="done").inc()

for _ in range(3):
    child = multiprocessing.get_context("fork").Process(target=run)
    child.start()
    child.join()
sys.stdout.write(generate_latest(metrics.multiprocess_registry(sys.argv[1])).decode())
"""


def test_counts_of_forked_processes_are_summed_by_the_process_that_serves_them(tmp_path):
    """What a prefork worker does: switch to files after import, fork, count in the children,
    sum in the parent. Without the switch the children's counts would be lost with them."""
    result = subprocess.run([sys.executable, "-c", FORKED_COUNTS, str(tmp_path)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    assert result.returncode == 0, result.stderr
    assert value(result.stdout, "crosslink_sync_runs_total", link="forked", side="partner",
                 kind="noop", outcome="done") == 3


LOST_DIRECTORY = """
import multiprocessing, shutil, sys
from crosslink.base import metrics

metrics.use_multiprocess_values(sys.argv[1])
shutil.rmtree(sys.argv[1])  # what a /tmp cleaner may do under a worker running for weeks

def run():
    metrics.planfix_request("partner", 200, 0.0)
    metrics.limiter_wait("partner", "rate", 1.0)

child = multiprocessing.get_context("fork").Process(target=run)
child.start()
child.join()
sys.exit(child.exitcode)
"""


def test_a_count_that_cannot_be_written_never_fails_what_it_counts(tmp_path):
    directory = tmp_path / "metrics"
    directory.mkdir()
    result = subprocess.run([sys.executable, "-c", LOST_DIRECTORY, str(directory)], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env={k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"})
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("metrics not recorded") == 1, result.stderr


def test_a_worker_sweeps_the_metrics_directories_of_dead_workers(tmp_path):
    dead = tmp_path / "4194305"  # above Linux's largest pid_max: no such process
    alive = tmp_path / str(os.getppid())
    for directory in (dead, alive):
        directory.mkdir()
        (directory / "counter_1.db").write_bytes(b"old")
    mine = fresh_directory(tmp_path, pid=os.getpid())
    assert not dead.exists() and alive.exists()
    assert mine == tmp_path / str(os.getpid()) and list(mine.iterdir()) == []


def _results(path: Path, functions: set[str]) -> set[str]:
    """The string constants the FUNCTIONS of module PATH return."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.value.value for function in ast.walk(tree)
            if isinstance(function, ast.FunctionDef) and function.name in functions
            for node in ast.walk(function)
            if isinstance(node, ast.Return) and isinstance(node.value, ast.Constant)
            and isinstance(node.value.value, str)}


def test_every_result_of_a_sync_job_has_an_outcome():
    """A result the outcome map does not know counts as "other": a new one must be placed."""
    returned = _results(ROOT / "workers" / "runner.py", {"_park", "_begin_one", "_begun", "finish", "_run_failed",
                                                         "_ran", "_handle_failure"})
    assert {"parked", "locked", "dead"} <= returned, "the scan no longer finds the results"
    report_outcomes = _report_outcomes()
    assert {"created", "updated", "noop"} <= report_outcomes
    assert sorted((returned | report_outcomes) - set(RUN_OUTCOMES)) == []


def _report_outcomes() -> set[str]:
    """Every value the workers/sync package gives a SyncReport's outcome (its default included)."""
    trees = [ast.parse(path.read_text(encoding="utf-8")) for path in sorted((ROOT / "workers" / "sync").glob("*.py"))]
    found = set()
    for node in (node for tree in trees for node in ast.walk(tree)):
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign) and node.value is not None:
            targets = [node.target]
        else:
            continue
        names = {getattr(target, "attr", getattr(target, "id", None)) for target in targets}
        if "outcome" in names and isinstance(node.value, ast.Constant):
            found.add(node.value.value)
    return found


def test_outside_a_celery_job_a_log_line_gets_no_job_context():
    assert job_context() == {}
