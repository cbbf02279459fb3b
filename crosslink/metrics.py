"""Every Prometheus metric Crosslink exposes, defined here and nowhere else.

An operator needs numbers a health check cannot give: how many webhooks each link gets and how
many are refused, what the sync runs end in, how Planfix answers, how long the account limiter
makes each account wait, how deep and how old the queue is, and how far behind each link is. Two
kinds live here:

- counters and histograms that the code moves as things happen (webhooks in the producer, sync
  runs in the workers, Planfix requests and limiter waits wherever a PlanfixClient is used);
- gauges read from Redis at scrape time (`StateCollector`): the queue, dead letters, parked
  events, each link's lag, and each Planfix account's capacity (requests today, its daily quota,
  the day's forecast at the pace so far, the share the reconciliation may spend, the hold of
  each task's run while the quota would not last the day). They describe
  the shared pipeline, not one process, and nothing has to be kept up to date between scrapes.

Who serves them: the producer at its own `/metrics` (producers/receiver.py) serves its counters,
its spool and the gauges read from Redis; each worker from its main process on
CROSSLINK_WORKER_METRICS_PORT serves its pool's counters, summed through prometheus_client's
multiprocess mode (workers/telemetry.py says why). The Redis gauges are served by the producer
ONLY: every deployment runs exactly one (compose's `producer` service, `crosslink run`), while
workers scale, and a gauge served by N workers as well comes out N+1 times, which a `sum()` over
the targets multiplies.

Label values are link, side and account names from links.yaml, HTTP status codes and a fixed set
of outcome words: never a token, a secret, a URL or anything a webhook sender chose.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import redis
from prometheus_client import CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from crosslink.settings import Settings
    from schemas.links import LinksConfig

log = logging.getLogger("crosslink.metrics")

# --- moved as things happen ---------------------------------------------------------------------

# A run is a few requests at Planfix's 1 request/s, plus what it may wait for the limiter in its slot.
SYNC_RUN_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
# Planfix answers within a few seconds; the workers' client gives up after 10 s (workers/runtime.py).
PLANFIX_REQUEST_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10)

WEBHOOKS = Counter(
    "crosslink_webhooks", "Webhook requests the producer answered, by link side and outcome "
    "(accepted, coalesced, rejected, test, spooled (kept while Redis was unreachable, answered "
    "200), hung_up (the sender closed before its body ended), unauthorized, unavailable (Redis "
    "unreachable and the spool full: 503); unknown for a link or side that is not configured, "
    "with empty link and side).",
    ["link", "side", "outcome"])
SYNC_RUNS = Counter(
    "crosslink_sync_runs", "Sync runs of a task a worker finished (a batch job makes several), by link "
    "side, kind (what the run returned: created, updated, noop, parked, rate-limited, dead, ...) and "
    "outcome (done, requeued, parked, dead, error).",
    ["link", "side", "kind", "outcome"])
SYNC_RUN_SECONDS = Histogram(
    "crosslink_sync_run_duration_seconds", "How long one sync job ran in its worker slot, by link.",
    ["link"], buckets=SYNC_RUN_BUCKETS_S)
PLANFIX_REQUESTS = Counter(
    "crosslink_planfix_requests", "Requests sent to a Planfix account, by account and HTTP status "
    "(unreachable, timeout or transport_error when no answer came).",
    ["account", "status"])
PLANFIX_REQUEST_SECONDS = Histogram(
    "crosslink_planfix_request_duration_seconds", "How long a Planfix request took, by account.",
    ["account"], buckets=PLANFIX_REQUEST_BUCKETS_S)
LIMITER_WAITS = Counter(
    "crosslink_limiter_waits", "Times the account limiter told a client to wait, by account and "
    "reason (rate, daily_quota).",
    ["account", "reason"])
LIMITER_WAIT_SECONDS = Counter(
    "crosslink_limiter_wait_seconds", "Seconds the account limiter told clients to wait, by account "
    "and reason (slept in place or re-queued for later).",
    ["account", "reason"])

# A request that got no HTTP answer is counted under one of these instead of a status code.
UNREACHABLE, TIMEOUT, TRANSPORT_ERROR = "unreachable", "timeout", "transport_error"


_unrecorded = False


def _not_recorded(exc: OSError) -> None:
    """A worker's values live in files (see use_multiprocess_values): one that cannot be written
    (its directory removed under a long-running worker by a /tmp cleaner) costs a count, never
    the request or the sync run being counted. Said once per process."""
    global _unrecorded
    if not _unrecorded:
        _unrecorded = True
        log.warning("metrics not recorded in this process: %s", exc)


def planfix_request(account: str, status: int | str, started: float) -> None:
    """Count one request to ACCOUNT answered with STATUS, sent at monotonic time STARTED."""
    try:
        PLANFIX_REQUESTS.labels(account=account, status=str(status)).inc()
        PLANFIX_REQUEST_SECONDS.labels(account=account).observe(max(0.0, time.monotonic() - started))
    except OSError as exc:
        _not_recorded(exc)


def limiter_wait(account: str, reason: str, seconds: float) -> None:
    try:
        LIMITER_WAITS.labels(account=account, reason=reason).inc()
        LIMITER_WAIT_SECONDS.labels(account=account, reason=reason).inc(max(0.0, seconds))
    except OSError as exc:
        _not_recorded(exc)


# --- read from Redis at scrape time -------------------------------------------------------------


class StateCollector(Collector):
    """The pipeline's shared state as gauges, read from Redis on every scrape, through CLIENT
    (give it a short deadline: Prometheus gives a whole scrape 10 s by default).

    The label values are the links and the Planfix accounts CONFIG names: nothing read from
    Redis becomes a label value, so a stray key cannot add series. SETTINGS give the limits and
    shares an account has unless the limiter's overrides in Redis say otherwise. A Redis that
    does not answer gives crosslink_redis_up 0 and no other gauge from this collector, never a
    failed scrape.
    """

    def __init__(self, client: redis.Redis, config: LinksConfig, settings: Settings,
                 now: Callable[[], float] = time.time):
        # Imported here: planfix.client imports this module for its counters and must not pull
        # the worker side in; only the process that serves these gauges builds a collector.
        from crosslink.health import oldest_job_age
        from crosslink.operations import account_capacity
        from workers.names import SYNC_QUEUE
        from workers.state import LinkState

        self._oldest_job_age = oldest_job_age
        self._account_capacity = account_capacity
        self._queue = SYNC_QUEUE
        self._client = client
        self._config = config
        self._settings = settings
        self._states = [LinkState(client, link.name) for link in config.links]
        self._now = now

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("crosslink_redis_up", "1 when Redis answered this scrape, else 0.")
        try:
            gauges = list(self._read())
        except redis.RedisError:
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from gauges

    def _read(self) -> Iterator[Metric]:
        now = self._now()
        waiting, age = self._oldest_job_age(self._client, now, self._queue)
        depth = GaugeMetricFamily("crosslink_queue_jobs", "Sync jobs waiting on the queue (not yet "
                                  "taken by a worker).", labels=["queue"])
        depth.add_metric([self._queue], waiting)
        oldest = GaugeMetricFamily("crosslink_queue_oldest_job_age_seconds", "How long the oldest "
                                   "waiting job has waited; 0 when none waits.", labels=["queue"])
        if age is not None or not waiting:
            oldest.add_metric([self._queue], age or 0.0)
        dead = GaugeMetricFamily("crosslink_dead_letters", "Dead letters kept for the link "
                                 "(crosslink dlq list).", labels=["link"])
        parked = GaugeMetricFamily("crosslink_parked_events", "Events parked while a side of the "
                                   "link is severed.", labels=["link"])
        lag = GaugeMetricFamily("crosslink_link_lag_seconds", "Seconds since the link's last "
                                "finished sync run (also grows while the link is quiet); absent "
                                "until its first run.", labels=["link"])
        for state in self._states:
            dead.add_metric([state.link], state.dead_letter_count())
            parked.add_metric([state.link], state.parked_count())
            last = state.last_sync()
            if last is not None:
                lag.add_metric([state.link], max(0.0, now - last))
        yield from (depth, oldest, dead, parked, lag)
        yield from self._accounts()

    def _accounts(self) -> Iterator[Metric]:
        """Each Planfix account's capacity (crosslink.operations.account_capacity), once however
        many links share it."""
        used = GaugeMetricFamily("crosslink_account_requests_today", "Requests the account limiter "
                                 "granted to the Planfix account since 00:00 UTC, by every process "
                                 "(workers, poller, operator commands).", labels=["account"])
        quota = GaugeMetricFamily("crosslink_account_daily_quota", "The account's daily request quota in "
                                  "force (its limiter override, else CROSSLINK_DAILY_QUOTA); 0: none.",
                                  labels=["account"])
        forecast = GaugeMetricFamily("crosslink_account_requests_forecast", "Requests the account will "
                                     "have made by 24:00 UTC at today's pace so far "
                                     "(planfix.limiter.forecast_day_requests); above the quota, it runs "
                                     "out before midnight.", labels=["account"])
        share = GaugeMetricFamily("crosslink_account_reconcile_share", "Share of the account's daily "
                                  "quota the reconciliation may spend: its polls' "
                                  "(CROSSLINK_RECONCILE_SHARE) and the comment audit's "
                                  "(CROSSLINK_AUDIT_SHARE) together.", labels=["account"])
        hold = GaugeMetricFamily("crosslink_account_coalesce_hold_seconds", "How long each task's run "
                                 "on the account is held now so that its edits merge: 0 while the "
                                 "forecast stays within the quota, up to CROSSLINK_COALESCE_MAX_S past "
                                 "it (producers.coalesce); the latency the quota costs.", labels=["account"])
        for row in self._account_capacity(self._client, self._config, self._settings):
            labels = [row["account"]]
            used.add_metric(labels, row["used_today"])
            quota.add_metric(labels, row["daily_quota"])
            forecast.add_metric(labels, row["forecast_today"])
            share.add_metric(labels, row["reconcile_share"])
            hold.add_metric(labels, row["coalesce_hold_s"])
        yield from (used, quota, forecast, share, hold)


class SpoolCollector(Collector):
    """The producer's spool (producers/spool.py) as gauges, read at scrape time: how many
    webhooks wait in it for Redis, and how many it may hold before the producer answers 503."""

    def __init__(self, pending: Callable[[], int], capacity: int):
        self._pending = pending
        self._capacity = capacity

    def collect(self) -> Iterator[Metric]:
        spooled = GaugeMetricFamily("crosslink_spooled_webhooks", "Webhooks this producer kept in its "
                                    "local spool while Redis was unreachable, not yet replayed into Redis.")
        spooled.add_metric([], self._pending())
        capacity = GaugeMetricFamily("crosslink_spool_capacity_webhooks", "How many webhooks the spool "
                                     "holds at most (CROSSLINK_SPOOL_MAX); a full spool answers 503.")
        capacity.add_metric([], self._capacity)
        yield from (spooled, capacity)


class Exposition:
    """What one /metrics answer shows: several registries and collectors as one (generate_latest
    only calls collect())."""

    def __init__(self, *sources: Collector):
        self._sources = sources

    def collect(self) -> Iterator[Metric]:
        for source in self._sources:
            yield from source.collect()


# --- prefork workers ----------------------------------------------------------------------------

# prometheus_client's switch for multiprocess mode; set only by the worker (workers/telemetry.py).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def use_multiprocess_values(directory: str) -> None:
    """From now on, in this process and every process it forks, keep each metric value in an
    mmapped file in DIRECTORY, so that one process can sum them all (MultiProcessCollector).

    prometheus_client picks its value class from the environment when it is first imported, which
    in `crosslink worker` happens long before the worker knows it is one; every labelled metric
    makes its values when first used (after the fork), so switching the class here, before the
    pool starts, is early enough. No metric here is unlabelled.
    """
    os.environ[MULTIPROC_ENV] = directory
    values.ValueClass = values.get_value_class()


def multiprocess_registry(directory: str) -> CollectorRegistry:
    """A registry summing the values every process wrote into DIRECTORY."""
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)
    return registry
