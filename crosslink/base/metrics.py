"""Every Prometheus metric Crosslink exposes, defined here and nowhere else.

An operator needs numbers a health check cannot give: how many webhooks each link gets and how
many are refused, what the sync runs end in, how Planfix answers, how long the account limiter
makes each account wait, how deep and how old the queue is, and how far behind each link is. Two
kinds live here:

- counters and histograms that the code moves as things happen (webhooks in the producer, sync
  runs in the workers, Planfix requests (by account and status, and by the link they served) and
  limiter waits wherever a PlanfixClient is used);
- gauges read from Redis at scrape time (producers.gauges, not here): the queue, dead letters, parked
  events, each link's lag and oldest waiting change, each link side's severance, the workers'
  heartbeats, and each Planfix account's capacity (requests today, its daily quota,
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

from prometheus_client import CollectorRegistry, Counter, Histogram, values

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
LINK_PLANFIX_REQUESTS = Counter(
    "crosslink_link_planfix_requests", "Requests sent to a Planfix account, by the link they served "
    "and account: a link's runs, probes and anchors, and operator commands on one link; link empty "
    "for the reconciliation poller (one poll serves every link of its account) and clients that "
    "name no link. Answered or not, as crosslink_planfix_requests counts them.",
    ["link", "account"])
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


def planfix_request(account: str, status: int | str, started: float, link: str = "") -> None:
    """Count one request to ACCOUNT for LINK ("" for none) answered with STATUS, sent at monotonic
    time STARTED."""
    try:
        PLANFIX_REQUESTS.labels(account=account, status=str(status)).inc()
        LINK_PLANFIX_REQUESTS.labels(link=link, account=account).inc()
        PLANFIX_REQUEST_SECONDS.labels(account=account).observe(max(0.0, time.monotonic() - started))
    except OSError as exc:
        _not_recorded(exc)


def limiter_wait(account: str, reason: str, seconds: float) -> None:
    try:
        LIMITER_WAITS.labels(account=account, reason=reason).inc()
        LIMITER_WAIT_SECONDS.labels(account=account, reason=reason).inc(max(0.0, seconds))
    except OSError as exc:
        _not_recorded(exc)


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
