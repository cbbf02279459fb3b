"""The pipeline's shared state as Prometheus gauges, read from Redis at scrape time.

The queue, dead letters, parked events, each link's lag and waiting changes, each link side's
severance, the workers' heartbeats, and each Planfix account's capacity (producers.capacity)
describe the shared pipeline, not one process, so only the producer serves them
(crosslink.base.metrics says why): every deployment runs exactly one, while workers scale. So an
alert on any of them (deploy/monitoring/alerts.yml) gives one series per link, side or account
with no `max by`, and "no worker beats" can be told by a process that is not a worker.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from crosslink.base.settings import Settings
from crosslink.queue.dead_letters import DeadLetters
from crosslink.queue.inspect import last_beats, oldest_change_age, oldest_job_age, severed_sides
from crosslink.queue.names import HEARTBEAT_MAX_AGE_S, LAST_SYNC_KEY, SYNC_QUEUE, parked_key
from producers.capacity import account_capacity
from schemas.links import LinksConfig


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
        self._client = client
        self._config = config
        self._settings = settings
        self._links = [(link.name, list(link.sides)) for link in config.links]
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
        waiting, age = oldest_job_age(self._client, now, SYNC_QUEUE)
        depth = GaugeMetricFamily("crosslink_queue_jobs", "Sync jobs waiting on the queue (not yet "
                                  "taken by a worker).", labels=["queue"])
        depth.add_metric([SYNC_QUEUE], waiting)
        oldest = GaugeMetricFamily("crosslink_queue_oldest_job_age_seconds", "How long the oldest "
                                   "waiting job has waited; 0 when none waits.", labels=["queue"])
        if age is not None or not waiting:
            oldest.add_metric([SYNC_QUEUE], age or 0.0)
        dead = GaugeMetricFamily("crosslink_dead_letters", "Dead letters kept for the link "
                                 "(crosslink dlq list).", labels=["link"])
        parked = GaugeMetricFamily("crosslink_parked_events", "Events parked while a side of the "
                                   "link is severed.", labels=["link"])
        lag = GaugeMetricFamily("crosslink_link_lag_seconds", "Seconds since the link's last "
                                "finished sync run (also grows while the link is quiet); absent "
                                "until its first run.", labels=["link"])
        changes = GaugeMetricFamily("crosslink_link_oldest_change_age_seconds", "How long the "
                                    "oldest change waiting among the link's tasks has been due with no "
                                    "run taking it up; 0 when none waits (stays 0 while the link is quiet).",
                                    labels=["link"])
        severed = GaugeMetricFamily("crosslink_side_severed", "1 while the link side's access is lost "
                                    "(a revoked token or scope: its events are parked until a probe sees "
                                    "access again), else 0.", labels=["link", "side"])
        for link, sides in self._links:
            dead.add_metric([link], DeadLetters(self._client, link).count())
            parked.add_metric([link], int(self._client.llen(parked_key(link))))
            last = self._client.hget(LAST_SYNC_KEY, link)
            if last is not None:
                lag.add_metric([link], max(0.0, now - float(last)))
            changes.add_metric([link], oldest_change_age(self._client, link, sides, now))
            cut = severed_sides(self._client, link)
            for side in sides:
                severed.add_metric([link, side], 1 if side in cut else 0)
        yield from (depth, oldest, dead, parked, lag, changes, severed)
        yield from self._workers(now)
        yield from self._accounts()

    def _workers(self, now: float) -> Iterator[Metric]:
        """The workers' heartbeats (workers.heartbeat), as counts and an age: node names change
        with every deploy, so none becomes a label value."""
        beats = last_beats(self._client)
        beating = GaugeMetricFamily("crosslink_workers_beating", "Celery workers whose latest "
                                    f"heartbeat is at most {HEARTBEAT_MAX_AGE_S:g} s old (the bound "
                                    "`crosslink health worker` holds them to).")
        beating.add_metric([], sum(1 for at in beats.values() if now - at <= HEARTBEAT_MAX_AGE_S))
        age = GaugeMetricFamily("crosslink_worker_heartbeat_age_seconds", "Seconds since the latest "
                                "heartbeat of any worker; absent when no worker has one (none ever "
                                "started, or every one shut down).")
        if beats:
            age.add_metric([], max(0.0, now - max(beats.values())))
        yield from (beating, age)

    def _accounts(self) -> Iterator[Metric]:
        """Each Planfix account's capacity (producers.capacity.account_capacity), once however
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
                                 "it (crosslink.queue.coalesce); the latency the quota costs.", labels=["account"])
        for row in account_capacity(self._client, self._config, self._settings):
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
