"""`crosslink bench`: what a Crosslink deployment costs and how fast it is, within Planfix's limits,
measured on this machine.

Why a benchmark of whole deployments rather than of functions: what a partner pays is every
request its Planfix account answers (the reconciliation poller's included), and what a partner
feels is a person's change in one account to the write that carries it into the other. So every
phase runs the real parts: the producer over HTTP in its own process, an embedded Redis, `celery
worker` OS processes, `celery beat` ticking the reconciliation poller (where a deployment would
run it), and the emulator over HTTP. Its request log is what Planfix would count; a wire tap in
front of it (`WireTap`) keeps each request's body, so a write is matched to the change it carries
by content, and every request to the task it concerns.

Phases and their stacks:
- pipeline (its own stack: limits off, no poller; the machine's capacity): webhooks posted at a
  fixed rate for a while; the highest rate whose backlog drains at once (every event written
  within DRAIN_S of the last post) is kept. An event's latency runs from its scheduled send (open
  loop: a sender that falls behind counts its own lag) to the end of the write that carries its
  content (or a later edit's, which replaced it), never "the first write after it". Beside it,
  the highest rate held with p99 under P99_TARGET_MS. Run with 1 and 2 worker processes.
- quiet overhead (a stack per link count of the plan's quiet_links, the poller on, nothing
  changing): the partner account's requests a day, from whole poll cycles. It must not grow with
  the number of links.
- economy (a stack with the poller at its default settings from crosslink.base.settings): every kind
  of change a person makes (KINDS, on both sides, each on a task pair of its own), through real
  scenario deliveries, spread over ECONOMY_PERIODS measured poll periods and followed by
  TAIL_CYCLES polls of the partner. `api_calls_per_change` is all-in: every request any account
  answered in the window (polls, read-backs, 202s) over the changes. The per-kind table charges
  each change with the requests that concern its task pair (`request_targets`: a batch read is
  shared among the tasks it names); polls and what concerns no one task are shown apart.
- at Planfix's real limits (a stack with the poller on, then 1 request/s and the smallest plan's
  quota, whatever the run's time scale):
  - fairness on a skewed backlog: one link's backlog is posted first, then the others'. Jain's
    index over the links' writes while all of them had a backlog (a FIFO queue scores
    1/links, turns per link about 1), the small links' completion times, limiter violations and
    the share of the allowed requests used. While that backlog waits, Celery executions and run
    executions per finished sync (the workers' logs and /metrics), and the workers' CPU.
  - bursts: BURST_EDITS edits of one task, BURST_GAPS_S apart (saving repeatedly, typing, editing
    at leisure), through real scenario deliveries: requests per event for each gap.
  - idle latency (open loop): single changes at fixed times, from each one's scheduled time to
    the end of the write that carries it.
- scale (a stack per number of links of the plan's scale_links, each alone after the other
  phases; not in the quick run): a simulated working day on one partner account that every link
  shares, each link with a client account of its own. Each link's SCALE_TASKS_PER_LINK task pairs
  are made and settled first; then SCALE_CHANGES_PER_LINK changes per link (edits, status moves
  and comments, on both sides: SCALE_KIND_WEIGHTS) at times with a working-hours peak (PEAK_SHARE
  of them between 09:00 and 18:00), through real scenario deliveries, but SCALE_DROP_SHARE of them
  drawn to have their webhooks dropped (their account's scenarios off for that change), which
  only the poller can find. The bench keeps its own record of each change (what, where, when).
  Every request the emulator logs over the day's window is counted: `partner_requests_per_day`
  (the poller's own apart), all-in requests per change (every account), the share of PLAN_QUOTA
  the partner used; once the day's last changes are repaired (TAIL_CYCLES polls) and the poller
  has nothing left to do about them (`settle`), SCALE_QUIET_S with nothing changing gives the
  partner's quiet overhead. `drift_repair_p99_s`: from each
  dropped change to the write that carries its content into the other account (or a later edit's
  of the same field, which replaced it), in simulated seconds; a status move carries no content
  to match and is not timed; a change no write carried by the end is counted apart and leaves no
  p99. Over the day, Celery executions per finished sync and the workers' CPU in cores (runs wait
  for the partner's slots meanwhile). The most links a PLAN_QUOTA plan serves with SPARE_SHARE of
  it to spare (`scale_capacity`): the partner's requests a day as a line over the link counts
  measured (a day alone: its quiet overhead as the fixed part, the rest per link), solved for the
  plan's budget; it assumes the cost grows linearly at the same traffic per link.
Set-up (the task pairs a phase changes) is made before anything is counted, and a phase starts
once the poller has nothing left to do about it (`settle`).

Time: the full run is real time at the default settings (a poll period of about 90 s for the
smallest plan). The quick run (CI) shrinks the economy's day by QUICK_TIME_SCALE: the poller's
period and tick, the account's daily quota and request rate, and the sync's own delays
(CROSSLINK_TIME_SCALE) together, so polls per change stay as they would be. The poller's own
constants are real seconds (producers/reconcile: how long a change stamp takes to count as
settled, the window's overlap), so a quick run's polls look again at a change that no run
recorded as synced about 60 s / 4.5 s = 13 times where a real deployment's do so twice: the quick
all-in figure is an upper bound, and set-up takes a minute to settle. Bursts keep their real
gaps, fairness and idle latency Planfix's real 1 request/s.

The scale phase's day lasts scale_day_s real seconds (at least SCALE_DAY_MIN_S, and
SCALE_DAY_S_PER_LINK per link, so the machine's load per real second stays about the same:
10 links' day is a 144th of a real one, 200 links' a 48th), with the poller's period and tick,
every account's quota and rate and the sync's own delays shrunk by the same factor. Counts per
simulated day are exact over its window; what the shrinking distorts: a real second of
processing (a scenario delivery, Celery's queueing, a run's requests) stands for 1/scale
simulated seconds (144 or 48), so latencies in simulated seconds are longer than a real day's
(drift_repair_p99_real_s gives the real time); the poller's real-second constants cover hours
of the shrunk day (its window's 180 s overlap, STAMP_SETTLE_S), so a busy poll lists every task
changed in the last three real minutes (pages a real poll would not need) and the budget
stretches its period to pay for them, and a stamp no run recorded as synced is queued again by
every poll in the 60 real seconds after it: dozens of polls of the shrunk day (a 10-link day's
partner polls came 1.7 real seconds apart) where a real day's poller sends one or two, and the
runs they queue read again: the partner's requests a day and per change are upper bounds, and the most links derived from them a lower
bound, until the poller's STAMP_SETTLE_S and OVERLAP_S can be shrunk with the day (the emulator
has no clock skew to cover). How much of a day's partner requests that is, is not yet known (a
10-link day's partner answered 1,761 single-comment reads for its 162 comments, a 3-link day's
73 for 48). The quota-driven hold is off (as in every bench stack).
"""

from __future__ import annotations

import http.client
import itertools
import json
import logging
import math
import os
import random
import re
import statistics
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from crosslink.base.settings import Settings
from crosslink.lab.chaos import CLIENT_PROJECT, build_configs, client_account, link_name, partner_project
from crosslink.lab.embedded_redis import EmbeddedRedis
from crosslink.lab.stack import QUIET_LOOKS, QUIET_POLL_S, LocalStack
from crosslink.queue.names import CLAIMS_KEY, PENDING_KEY
from planfix.emulator.server import EmulatorServer
from planfix.limiter import AccountLimiter
from producers.reconcile import AUDIT_COMMENT_FIELDS, STAMP_SETTLE_S
from producers.scenarios import hook_path, request_auth, scenarios_for_side
from workers.state import parse_marker
from workers.telemetry import JOB_ENDS

# Planfix's documented limit (API-NOTES section 1), for the limited phases.
PLANFIX_RATE_PER_S = 1.0
DAY_S = 86400.0
# The quick run's day is this share of a real one (see the module docstring).
QUICK_TIME_SCALE = 0.05
# The client person who makes the changes in the emulator's seed accounts (chaos.py uses the same).
CLIENT_PERSON = 5
CLIENT_PEOPLE = (5, 6)
CLIENT_PROCESS = 3
PARTNER_PROCESS = 1
PARTNER_PEOPLE = (2, 3, 4)
SIDES = ("client", "partner")
# Partner status moves: In work and Review in turn (the example link names no partner
# transitions), which map to one allowed client move each (12 <-> 13).
PARTNER_STATUS_CYCLE = {1: 2, 2: 3, 3: 2, 4: 2}
# Every kind of change a person makes, as the economy phase makes them (issue 18).
KINDS = ("create", "edit", "contested edit", "status", "reassign", "comment", "comment edit",
         "comment delete", "checklist item", "card file", "write answered 202")
# The economy's changes are spread over this many poll periods (the issue asks at least 3).
ECONOMY_PERIODS = 3
# Polls of the partner account after the last change of a phase that are counted with it (a
# poll may queue a run the webhook's run left to it, and a second look after that).
TAIL_CYCLES = 2
# Quiet overhead: poll cycles skipped (the first one also looks up the robot's time zone), then counted.
WARM_UP_CYCLES = 2
QUIET_CYCLES = 4
# After set-up, nothing is counted until the poller has nothing left to do about it (the first
# poll looks an hour back and queues a look at every task the set-up made, later ones a second
# look until the change stamps count as settled): a partner poll came after the last request that
# was not a poll, a whole period ago. At most this many expected periods (a first look, a second
# one, and a quiet period after, with room for a busy account's deferred polls), and this long.
SETTLE_PERIODS = 6
SETTLE_MIN_S = 120.0
# Partner requests this much closer together than the poller's floor period belong to one
# poll cycle (the polls a tick sends go out together).
CYCLE_GAP_SHARE = 0.5
# The CI gate (issue 18's "done when", quick bench).
ALL_IN_CALLS_LIMIT = 3.0
QUIET_GROWTH_LIMIT = 1.25
RUNS_PER_SYNC_LIMIT = 2.0
# The pipeline holds a rate when every event posted is written within this long after the last post.
DRAIN_S = 2.0
# A rate is held only if the senders really offered at least this share of it.
OFFERED_SHARE = 0.95
# The latency target: the pipeline's "fast" rate is the highest held with e2e p99 under this.
P99_TARGET_MS = 100.0
# Worker processes just started serve their first jobs slowly (imports, connections, first
# reads): the pipeline phase warms them with this long at its first rate, not counted.
WARM_UP_S = 2.0
# Long runs tried per figure (the best rate, then lower ones) before the figure is left at 0.
SUSTAIN_ATTEMPTS = 2
# Parallel webhook senders: Planfix sends one request at a time per account, many accounts at once.
SENDERS = 8
# A burst: this many edits to one task, this far apart (saving repeatedly, typing, editing at leisure).
BURST_EDITS = 10
BURST_GAPS_S = (0.02, 0.5, 2.0)
# Worker processes' prefork concurrency: slots wait on the network, not the CPU.
CONCURRENCY = 4
# Idle samples are this far apart, so the limiter has forgotten the previous one.
IDLE_GAP_S = 2.5
QUIET_TIMEOUT_S = 300.0
# How long the emulator holds a write it answered 202 before applying it (its busy_202 fault).
BUSY_202_DELAY_S = 0.5
# A request body kept by the wire tap is cut here (a card file's upload is not kept at all).
MAX_KEPT_BODY = 16_384
# Planfix filter types the poller's feeds use (API-NOTES section 3): a request with one is a poll.
FEED_FILTERS = {79, 3000}
# The comment audit lists one task's comments after a poll: the poller's overhead too, not sync work.
AUDIT_PATH = re.compile(r"/task/\d+/comments/list")
TASK_NUMBER_FILTER = 57
POLL = "poll"
# An event's content as the bench writes it into a task: "[e<stream>.<seq>]".
EVENT_TOKEN = re.compile(r"\[e(\d+)\.(\d+)\]")
# The line a worker logs when a job ends (workers.telemetry.job_end_line: Celery's own gave way to
# it), and what a finished sync run logs (workers/tasks.py).
CELERY_END = re.compile(r"^job (crosslink\.[\w.]+) (" + "|".join(JOB_ENDS.values()) + r")\b")
SYNCED = "synced: "
SYNC_JOB_PREFIX = "crosslink.sync."
# The scale phase (issue 18): a simulated working day on one partner account.
SCALE_LINKS = (10, 50, 200)
SCALE_CHANGES_PER_LINK = 50  # a simulated day's, about what one client's people change
SCALE_TASKS_PER_LINK = 5  # the task pairs a link's changes fall on (its open work)
# Webhooks dropped: this share of the day's changes has its scenario deliveries switched off.
SCALE_DROP_SHARE = 0.02
# The peak: this share of a day's changes is made in working hours, the rest outside them.
WORKING_HOURS = (9.0, 18.0)
PEAK_SHARE = 0.8
# What people change, with how often: the kinds a webhook reports (a comment edit reaches only
# the comment audit, which the economy phase measures).
SCALE_KIND_WEIGHTS = {"edit": 0.5, "status": 0.2, "comment": 0.3}
# The smallest Planfix plan, and the share of it kept spare (issue 18's "done when").
PLAN_QUOTA = 20_000
SPARE_SHARE = 0.25
# A simulated day lasts this many real seconds, at least SCALE_DAY_MIN_S: the machine's load per
# real second stays about the same whatever the number of links (200 links: 30 minutes).
SCALE_DAY_MIN_S = 600.0
SCALE_DAY_S_PER_LINK = 9.0
# How long the workers may take to set the links up (a record task and an anchor per side, at
# the accounts' 1 request/s, 50 links sharing the partner's) before a quiet day is measured.
SET_UP_TIMEOUT_S = 180.0
# After the day, with nothing changing: this long (simulated) measures the quiet overhead.
SCALE_QUIET_S = 2 * 3600.0
SCALE_WORKERS = 2


@dataclass(frozen=True)
class BenchPlan:
    pipeline_rates: tuple[int, ...]
    pipeline_probe_s: float
    pipeline_sustain_s: float
    pipeline_tasks: int
    worker_counts: tuple[int, ...]
    economy_changes: int
    bursts: int
    fair_links: int
    fair_events_per_link: int
    # The first link's backlog, posted before the others'.
    fair_big_backlog: int
    idle_samples: int
    quiet_links: tuple[int, ...]
    time_scale: float
    # The pipeline alone, before the deployments start (else while they settle after set-up).
    pipeline_first: bool
    # The scale phase's numbers of links (none: not run), and the seed of its days' plans.
    scale_links: tuple[int, ...] = ()
    scale_seed: int = 1

    @classmethod
    def quick(cls) -> "BenchPlan":
        return cls(pipeline_rates=(50,), pipeline_probe_s=4.0, pipeline_sustain_s=4.0,
                   pipeline_tasks=40, worker_counts=(1, 2), economy_changes=len(KINDS) * len(SIDES),
                   bursts=1, fair_links=4, fair_events_per_link=4, fair_big_backlog=12, idle_samples=3,
                   quiet_links=(2, 6), time_scale=QUICK_TIME_SCALE, pipeline_first=False)

    @classmethod
    def full(cls) -> "BenchPlan":
        return cls(pipeline_rates=(50, 100, 150, 200, 250, 300, 350, 400, 450, 500), pipeline_probe_s=10.0,
                   pipeline_sustain_s=60.0, pipeline_tasks=600, worker_counts=(1, 2),
                   economy_changes=6 * len(KINDS) * len(SIDES), bursts=3, fair_links=50,
                   fair_events_per_link=4, fair_big_backlog=60, idle_samples=20, quiet_links=(2, 10, 50),
                   time_scale=1.0, pipeline_first=True, scale_links=SCALE_LINKS)


@dataclass(frozen=True)
class PollerSettings:
    """The reconciliation poller as a default deployment runs it (crosslink.base.settings), with the
    day shrunk by SCALE: period and tick shorter, the daily quota (which sets the period through
    the reconciliation budget) and the rate larger, all by the same factor."""

    scale: float
    floor_s: float
    tick_s: float
    share: float  # the reconciliation's, polls and comment audit together
    audit_share: float
    daily_quota: int
    rate_per_s: float

    @classmethod
    def default(cls, scale: float = 1.0) -> "PollerSettings":
        defaults = Settings.from_env({})  # the code's defaults, not this shell's environment
        return cls(scale=scale, floor_s=defaults.reconcile_period_s * scale,
                   tick_s=defaults.reconcile_tick_s * scale, share=defaults.reconcile_share,
                   audit_share=defaults.audit_share,
                   daily_quota=round(defaults.daily_quota / scale), rate_per_s=defaults.rate_per_s / scale)

    def env(self) -> dict[str, str]:
        # No quota-driven hold (crosslink.queue.coalesce): its forecast runs on the real UTC day, which
        # a shrunk day's quota does not match, and a hold would stand in every latency figure.
        return {"CROSSLINK_RECONCILE_PERIOD_S": repr(self.floor_s), "CROSSLINK_RECONCILE_TICK_S": repr(self.tick_s),
                "CROSSLINK_RECONCILE_SHARE": repr(self.share), "CROSSLINK_AUDIT_SHARE": repr(self.audit_share),
                "CROSSLINK_DAILY_QUOTA": str(self.daily_quota),
                "CROSSLINK_COALESCE_MAX_S": "0"}

    @property
    def expected_period_s(self) -> float:
        """The period the budget allows a quiet poll (1 request), at the next tick: only for how
        long the bench waits for polls; every figure uses the periods measured."""
        period = max(self.floor_s, DAY_S / max(1.0, (self.share - self.audit_share) * self.daily_quota - 1))
        return math.ceil(period / self.tick_s - 1e-9) * self.tick_s if self.tick_s > 0 else period

    @property
    def cycle_gap_s(self) -> float:
        return self.floor_s * CYCLE_GAP_SHARE


@dataclass
class PipelineFigures:
    workers: int
    pipeline_events_per_s: float = 0.0
    e2e_p50_ms: float | None = None
    e2e_p99_ms: float | None = None
    events: int = 0
    tried: dict[str, bool] = field(default_factory=dict)
    # Latency at each rate's probe, held or not: {rate: [p50 ms, p99 ms]}.
    latency_by_rate: dict[str, list[float | None]] = field(default_factory=dict)
    # The highest rate held for the long run with p99 under P99_TARGET_MS, and its latency.
    target_events_per_s: float = 0.0
    target_p50_ms: float | None = None
    target_p99_ms: float | None = None


@dataclass
class ScaleFigures:
    """The scale phase's simulated day for one number of links (module docstring). "A day"
    figures count the simulated day's window; seconds are simulated unless named real."""

    links: int
    time_scale: float
    # Real seconds the simulated day lasted.
    day_real_s: float
    changes: int = 0
    changes_by_kind: dict[str, int] = field(default_factory=dict)
    dropped: int = 0
    dropped_by_kind: dict[str, int] = field(default_factory=dict)
    partner_requests_per_day: int | None = None
    # The poller's own (feeds and comment audit) among them.
    partner_poll_requests_per_day: int | None = None
    # The partner's requests a day after the day, nothing changing (SCALE_QUIET_S of it).
    partner_overhead_quiet_per_day: float | None = None
    # Every account's requests over the changes, and the partner's alone.
    requests_per_change: float | None = None
    partner_requests_per_change: float | None = None
    # One client account's requests a day, the mean over the links.
    client_requests_per_day: float | None = None
    quota_share: float | None = None
    # Dropped changes whose content the bench can match in a write (edits and comments; a status
    # move carries none), how many no write carried by the end, and their repair times.
    drift_timed: int = 0
    drift_unrepaired: int = 0
    drift_repair_p50_s: float | None = None
    drift_repair_p99_s: float | None = None
    drift_repair_p99_real_s: float | None = None
    # Changes whose webhook came: from the change to the write carrying it.
    sync_latency_p50_s: float | None = None
    sync_latency_p99_s: float | None = None
    celery_runs_per_sync: float | None = None
    runs_per_sync: float | None = None
    celery_executions: dict[str, int] = field(default_factory=dict)
    # The workers' CPU over the day, in cores (the runs wait for the partner's slots meanwhile).
    worker_cpu_while_waiting: float | None = None
    limiter_violations: int | None = None
    partner_poll_period_s: float | None = None
    # The partner's requests over the day by what they were (request_kind), most first.
    partner_requests_by_kind: dict[str, int] = field(default_factory=dict)
    settled_before: bool | None = None


@dataclass
class BenchReport:
    mode: str
    date: str
    machine: dict[str, Any]
    workers: int
    time_scale: float = 1.0
    pipeline: list[PipelineFigures] = field(default_factory=list)
    # Economy, all-in: every request in the window over the changes.
    api_calls_per_change: float | None = None
    # Requests per change by side and kind, charged by task pair; "polls" and "no task" per change.
    calls_by_kind: dict[str, float] = field(default_factory=dict)
    # The requests behind calls_by_kind, by what they were (shapes_by_kind).
    requests_by_kind: dict[str, dict[str, int]] = field(default_factory=dict)
    economy: dict[str, Any] = field(default_factory=dict)
    # Requests per event of bursts, by the gap between edits in seconds.
    burst_calls_by_gap: dict[str, float] = field(default_factory=dict)
    # Quiet overhead: the partner account's requests a day, by the number of links.
    quiet_per_day_by_links: dict[str, float | None] = field(default_factory=dict)
    limiter_violations: int | None = None
    limit_utilization: float | None = None
    fairness_jain: float | None = None
    fairness: dict[str, Any] = field(default_factory=dict)
    max_link_lag_s: float | None = None
    fair_links: int = 0
    celery_runs_per_sync: float | None = None
    runs_per_sync: float | None = None
    worker_cpu_while_waiting: float | None = None
    idle_latency_p50_s: float | None = None
    idle_latency_p99_s: float | None = None
    # The scale phase: a simulated day per number of links, and what a plan serves at that traffic.
    scale: list[ScaleFigures] = field(default_factory=list)
    scale_capacity: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def api_calls_per_event_burst(self) -> float | None:
        return self.burst_calls_by_gap.get(_gap_key(BURST_GAPS_S[0]))

    @property
    def quiet_overhead_growth(self) -> float | None:
        """The most links' quiet overhead over the fewest links' (1.0: it does not grow)."""
        values = [self.quiet_per_day_by_links.get(str(n)) for n in sorted(int(k) for k in self.quiet_per_day_by_links)]
        if len(values) < 2 or values[0] is None or values[-1] is None or values[0] <= 0:
            return None
        return round(values[-1] / values[0], 3)

    def headline(self) -> dict[str, Any]:
        best = fastest(self.pipeline)
        quiet = [self.quiet_per_day_by_links[key] for key in self.quiet_per_day_by_links]
        return {
            "pipeline_events_per_s": best.pipeline_events_per_s if best else None,
            "e2e_p50_ms": best.e2e_p50_ms if best else None,
            "e2e_p99_ms": best.e2e_p99_ms if best else None,
            "pipeline_workers": best.workers if best and best.pipeline_events_per_s else None,
            **self.target_headline(),
            "api_calls_per_change": self.api_calls_per_change,
            "api_calls_per_event_burst": self.api_calls_per_event_burst,
            "partner_overhead_quiet_per_day": max((v for v in quiet if v is not None), default=None),
            "quiet_overhead_growth": self.quiet_overhead_growth,
            "limiter_violations": self.limiter_violations,
            "limit_utilization": self.limit_utilization,
            "fairness_jain": self.fairness_jain,
            "small_link_completion_p50_s": self.fairness.get("small_link_completion_p50_s"),
            "max_link_lag_s": self.max_link_lag_s,
            "celery_runs_per_sync": self.celery_runs_per_sync,
            "runs_per_sync": self.runs_per_sync,
            "worker_cpu_while_waiting": self.worker_cpu_while_waiting,
            "idle_latency_p50_s": self.idle_latency_p50_s,
            "idle_latency_p99_s": self.idle_latency_p99_s,
            **self.scale_headline(),
            "workers": self.workers,
        }

    def scale_headline(self) -> dict[str, Any]:
        """The scale phase's figures for its most links, and the most links a plan serves."""
        most = max(self.scale, key=lambda day: day.links, default=None)
        def of(name: str) -> Any:
            return getattr(most, name) if most is not None else None
        return {
            "scale_links": of("links"),
            "partner_requests_per_day": of("partner_requests_per_day"),
            "scale_partner_overhead_quiet_per_day": of("partner_overhead_quiet_per_day"),
            "scale_requests_per_change": of("requests_per_change"),
            "partner_quota_share": of("quota_share"),
            "drift_repair_p99_s": of("drift_repair_p99_s"),
            "scale_celery_runs_per_sync": of("celery_runs_per_sync"),
            "scale_worker_cpu_while_waiting": of("worker_cpu_while_waiting"),
            "max_links_per_plan": self.scale_capacity.get("max_links"),
        }

    def target_headline(self) -> dict[str, Any]:
        """The highest rate held with p99 under P99_TARGET_MS, of any worker count."""
        best = fastest(self.pipeline, under_target=True)
        return {
            "p99_target_ms": P99_TARGET_MS,
            "target_events_per_s": best.target_events_per_s if best else None,
            "target_e2e_p50_ms": best.target_p50_ms if best else None,
            "target_e2e_p99_ms": best.target_p99_ms if best else None,
            "target_workers": best.workers if best and best.target_events_per_s else None,
        }

    def as_dict(self) -> dict[str, Any]:
        return {**self.headline(), "detail": asdict(self)}

    def table(self) -> str:
        lines = [f"crosslink bench ({self.mode}, {self.seconds:.0f} s, time scale {self.time_scale})"]
        for row in self.pipeline:
            tried = ", ".join(key + ("" if held else " (backlog grew)") for key, held in row.tried.items())
            lines.append(f"  pipeline, {row.workers} worker process(es): {row.pipeline_events_per_s:.0f} events/s, "
                         f"p50 {_fmt(row.e2e_p50_ms)} ms, p99 {_fmt(row.e2e_p99_ms)} ms "
                         f"(rates tried: {tried})")
            lines.append(f"    with p99 under {P99_TARGET_MS:.0f} ms: {row.target_events_per_s:.0f} events/s, "
                         f"p50 {_fmt(row.target_p50_ms)} ms, p99 {_fmt(row.target_p99_ms)} ms")
            lines.append("    p50/p99 ms by rate: " + ", ".join(
                f"{rate}/s {_fmt(p50)}/{_fmt(p99)}" for rate, (p50, p99) in row.latency_by_rate.items()))
        if self.calls_by_kind:
            lines.append("  requests per change, all-in economy (" + ", ".join(
                f"{key} {_fmt(value)}" for key, value in self.economy.items() if not isinstance(value, dict)) + "):")
            for key, value in self.calls_by_kind.items():
                lines.append(f"    {key:34} {_fmt(value)}")
        if self.burst_calls_by_gap:
            lines.append("  requests per event of a burst, by gap: " + ", ".join(
                f"{gap} s {_fmt(value)}" for gap, value in self.burst_calls_by_gap.items()))
        if self.quiet_per_day_by_links:
            lines.append("  partner requests a day with nothing changing, by links: " + ", ".join(
                f"{links}: {_fmt(value)}" for links, value in self.quiet_per_day_by_links.items()))
        if self.fairness:
            lines.append("  fairness: " + ", ".join(f"{key} {_fmt(value)}" for key, value in self.fairness.items()))
        for day in self.scale:
            figures = {key: value for key, value in asdict(day).items()
                       if key not in ("links", "time_scale", "day_real_s")}
            lines.append(f"  a simulated day, {day.links} links (time scale {day.time_scale:.5f}, "
                         f"{day.day_real_s:.0f} s real): " + ", ".join(
                             f"{key} {_fmt(value)}" for key, value in figures.items() if not isinstance(value, dict)))
            for key, value in figures.items():
                if isinstance(value, dict):
                    lines.append(f"    {key}: " + ", ".join(f"{name} {count}" for name, count in value.items()))
        if self.scale_capacity:
            lines.append("  partner capacity: " + ", ".join(
                f"{key} {_fmt(value)}" for key, value in self.scale_capacity.items()))
        for key, value in self.headline().items():
            lines.append(f"  {key:30} {_fmt(value)}")
        return "\n".join(lines)

    def failures(self) -> list[str]:
        """What the CI gate refuses (issue 18): any request over Planfix's limit; all-in requests
        per change over ALL_IN_CALLS_LIMIT; a quiet overhead that grows with the links; a waiting
        run executed more than RUNS_PER_SYNC_LIMIT times per sync. A figure not measured fails."""
        problems = []
        if self.limiter_violations is None or self.limiter_violations > 0:
            problems.append(f"limiter_violations = {self.limiter_violations} (must be 0)")
        if self.api_calls_per_change is None or self.api_calls_per_change > ALL_IN_CALLS_LIMIT:
            problems.append(f"api_calls_per_change = {self.api_calls_per_change} all-in "
                            f"(must be at most {ALL_IN_CALLS_LIMIT})")
        growth = self.quiet_overhead_growth
        if growth is None or growth > QUIET_GROWTH_LIMIT:
            problems.append(f"quiet overhead grows with the links: {self.quiet_per_day_by_links} requests a day "
                            f"(growth {growth}, must be at most {QUIET_GROWTH_LIMIT})")
        for name in ("celery_runs_per_sync", "runs_per_sync"):
            value = getattr(self, name)
            if value is None or value > RUNS_PER_SYNC_LIMIT:
                problems.append(f"{name} = {value} while a backlog waited (must be at most {RUNS_PER_SYNC_LIMIT})")
        return problems


def fastest(rows: list[PipelineFigures], under_target: bool = False) -> PipelineFigures | None:
    """The row that held the highest rate (UNDER_TARGET: the highest held with p99 under
    P99_TARGET_MS); of rows that held the same rate, the one with the lowest p99 there."""
    def rank(row: PipelineFigures) -> tuple[float, float]:
        rate, p99 = ((row.target_events_per_s, row.target_p99_ms) if under_target
                     else (row.pipeline_events_per_s, row.e2e_p99_ms))
        return rate, -(p99 if p99 is not None else math.inf)
    return max(rows, key=rank, default=None)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.3f}" if value < 10 else f"{value:.1f}"
    return str(value)


def _gap_key(gap_s: float) -> str:
    return f"{gap_s:g}"


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


def _round(value: float | None, digits: int = 3) -> float | None:
    return round(value, digits) if value is not None else None


def _finite(value: float | None, digits: int = 1) -> float | None:
    """VALUE rounded, or None when it is not a finite number (a change never synced)."""
    return round(value, digits) if value is not None and math.isfinite(value) else None


# ==============================================================================================
# Pure parts: statistics, and reading what the emulator saw

def percentile(values: list[float], share: float) -> float | None:
    """The SHARE quantile (0..1) of VALUES, nearest rank."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(share * len(ordered)) - 1))]


def sustain_order(probes: dict[int, tuple[bool, float | None]], p99_under_ms: float | None = None) -> list[int]:
    """The rates worth a long run, highest first: those whose probe held (PROBES: {rate: (held,
    p99 ms)}) and, with P99_UNDER_MS, whose probe's p99 was under it."""
    return sorted((rate for rate, (held, p99) in probes.items()
                   if held and (p99_under_ms is None or (p99 is not None and p99 < p99_under_ms))),
                  reverse=True)


def jain(values: list[float]) -> float | None:
    """Jain's fairness index: 1 when all equal, 1/n when one takes everything."""
    if not values or not any(values):
        return None
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


@dataclass(frozen=True)
class BacklogShares:
    """How links' backlogs were served while every link still had one."""

    jain: float | None
    window: tuple[float, float] | None
    served: dict[Any, int]


def backlog_fairness(posted: Mapping[Any, Sequence[float]], written: Mapping[Any, Sequence[float]]) -> BacklogShares:
    """Jain's index over the links' writes while all of them had a backlog.

    POSTED: each link's event times; WRITTEN: the times its events' writes were done. All links
    have a backlog from the moment the last of them posted its first event until the first of
    them had all its events written. Assumes each link posts its backlog at once (a link whose
    backlog trickles in may run dry before its last post, which this does not see).
    """
    links = [link for link in posted if posted[link]]
    if not links or any(len(written.get(link, ())) < len(posted[link]) for link in links):
        return BacklogShares(None, None, {})
    start = max(min(posted[link]) for link in links)
    end = min(max(written[link]) for link in links)
    if end <= start:
        return BacklogShares(None, None, {})
    served = {link: sum(1 for at in written[link] if start <= at <= end) for link in links}
    return BacklogShares(jain([float(count) for count in served.values()]), (start, end), served)


def event_token(stream: int, seq: int) -> str:
    """The mark the bench writes into an event's content: STREAM names the task (and field) the
    event edits, SEQ orders the stream's events."""
    return f"[e{stream}.{seq}]"


def carried(text: str) -> dict[int, int]:
    """{stream: the latest seq} of every event mark in TEXT (a write's body)."""
    found: dict[int, int] = {}
    for stream, seq in EVENT_TOKEN.findall(text):
        found[int(stream)] = max(found.get(int(stream), -1), int(seq))
    return found


@dataclass(frozen=True)
class Event:
    stream: int
    seq: int
    # When the person's change was due (the bench's schedule, not when it got round to it).
    scheduled: float


@dataclass(frozen=True)
class Write:
    # When the emulator finished answering it.
    done: float
    carries: Mapping[int, int]


def write_times(events: Sequence[Event], writes: Iterable[Write]) -> list[float | None]:
    """For each event, when the first write carrying its content was done (None: none did).

    A write carries an event's content when its body holds the event's mark, or the mark of a
    later event of the same stream: that later value replaced the event's before the sync read it
    (coalesced events are synced by one write). Never "the first write after the event": another
    event's write may come first. Assumes a stream's events are made in SEQ order.
    """
    by_stream: dict[int, list[tuple[float, int]]] = defaultdict(list)
    for write in sorted(writes, key=lambda w: w.done):
        for stream, seq in write.carries.items():
            by_stream[stream].append((write.done, seq))
    return [next((done for done, seq in by_stream.get(event.stream, ()) if seq >= event.seq), None)
            for event in events]


def latencies(events: Sequence[Event], writes: Iterable[Write]) -> list[float | None]:
    """Each event's open-loop latency: from its scheduled time to the write carrying it."""
    return [None if done is None else done - event.scheduled
            for event, done in zip(events, write_times(events, writes))]


Target = tuple[str, int]  # (account, task number)


@dataclass
class Exchange:
    """One REST request as the wire tap saw it."""

    account: str
    method: str
    # Relative to /rest, as the emulator's request log writes it.
    path: str
    query: str = ""
    started: float = 0.0
    done: float = 0.0
    status: int = 0
    body: bytes = b""
    # The answer's body, kept only where it names what was made (a new task's or file's id).
    answer: bytes = b""

    def body_json(self) -> Any:
        try:
            return json.loads(self.body) if self.body else None
        except ValueError:
            return None

    def answer_id(self) -> int | None:
        try:
            found = json.loads(self.answer).get("id") if self.answer else None
        except (ValueError, AttributeError):
            return None
        return int(found) if isinstance(found, int) else None

    @property
    def is_write(self) -> bool:
        """A request that changes something in Planfix (lists are reads, even by POST)."""
        return self.method == "DELETE" or (self.method == "POST" and not self.path.rstrip("/").endswith("/list"))


_TASK_PATH = re.compile(r"^/task/(\d+)(?:/.*)?$")
_COMMENT_PATH = re.compile(r"^/comment/(\d+)/?$")
_FILE_PATH = re.compile(r"^/file/(\d+)(?:/.*)?$")


def _filters(body: Any) -> list[Mapping[str, Any]]:
    filters = body.get("filters") if isinstance(body, Mapping) else None
    return [flt for flt in filters or () if isinstance(flt, Mapping)]


def is_poll(exchange: Exchange) -> bool:
    """Whether EXCHANGE is the reconciliation poller's own: a feed (an account's changed tasks or
    new comments, by date filter) or the comment audit's listing of one task (known by the
    fields it asks for), not a sync run's read about one task."""
    if exchange.method != "POST":
        return False
    path, body = exchange.path.rstrip("/"), exchange.body_json()
    if AUDIT_PATH.fullmatch(path):
        return isinstance(body, Mapping) and body.get("fields") == AUDIT_COMMENT_FIELDS
    return (path in ("/task/list", "/comment/list")
            and any(int(flt.get("type", 0)) in FEED_FILTERS for flt in _filters(body)))


def request_targets(exchange: Exchange, comment_tasks: Mapping[tuple[str, int], int],
                    file_tasks: Mapping[tuple[str, int], int]) -> list[Target] | str:
    """The tasks EXCHANGE concerns, POLL for a poller feed, or [] when it concerns no one task.

    COMMENT_TASKS and FILE_TASKS map (account, comment or file id) to the task that holds it. A
    read of several tasks (filter 57 takes a list) concerns each of them; a new task or file is
    known by the id its answer names.
    """
    account, path = exchange.account, exchange.path.rstrip("/") or "/"
    if is_poll(exchange):
        return POLL
    if path == "/task/list":
        numbers: list[int] = []
        for flt in _filters(exchange.body_json()):
            if int(flt.get("type", 0)) == TASK_NUMBER_FILTER:
                value = flt.get("value")
                numbers.extend(int(v) for v in (value if isinstance(value, list) else [value]) if str(v).isdigit())
        return [(account, number) for number in dict.fromkeys(numbers)]
    if path == "/task" and exchange.method == "POST":
        made = exchange.answer_id()
        return [(account, made)] if made is not None else []
    if path == "/file" and exchange.method == "POST":
        made = exchange.answer_id()
        task = file_tasks.get((account, made)) if made is not None else None
        return [(account, task)] if task is not None else []
    for pattern, owners in ((_COMMENT_PATH, comment_tasks), (_FILE_PATH, file_tasks)):
        found = pattern.match(path)
        if found:
            task = owners.get((account, int(found.group(1))))
            return [(account, task)] if task is not None else []
    found = _TASK_PATH.match(path)
    if found:
        return [(account, int(found.group(1)))]
    return []


def request_kind(exchange: Exchange) -> str:
    """What EXCHANGE was, for a breakdown: its method and path with the numbers left out, and
    "poll" in front of the poller's own."""
    shape = f"{exchange.method} {re.sub(r'[0-9]+', 'N', exchange.path.rstrip('/') or '/')}"
    return f"poll {shape}" if is_poll(exchange) else shape


@dataclass
class Spending:
    """Requests charged to tasks (a request that concerns several tasks is shared among them),
    poller feeds, and requests that concern no one task."""

    by_task: dict[Target, float] = field(default_factory=lambda: defaultdict(float))
    polls: int = 0
    no_task: int = 0
    total: int = 0


def charge(exchanges: Iterable[Exchange], comment_tasks: Mapping[tuple[str, int], int],
           file_tasks: Mapping[tuple[str, int], int]) -> Spending:
    spent = Spending()
    for exchange in exchanges:
        spent.total += 1
        targets = request_targets(exchange, comment_tasks, file_tasks)
        if targets == POLL:
            spent.polls += 1
        elif not targets:
            spent.no_task += 1
        else:
            for target in targets:
                spent.by_task[target] += 1.0 / len(targets)
    return spent


def per_kind(changes: Iterable[tuple[str, Iterable[Target]]], by_task: Mapping[Target, float]) -> dict[str, float]:
    """Mean requests per change of each kind: CHANGES are (kind, the tasks the change concerns:
    its task and its mirror), BY_TASK the requests charged to each task. Assumes no two changes
    share a task."""
    spent: dict[str, float] = defaultdict(float)
    count: Counter = Counter()
    for kind, targets in changes:
        count[kind] += 1
        spent[kind] += sum(by_task.get(target, 0.0) for target in set(targets))
    return {kind: round(spent[kind] / count[kind], 2) for kind in sorted(count)}


def shapes_by_kind(changes: Iterable[tuple[str, Iterable[Target]]], exchanges: Iterable[Exchange],
                   comment_tasks: Mapping[tuple[str, int], int],
                   file_tasks: Mapping[tuple[str, int], int]) -> dict[str, dict[str, int]]:
    """What the requests charged to each kind of change were (request_kind), summed over the
    changes of that kind (CHANGES as per_kind takes them): where calls_by_kind says how many,
    this says which, for the next thing to cut."""
    by_task: dict[Target, Counter] = defaultdict(Counter)
    for exchange in exchanges:
        targets = request_targets(exchange, comment_tasks, file_tasks)
        if targets != POLL:
            for target in targets:
                by_task[target][request_kind(exchange)] += 1
    shapes: dict[str, Counter] = defaultdict(Counter)
    for kind, targets in changes:
        for target in set(targets):
            shapes[kind].update(by_task.get(target, Counter()))
    return {kind: dict(shapes[kind].most_common()) for kind in sorted(shapes)}


def poll_cycles(times: Iterable[float], gap_s: float) -> list[tuple[float, int]]:
    """Request times grouped into poll cycles: (the cycle's first time, its requests). A request
    less than GAP_S after its cycle's first belongs to that cycle."""
    cycles: list[tuple[float, int]] = []
    for at in sorted(times):
        if cycles and at - cycles[-1][0] < gap_s:
            cycles[-1] = (cycles[-1][0], cycles[-1][1] + 1)
        else:
            cycles.append((at, 1))
    return cycles


def quiet_per_day(times: Iterable[float], gap_s: float, scale: float = 1.0) -> float | None:
    """Requests a day while nothing changes, from whole poll cycles: the requests of every cycle
    but the last, over the time from the first cycle to the last. SCALE: the share of a real day
    the run's day is (a quick run's shrunk day). None with fewer than two cycles."""
    cycles = poll_cycles(times, gap_s)
    if len(cycles) < 2:
        return None
    requests = sum(count for _, count in cycles[:-1])
    return requests * DAY_S * scale / (cycles[-1][0] - cycles[0][0])


def worker_counts(lines: Iterable[str]) -> tuple[Counter, int]:
    """From a worker's JSON log lines: Celery executions by task name, and finished sync runs."""
    executions: Counter = Counter()
    synced = 0
    for line in lines:
        try:
            message = json.loads(line).get("msg", "")
        except (ValueError, AttributeError):
            continue
        if not isinstance(message, str):
            continue
        if message.startswith(SYNCED):
            synced += 1
            continue
        found = CELERY_END.match(message)
        if found:
            executions[found.group(1)] += 1
    return executions, synced


def runs_by_outcome(metrics_text: str) -> Counter:
    """Sync runs a worker counted (crosslink_sync_runs_total), by outcome."""
    outcomes: Counter = Counter()
    for family in text_string_to_metric_families(metrics_text):
        if family.name != "crosslink_sync_runs":
            continue
        for sample in family.samples:
            if sample.name.endswith("_total"):
                outcomes[sample.labels.get("outcome", "")] += sample.value
    return outcomes


def process_group_cpu_s(group: int, proc: Path = Path("/proc")) -> float:
    """CPU seconds (user and system) used so far by the live processes of process group GROUP
    (a worker's main process and its pool: services.WorkerProcess starts each in its own
    session). Linux only; 0.0 elsewhere."""
    ticks = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total = 0
    for entry in proc.glob("[0-9]*/stat"):
        try:
            stat = entry.read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 12 and int(fields[2]) == group:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


@dataclass(frozen=True)
class PlannedChange:
    """One change of the scale phase's day, planned before it starts."""

    # Seconds after the simulated day's midnight.
    at_s: float
    link: int
    # Which of the link's task pairs.
    task: int
    side: str
    kind: str
    # Its webhooks dropped: no scenario delivery, so only the poller can find it.
    dropped: bool


def working_day_times(count: int, rng: random.Random, peak_share: float = PEAK_SHARE,
                      hours: tuple[float, float] = WORKING_HOURS) -> list[float]:
    """COUNT change times in a simulated day, seconds after midnight, sorted: round(COUNT x
    PEAK_SHARE) of them uniformly within working HOURS, the rest uniformly over the hours outside."""
    start, end = hours[0] * 3600.0, hours[1] * 3600.0
    peak = round(count * peak_share)
    last = math.nextafter(DAY_S, 0.0)
    times = [rng.uniform(start, end) for _ in range(peak)]
    for _ in range(count - peak):
        off = rng.uniform(0.0, DAY_S - (end - start))
        times.append(off if off < start else off + (end - start))
    return sorted(min(max(0.0, at), last) for at in times)


def day_plan(links: int, seed: int, changes_per_link: int = SCALE_CHANGES_PER_LINK,
             tasks_per_link: int = SCALE_TASKS_PER_LINK, drop_share: float = SCALE_DROP_SHARE) -> list[PlannedChange]:
    """The scale phase's day for LINKS links: CHANGES_PER_LINK x LINKS changes at working-day
    times, each on a link, task pair, side and kind drawn at random (SCALE_KIND_WEIGHTS), and
    round(DROP_SHARE x changes) of them, drawn at random, with their webhooks dropped."""
    rng = random.Random(seed)
    count = links * changes_per_link
    times = working_day_times(count, rng)
    dropped = set(rng.sample(range(count), round(count * drop_share)))
    kinds, weights = zip(*SCALE_KIND_WEIGHTS.items())
    return [PlannedChange(at, rng.randrange(links), rng.randrange(tasks_per_link), rng.choice(SIDES),
                          rng.choices(kinds, weights)[0], index in dropped)
            for index, at in enumerate(times)]


def next_status(side: str, status: int, transitions: Mapping[int, Iterable[int]] | None) -> int | None:
    """The status a person on SIDE moves a task in STATUS to, or None (none to move to): the
    partner's people between In work and Review in turn (PARTNER_STATUS_CYCLE); the client's
    along their process's TRANSITIONS, never to a status no move leads on from (Rejected), so a
    day of moves never ends a task's."""
    if side == "partner":
        return PARTNER_STATUS_CYCLE.get(status)
    allowed = transitions or {}
    onward = sorted(target for target in allowed.get(status, ()) if allowed.get(target))
    return onward[0] if onward else None


@dataclass(frozen=True)
class Capacity:
    """The partner account's requests a day as a fixed part and a part per link, and the most
    links a plan serves with its spare kept."""

    fixed_per_day: float
    per_link_per_day: float
    # None: the cost does not grow with the links (nothing bounds them by this measure).
    max_links: int | None


def capacity(per_day_by_links: Mapping[int, float], quota: int = PLAN_QUOTA, spare: float = SPARE_SHARE,
             fixed_per_day: float | None = None) -> Capacity | None:
    """How many links a plan of QUOTA requests a day serves with SPARE of it left, from the
    partner's measured requests a day by number of links (PER_DAY_BY_LINKS).

    With two link counts or more: the least-squares line through them (fixed part, cost per
    link). With one: FIXED_PER_DAY (the quiet overhead, which does not grow with the links) as the
    fixed part, and the rest of the measured requests shared by its links. None if neither.
    Assumes the cost grows linearly with the links at the measured traffic per link.
    """
    points = [(float(links), float(requests)) for links, requests in per_day_by_links.items() if links > 0]
    if len({links for links, _ in points}) >= 2:
        mean_x = statistics.fmean(x for x, _ in points)
        mean_y = statistics.fmean(y for _, y in points)
        slope = (sum((x - mean_x) * (y - mean_y) for x, y in points)
                 / sum((x - mean_x) ** 2 for x, _ in points))
        fixed = mean_y - slope * mean_x
    elif points and fixed_per_day is not None:
        links, requests = points[0]
        fixed, slope = float(fixed_per_day), (requests - fixed_per_day) / links
    else:
        return None
    budget = quota * (1.0 - spare)
    if slope <= 0:
        return Capacity(fixed, slope, None)
    return Capacity(fixed, slope, max(0, math.floor((budget - fixed) / slope)))


# ==============================================================================================
# The wire tap

class WireTap:
    """ASGI middleware in front of the emulator that keeps every REST request: its body (a
    card file's upload excepted), when it came and when its answer was done, the status, and
    for creates the answer (the new id). The emulator's log counts requests as Planfix would;
    this says what each one was about."""

    def __init__(self, clock: Callable[[], float]):
        self.clock = clock
        self.app: Any = None
        self._exchanges: list[Exchange] = []
        self._lock = threading.Lock()

    def wrap(self, app: Any) -> "WireTap":
        self.app = app
        return self

    def exchanges(self, since: float = 0.0, until: float = math.inf, account: str | None = None) -> list[Exchange]:
        with self._lock:
            kept = list(self._exchanges)
        return [e for e in kept if since <= e.started <= until and (account is None or e.account == account)]

    def clear(self) -> None:
        with self._lock:
            self._exchanges = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:  # noqa: ANN401 - ASGI
        path = scope.get("path", "") if scope.get("type") == "http" else ""
        account, marker, rest = path.lstrip("/").partition("/rest")
        if not marker:
            await self.app(scope, receive, send)
            return
        exchange = Exchange(account, scope["method"], rest or "/", scope.get("query_string", b"").decode("latin-1"),
                            started=self.clock())
        headers = dict(scope.get("headers") or ())
        keep_body = b"multipart" not in headers.get(b"content-type", b"")
        keep_answer = scope["method"] == "POST" and exchange.path.rstrip("/") in ("/task", "/file")
        body: list[bytes] = []
        answer: list[bytes] = []

        async def tapped_receive() -> Any:
            message = await receive()
            if keep_body and message.get("type") == "http.request":
                body.append(message.get("body", b""))
            return message

        async def tapped_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                exchange.status = int(message["status"])
            elif message["type"] == "http.response.body":
                if keep_answer:
                    answer.append(message.get("body", b""))
                if not message.get("more_body"):
                    exchange.done = self.clock()
            await send(message)

        try:
            await self.app(scope, tapped_receive, tapped_send)
        finally:
            exchange.body = b"".join(body)[:MAX_KEPT_BODY]
            exchange.answer = b"".join(answer)
            exchange.done = exchange.done or self.clock()
            with self._lock:
                self._exchanges.append(exchange)


def writes_of(exchanges: Iterable[Exchange], account: str) -> list[Write]:
    """ACCOUNT's writes that Planfix took (200, 201, or 202: queued), with the marks they carry."""
    return [Write(e.done, carried(e.body.decode("utf-8", "replace"))) for e in exchanges
            if e.account == account and e.is_write and e.status in (200, 201, 202)]


# ==============================================================================================
# A stack of the benchmark

@dataclass
class Change:
    """One change of the economy phase: a KIND made on SIDE of its own task pair."""

    kind: str
    side: str
    # (client number, partner number), made at set-up; a create makes its own.
    pair: tuple[int, int] | None = None
    # The comment on SIDE's task, made at set-up, that a comment edit or deletion changes.
    comment: int | None = None
    # What a create made on SIDE.
    created: int | None = None


@dataclass
class EconomyWork:
    """What the economy phase changes, made at set-up: a task pair for each change but the
    creates, and the comment a comment edit or deletion changes."""

    changes: list[Change]
    link: int = 0


@dataclass
class BacklogWork:
    """What the phases at Planfix's real limits change, made at set-up: each link's backlog
    (link 0's the big one), and on a link of their own the burst tasks and the idle phase's."""

    backlog: dict[int, list[tuple[int, int]]]
    bursts: dict[float, list[tuple[int, int]]]
    idle: list[tuple[int, int]]
    own_link: int


class Bench:
    """One stack of the benchmark (an embedded Redis, the stack, the poller if asked, the wire
    tap) and the phases that run on it."""

    def __init__(self, plan: BenchPlan, workdir: Path, log: Callable[[str], None] = lambda _: None,
                 links: int = 1, time_scale: float | None = None):
        self.plan = plan
        self.workdir = workdir
        self.log = log
        self.links = max(1, links)
        # The poller's day shrunk by TIME_SCALE (the plan's by default).
        self.poller = PollerSettings.default(plan.time_scale if time_scale is None else time_scale)
        self.beat = False
        # Planfix's own limits in force (real_day), whatever the run's time scale.
        self.real_limits = False
        self.time_scale = 1.0
        self.redis: EmbeddedRedis | None = None
        self.stack: LocalStack | None = None
        self.limiter: AccountLimiter | None = None
        self.tap: WireTap | None = None
        # The partner's poll period as measured while settling (the expected one until then).
        self.period_s = self.poller.expected_period_s
        # Whether the poller had nothing left to do about the set-up when the phases began.
        self.settled: bool | None = None
        # One keep-alive connection per sending thread: http.client costs a tenth of httpx's
        # CPU per request, and the sender shares this process with the emulator it measures.
        self._senders = threading.local()
        self._stream = 0
        self._stream_lock = threading.Lock()
        # Whether quiet and settle look at sync work only, not at the poller's jobs (busy).
        self.sync_work_only = False

    # -- set-up -------------------------------------------------------------------------------
    def start(self, workers: int, beat: bool, time_scale: float = 1.0) -> None:
        """The stack with WORKERS worker processes, and with BEAT the reconciliation beat at the
        default settings (self.poller), as `crosslink run` and compose start it. TIME_SCALE:
        CROSSLINK_TIME_SCALE, which shrinks the sync's own delays (back-offs, read-backs of a
        queued write) with a shrunk day."""
        emulator, links = build_configs(self.links)
        for account in emulator["accounts"].values():
            account["limits"] = {}
        self.beat = beat
        self.time_scale = time_scale
        self.redis = EmbeddedRedis().start()
        self.stack = LocalStack(emulator, links, redis_url=self.redis.url, workdir=self.workdir / "stack",
                                workers=workers, concurrency=CONCURRENCY, time_scale=time_scale,
                                producer_process=True, extra_env=self.poller.env())
        self.stack.start()
        self.tap = self.serve_tapped()
        logging.getLogger("crosslink.producer").setLevel(logging.WARNING)
        self.limiter = AccountLimiter(redis.Redis.from_url(self.redis.url))
        self.set_limits(None)
        if beat:
            self.stack.start_beat(self.poller.floor_s)

    def wait_set_up(self, timeout: float = SET_UP_TIMEOUT_S) -> None:
        """Wait until the workers have set every link up (workers.anchors: its record tasks made
        and its first head anchored in both accounts): a link pays that once, not every day, so
        a quiet day is measured after it (its daily anchor is counted like any request)."""
        deadline = time.monotonic() + timeout
        journal = self.stack.journal()
        try:
            while time.monotonic() < deadline:
                if all({anchor.side for anchor in journal.anchors(link.name)} >= set(link.sides)
                       for link in self.stack.config.links):
                    return
                time.sleep(0.2)
        finally:
            journal.close()
        raise RuntimeError(f"the links were not set up (record tasks, first anchors) within {timeout:.0f} s")

    def serve_tapped(self) -> WireTap:
        """Serve the stack's world again behind a wire tap, on the same port: the links file
        names that port, and nothing has asked the emulator anything yet (a worker connects
        with its first job)."""
        stack = self.stack
        assert stack is not None and stack.world is not None and stack.emulator is not None
        tap = WireTap(stack.world.now)
        port = stack.emulator.port
        stack.emulator.stop()
        stack.emulator = EmulatorServer(stack.world, port=port, wrap=tap.wrap).start()
        return tap

    def set_workers(self, count: int) -> None:
        stack = self.stack
        assert stack is not None
        while len(stack.worker_processes) > count:
            stack.worker_processes.pop().stop()
        while len(stack.worker_processes) < count:
            stack.add_worker(f"bench{len(stack.worker_processes) + 1}")

    def accounts(self) -> list[str]:
        return ["partner"] + [client_account(i) for i in range(self.links)]

    def set_limits(self, rate_per_s: float | None, daily_quota: int | None = None) -> None:
        """Planfix's rate limit on (RATE_PER_S) or off (None), at the emulator and in our limiter,
        and the limiter's daily quota (DAILY_QUOTA; the poller's by default), which with the
        poller on sets the reconciliation budget. The emulator enforces no quota (a full run
        spends more than a day's 20,000 requests on some accounts)."""
        assert self.stack is not None and self.stack.world is not None and self.limiter is not None
        quota = (daily_quota if daily_quota is not None else self.poller.daily_quota) if self.beat else 0
        for account in self.accounts():
            self.stack.world.set_limits(account, rate_per_s=rate_per_s)
            self.limiter.set_account_limits(account, rate_per_s=rate_per_s or 0, daily_quota=quota)
            self.limiter.reset(account)

    def real_day(self) -> None:
        """Planfix's own limits from now on: 1 request/s and the smallest plan's quota, whatever
        the run's time scale (the poll period grows back to a real one). Waits for the poll whose
        turn was taken at the old period, so none comes before the new period is over."""
        self.set_limits(PLANFIX_RATE_PER_S, Settings.from_env({}).daily_quota)
        self.real_limits = True
        if self.beat and self.poller.scale != 1.0:
            self.wait_poll_cycles(1, self.stack.world.now())

    def scenario_specs(self) -> dict[str, list[dict[str, Any]]]:
        """Each account's scenarios: every link side's there, each limited to its project."""
        stack = self.stack
        assert stack is not None and stack.world is not None and stack.config is not None
        per_account: dict[str, list[dict[str, Any]]] = {account: [] for account in self.accounts()}
        for link in stack.config.links:
            for side_name, side in link.sides.items():
                project = side.scope.value if side.scope.kind == "project" else None
                for spec in scenarios_for_side(stack.producer.url, link.name, side_name, side.webhook_auth,
                                               stack.env[side.webhook_secret_env], side.integration_user):
                    per_account[side.account].append({**spec, "project": project} if project else spec)
        return per_account

    def scenarios(self, on: bool) -> None:
        """Real scenario deliveries (each link side limited to its project) or none."""
        specs = self.scenario_specs() if on else {account: [] for account in self.accounts()}
        for account, account_specs in specs.items():
            self.stack.world.set_scenarios(account, account_specs)

    def busy(self) -> bool:
        """Anything left to do: the stack's own look (jobs queued or running included), or with
        sync_work_only just sync work (a task's run pending or claimed, a scenario delivery in
        flight): with many accounts polled every second or so, a tick or a poll is in the queue
        most of the time, and the stack would hardly ever look quiet."""
        if not self.sync_work_only:
            return self.stack.busy()
        client = redis.Redis.from_url(self.redis.url)
        try:
            left = any(next(client.scan_iter(pattern, count=1000), None) is not None
                       for pattern in (PENDING_KEY.split("{", 1)[0] + "*", CLAIMS_KEY.split("{", 1)[0] + "*"))
        finally:
            client.close()
        return left or not self.stack.world.wait_deliveries_idle(0)

    def quiet(self, timeout: float = QUIET_TIMEOUT_S) -> None:
        assert self.stack is not None
        deadline = time.monotonic() + timeout
        calm = 0
        while calm < QUIET_LOOKS:
            if time.monotonic() > deadline:
                raise RuntimeError("the pipeline did not go quiet")
            calm = 0 if self.busy() else calm + 1
            if calm < QUIET_LOOKS:
                time.sleep(QUIET_POLL_S)

    def next_stream(self) -> int:
        with self._stream_lock:
            self._stream += 1
            return self._stream

    def mirrors(self, link: int, side: str) -> dict[int, int]:
        """SIDE's task numbers of LINK mapped to their mirrors' on the other side, read from the
        mirrors' markers in the emulator."""
        stack = self.stack
        conf = stack.config.links[link]
        other = stack.world.account(conf.sides[conf.other(side)].account)
        with stack.world.lock:
            markers = [(number, task.get("sourceDataVersion")) for number, task in other.tasks.items()]
        found: dict[int, int] = {}
        for number, marker in markers:
            parsed = parse_marker(marker)
            if parsed is not None and parsed[:2] == (link_name(link), side):
                found.setdefault(parsed[2], number)
        return found

    def create_pairs(self, wanted: Sequence[tuple[int, int]]) -> list[list[tuple[int, int]]]:
        """For each (link, count) of WANTED, COUNT client tasks of that link mirrored on the
        partner: [(client number, partner number)]. Scenarios are on afterwards."""
        self.scenarios(True)
        world = self.stack.world
        made = [[world.create_task(client_account(link), {
            "name": f"Bench task {link + 1}.{i}", "processId": CLIENT_PROCESS, "project": {"id": CLIENT_PROJECT},
            "assignees": {"users": [{"id": f"user:{CLIENT_PERSON}"}]}}, author=CLIENT_PERSON)
            for i in range(count)] for link, count in wanted]
        self.quiet()
        pairs = []
        for (link, _), numbers in zip(wanted, made):
            mirrors = self.mirrors(link, "client")
            missing = [number for number in numbers if number not in mirrors]
            if missing:
                raise RuntimeError(f"client tasks {missing} of link {link + 1} were not mirrored")
            pairs.append([(number, mirrors[number]) for number in numbers])
        return pairs

    def post(self, link: int, side: str, number: int, event: str = "task_changed") -> float:
        """Send the webhook a scenario would; returns when it was sent (the emulator's clock)."""
        stack = self.stack
        conf = stack.config.links[link].sides[side]
        secret = stack.env[conf.webhook_secret_env]
        headers = {"Content-Type": "application/json", **request_auth(conf.webhook_auth, secret)}
        body = json.dumps({"event": event, "task": number})
        for attempt in (1, 2):
            connection = getattr(self._senders, "connection", None)
            if connection is None:
                parsed = urlsplit(stack.producer.url)
                connection = self._senders.connection = http.client.HTTPConnection(
                    parsed.hostname, parsed.port, timeout=10)
            sent = stack.world.now()
            try:
                connection.request("POST", hook_path(link_name(link), side), body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                break
            except (OSError, http.client.HTTPException):
                # The producer closed an idle keep-alive connection: open a new one, once.
                connection.close()
                self._senders.connection = None
                if attempt == 2:
                    raise
        if response.status != 200:
            raise RuntimeError(f"the producer answered {response.status} to a webhook")
        return sent

    def log_entries(self, since: float, until: float = math.inf, accounts: Iterable[str] | None = None) -> list[dict]:
        """The emulator's request log (what Planfix counts) between SINCE and UNTIL."""
        world = self.stack.world
        return [entry for account in (accounts or self.accounts()) for entry in world.requests(account)
                if since <= entry["t"] <= until]

    def owners(self) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """Which task holds each comment and each card file, in every account."""
        world = self.stack.world
        comments: dict[tuple[str, int], int] = {}
        files: dict[tuple[str, int], int] = {}
        with world.lock:
            for name in self.accounts():
                account = world.account(name)
                for comment_id, comment in account.comments.items():
                    comments[(name, comment_id)] = int(comment["task"])
                    for file_id in comment.get("files") or ():
                        files.setdefault((name, int(file_id)), int(comment["task"]))
                for number, task in account.tasks.items():
                    for file_id in task.get("files") or ():
                        files[(name, int(file_id))] = number
        return comments, files

    # -- the poller -----------------------------------------------------------------------------
    def poll_times(self, since: float, account: str = "partner") -> list[float]:
        return [e.started for e in self.tap.exchanges(since, account=account) if is_poll(e)]

    def wait_poll_cycles(self, count: int, since: float, account: str = "partner") -> list[tuple[float, int]]:
        """Wait until ACCOUNT has been polled COUNT times since SINCE; the poll cycles seen (fewer
        if the poller did not poll in twice the time the budget allows)."""
        deadline = time.monotonic() + 2 * (count + 1) * self.poller.expected_period_s + 30
        while True:
            cycles = poll_cycles(self.poll_times(since, account), self.poller.cycle_gap_s)
            if len(cycles) >= count or time.monotonic() > deadline:
                if len(cycles) < count:
                    self.log(f"only {len(cycles)} polls of {account} since set-up, {count} awaited")
                return cycles
            time.sleep(min(1.0, self.poller.tick_s))

    def settle(self, since: float) -> bool:
        """Wait until the poller has nothing left to do about what happened since SINCE (see
        SETTLE_PERIODS), measuring the partner's poll period meanwhile; False if it still had
        after the longest wait (then the next phase's figures include what it did)."""
        most = max(SETTLE_MIN_S, SETTLE_PERIODS * self.poller.expected_period_s)
        deadline = time.monotonic() + most
        world = self.stack.world
        while True:
            exchanges = self.tap.exchanges(since)
            work = [e.started for e in exchanges if not is_poll(e) and e.path.rstrip("/") != "/user/list"]
            last_work = max(work, default=since)
            cycles = poll_cycles([e.started for e in exchanges if e.account == "partner" and is_poll(e)],
                                 self.poller.cycle_gap_s)
            gaps = [b[0] - a[0] for a, b in zip(cycles, cycles[1:])]
            if gaps:
                self.period_s = statistics.median(gaps)
            if (any(at > last_work for at, _ in cycles) and world.now() - last_work >= self.period_s
                    and not self.busy()):
                self.log(f"settled {world.now() - since:.0f} s after set-up; partner poll period "
                         f"{self.period_s:.2f} s (expected {self.poller.expected_period_s:.2f} s)")
                self.settled = True
                return True
            if time.monotonic() > deadline:
                self.log(f"the poller was still busy {most:.0f} s after set-up")
                self.settled = False
                return False
            time.sleep(min(1.0, max(0.1, self.poller.tick_s)))

    def tail(self, last_change: float) -> float:
        """After a phase's last change: TAIL_CYCLES polls of the partner, and what they queued
        done; when the window closes. Not on a quick run's stack switched to the real day (its
        polls are a real period apart, minutes of its shrunk time): there a phase counts the
        polls that came within it."""
        self.quiet()
        if self.beat and not (self.real_limits and self.poller.scale != 1.0):
            self.wait_poll_cycles(TAIL_CYCLES, last_change)
            self.quiet()
        return self.stack.world.now()

    # -- workers --------------------------------------------------------------------------------
    def worker_lines(self) -> list[int]:
        return [len(worker.lines) for worker in self.stack.worker_processes]

    def worker_runs(self) -> Counter | None:
        """Sync runs the workers counted so far, by outcome (their /metrics); None if one did not answer."""
        total: Counter = Counter()
        for worker in self.stack.worker_processes:
            try:
                total.update(runs_by_outcome(httpx.get(worker.metrics_url, timeout=5).text))
            except httpx.HTTPError:
                return None
        return total

    def worker_cpu_s(self) -> float:
        return sum(process_group_cpu_s(worker.process.pid) for worker in self.stack.worker_processes
                   if worker.process is not None)

    def stop(self) -> None:
        stack, server, self.stack, self.redis = self.stack, self.redis, None, None
        if stack is not None:
            stack.stop()
        if server is not None:
            server.cleanup()

    # -- the pipeline (local capacity) ------------------------------------------------------------
    def pipeline(self, pairs: list[tuple[int, int]], workers: int) -> PipelineFigures:
        figures = PipelineFigures(workers=workers)
        self.set_workers(workers)
        self.scenarios(False)
        self.quiet()
        streams = [self.next_stream() for _ in pairs]
        probes: dict[int, tuple[bool, float | None]] = {}
        seq = [0]
        warm_rate = self.plan.pipeline_rates[0]
        warmed, _ = self._offer(pairs, streams, warm_rate, WARM_UP_S, seq)
        figures.tried[f"{warm_rate} for {WARM_UP_S:.0f} s (warm-up, not counted)"] = warmed
        for rate in self.plan.pipeline_rates:
            ok, found = self._offer(pairs, streams, rate, self.plan.pipeline_probe_s, seq)
            figures.tried[str(rate)] = ok
            p99 = _ms(percentile(found, 0.99))
            figures.latency_by_rate[str(rate)] = [_ms(percentile(found, 0.5)), p99]
            probes[rate] = (ok, p99)
            self.log(f"pipeline {workers}w {rate}/s: {'held' if ok else 'backlog grew'}")
            if not ok:
                break
        best = self._sustain(pairs, streams, sustain_order(probes), seq, figures, None)
        if best is not None:
            figures.pipeline_events_per_s, found = best
            figures.events = len(found)
            figures.e2e_p50_ms = _ms(percentile(found, 0.5))
            figures.e2e_p99_ms = _ms(percentile(found, 0.99))
        if best is not None and figures.e2e_p99_ms is not None and figures.e2e_p99_ms < P99_TARGET_MS:
            target: tuple[float, list[float]] | None = best
        else:
            # Below the rate just held (or failed) at length: it said what that rate does.
            ceiling = best[0] if best is not None else math.inf
            order = [rate for rate in sustain_order(probes, P99_TARGET_MS) if rate < ceiling]
            target = self._sustain(pairs, streams, order, seq, figures, P99_TARGET_MS)
        if target is not None:
            figures.target_events_per_s, found = target
            figures.target_p50_ms = _ms(percentile(found, 0.5))
            figures.target_p99_ms = _ms(percentile(found, 0.99))
        return figures

    def _sustain(self, pairs: list[tuple[int, int]], streams: list[int], order: list[int], seq: list[int],
                 figures: PipelineFigures, p99_under_ms: float | None) -> tuple[float, list[float]] | None:
        """Offer the rates of ORDER for the long run in turn (SUSTAIN_ATTEMPTS at most) until one
        is held (and, with P99_UNDER_MS, with its p99 under that); (rate, latencies) or None."""
        seconds = self.plan.pipeline_sustain_s
        for rate in order[:SUSTAIN_ATTEMPTS]:
            try:
                ok, found = self._offer(pairs, streams, rate, seconds, seq)
            except RuntimeError as exc:  # did not drain: not sustained, said so in the figures
                self.log(f"pipeline {figures.workers}w {rate}/s for {seconds:.0f} s: {exc}")
                ok, found = False, []
            p99 = _ms(percentile(found, 0.99))
            if ok and p99_under_ms is not None and (p99 is None or p99 >= p99_under_ms):
                ok = False
                self.log(f"pipeline {figures.workers}w {rate}/s for {seconds:.0f} s: p99 {p99} ms")
            key = f"{rate} for {seconds:.0f} s" + (f" with p99 under {p99_under_ms:.0f} ms" if p99_under_ms else "")
            figures.tried[key] = ok
            if ok:
                return float(rate), found
        return None

    def _offer(self, pairs: list[tuple[int, int]], streams: list[int], rate: int, seconds: float,
               seq: list[int]) -> tuple[bool, list[float]]:
        """Post RATE task edits a second for SECONDS, round-robin over PAIRS; (held, latencies).
        Each edit is due at its place in the schedule, and its latency counts from then (open
        loop) to the write that carries its content."""
        world = self.stack.world
        self.tap.clear()  # a long run's exchanges would fill the memory; each offer reads its own
        total = int(rate * seconds)
        events: list[Event | None] = [None] * total
        sent: list[float] = [0.0] * total
        started, started_wall = time.monotonic(), world.now()

        def sender(offset: int) -> None:
            for index in range(offset, total, SENDERS):
                pause = started + index / rate - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                place = index % len(pairs)
                client_number, _ = pairs[place]
                seq_no = seq[0] + index
                world.update_task(client_account(0), client_number,
                                  {"description": f"{event_token(streams[place], seq_no)} edit"},
                                  author=CLIENT_PERSON)
                sent[index] = self.post(0, "client", client_number)
                events[index] = Event(streams[place], seq_no, started_wall + index / rate)

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seq[0] += total
        first_post, last_post = min(sent), max(sent)
        deadline = time.monotonic() + DRAIN_S
        while time.monotonic() < deadline and self.stack.busy():
            time.sleep(0.05)
        held = not self.stack.busy()
        # The senders wait for each answer: a producer that answers slower than RATE lowers the
        # rate offered, and a rate not offered is not held.
        offered = (total - 1) / max(last_post - first_post, 1e-9)
        if offered < rate * OFFERED_SHARE:
            self.log(f"pipeline: {rate}/s asked, {offered:.0f}/s offered")
            held = False
        self.quiet()
        made = [event for event in events if event is not None]
        done = write_times(made, writes_of(self.tap.exchanges(started_wall), "partner"))
        found = []
        for event, at in zip(made, done):
            if at is None or at > last_post + DRAIN_S:
                held = False
            if at is not None:
                found.append(at - event.scheduled)
        return held, found

    # -- the deployment ---------------------------------------------------------------------------
    def prepare_economy(self) -> EconomyWork:
        """Every task pair the economy phase changes, made at once, so one settling follows them all."""
        combos = [(kind, side) for kind in KINDS for side in SIDES]
        changes = [Change(*combos[index % len(combos)]) for index in range(self.plan.economy_changes)]
        paired = [change for change in changes if change.kind != "create"]
        work = EconomyWork(changes)
        (made,) = self.create_pairs([(work.link, len(paired))])
        for change, pair in zip(paired, made):
            change.pair = pair
        world = self.stack.world
        for index, change in enumerate(changes):
            if change.kind in ("comment edit", "comment delete"):
                account, number = self.task_of(work.link, change)
                change.comment = world.add_comment(account, number, {"description": f"set-up comment {index}"},
                                                   author=self.person(change.side))
        self.quiet()
        return work

    def prepare_backlog(self) -> BacklogWork:
        """The fairness phase's backlogs (link 0's big, every other link's small), and on the
        last link the burst tasks and the idle phase's, made at once."""
        plan = self.plan
        own = self.links - 1
        fair_links = [link for link in range(self.links) if link != own]
        made = self.create_pairs([(link, plan.fair_big_backlog if link == 0 else plan.fair_events_per_link)
                                  for link in fair_links] + [(own, plan.bursts) for _ in BURST_GAPS_S]
                                 + [(own, plan.idle_samples)])
        fair, bursts = made[:len(fair_links)], made[len(fair_links):-1]
        return BacklogWork(dict(zip(fair_links, fair)), dict(zip(BURST_GAPS_S, bursts)), made[-1], own)

    @staticmethod
    def person(side: str) -> int:
        return (PARTNER_PEOPLE if side == "partner" else CLIENT_PEOPLE)[0]

    def task_of(self, link: int, change: Change, side: str | None = None) -> tuple[str, int]:
        """(account, number) of CHANGE's task on SIDE (its own side by default)."""
        side = side or change.side
        assert change.pair is not None
        return (("partner", change.pair[1]) if side == "partner" else (client_account(link), change.pair[0]))

    def economy(self, work: EconomyWork, report: BenchReport) -> None:
        """Every kind of change on both sides through real scenario deliveries, with the poller
        on, spread over ECONOMY_PERIODS poll periods; every request counted (module docstring)."""
        changes, link_index = work.changes, work.link
        self.scenarios(True)
        self.set_limits(self.poller.rate_per_s)
        self.quiet()
        world = self.stack.world
        gap = ECONOMY_PERIODS * self.period_s / max(1, len(changes))
        start = world.now()
        for index, change in enumerate(changes):
            pause = start + index * gap - world.now()
            if pause > 0:
                time.sleep(pause)
            self.make_change(link_index, change, index)
        last = world.now()
        pause = start + ECONOMY_PERIODS * self.period_s - last
        if pause > 0:
            time.sleep(pause)
        end = self.tail(last)
        total = len(self.log_entries(start, end))
        comments, files = self.owners()
        spent = charge(self.tap.exchanges(start, end), comments, files)
        created = {side: self.mirrors(link_index, side) for side in SIDES}
        link = self.stack.config.links[link_index]
        charged = []
        for change in changes:
            if change.kind == "create":
                own = link.sides[change.side].account
                other = link.sides[link.other(change.side)].account
                targets = [(own, change.created)] + ([(other, created[change.side][change.created])]
                                                      if change.created in created[change.side] else [])
            else:
                targets = [self.task_of(link_index, change, side) for side in SIDES]
            charged.append((f"{change.side} {change.kind}", targets))
        count = len(changes)
        report.api_calls_per_change = round(total / count, 3)
        report.calls_by_kind = {**per_kind(charged, spent.by_task),
                                "polls (per change)": round(spent.polls / count, 2),
                                "no one task (per change)": round(spent.no_task / count, 2)}
        report.requests_by_kind = shapes_by_kind(charged, self.tap.exchanges(start, end), comments, files)
        cycles = poll_cycles(self.poll_times(start), self.poller.cycle_gap_s)
        report.economy = {
            "changes": count, "requests": total, "poll_requests": spent.polls, "window_s": round(end - start, 1),
            "poll_period_s": round(self.period_s, 2), "partner_polls": len([c for c in cycles if c[0] <= end]),
            "answered_202": sum(1 for entry in self.log_entries(start, end) if entry["status"] == 202),
            "settled_before": self.settled,
        }
        self.log(f"economy: {report.api_calls_per_change} requests per change all-in, {report.economy}")

    def make_change(self, link_index: int, change: Change, index: int) -> None:
        """Make CHANGE as a person on its side would, in the emulator's world."""
        world = self.stack.world
        link = self.stack.config.links[link_index]
        side, kind = change.side, change.kind
        author = self.person(side)
        token = event_token(self.next_stream(), 0)
        # The link names the partner the owner of names and the client of descriptions.
        owned = {"partner": "name", "client": "description"}
        if kind == "create":
            account = link.sides[side].account
            process, project = ((PARTNER_PROCESS, partner_project(link_index)) if side == "partner"
                                else (CLIENT_PROCESS, CLIENT_PROJECT))
            change.created = world.create_task(account, {"name": f"{token} New bench task", "processId": process,
                                                         "project": {"id": project}}, author=author)
            return
        account, number = self.task_of(link_index, change)
        if kind == "edit":
            world.update_task(account, number, {owned[side]: f"{token} edited"}, author=author)
        elif kind == "contested edit":
            world.update_task(account, number, {owned[link.other(side)]: f"{token} contested"}, author=author)
        elif kind == "status":
            with world.lock:
                status = world.account(account).tasks[number]["status"]
            allowed = (link.statuses.transitions.get(side) or {}).get(status)
            choices = sorted(allowed) if allowed is not None else [PARTNER_STATUS_CYCLE[status]]
            world.update_task(account, number, {"status": {"id": choices[0]}}, author=author)
        elif kind == "reassign":
            with world.lock:
                current = {str(person) for person in world.account(account).tasks[number]["assignees"]["users"]}
            people = PARTNER_PEOPLE if side == "partner" else CLIENT_PEOPLE
            person = next(p for p in people if f"user:{p}" not in current)
            world.update_task(account, number, {"assignees": {"users": [{"id": f"user:{person}"}]}}, author=author)
        elif kind == "comment":
            world.add_comment(account, number, {"description": f"{token} comment"}, author=author)
        elif kind == "comment edit":
            world.update_comment(account, change.comment, {"description": f"{token} comment edited"}, author=author)
        elif kind == "comment delete":
            world.delete_comment(account, change.comment, author=author)
        elif kind == "checklist item":
            world.create_checklist_item(account, number, {"name": f"{token} item"}, author=author)
        elif kind == "card file":
            file_id = world.upload_file(account, f"bench-{index}.txt", f"{token} file {index}".encode(), author=author)
            world.attach_file_to_task(account, file_id, number, author=author)
        elif kind == "write answered 202":
            self.edit_answered_202(link_index, change, f"{token} queued", owned[side])
        else:
            raise ValueError(f"unknown kind of change {kind!r}")

    def edit_answered_202(self, link_index: int, change: Change, value: str, field_name: str) -> None:
        """Edit CHANGE's task while Planfix answers every task update of the other account 202
        (queued, applied BUSY_202_DELAY_S later, shrunk with the stack's time), until the sync's
        write got one."""
        world = self.stack.world
        account, number = self.task_of(link_index, change)
        other_account, _ = self.task_of(link_index, change, self.stack.config.links[link_index].other(change.side))
        self.quiet()
        since = world.now()
        world.set_faults(other_account, busy_202=1.0, busy_delay_s=BUSY_202_DELAY_S * self.time_scale)
        try:
            world.update_task(account, number, {field_name: value}, author=self.person(change.side))
            deadline = time.monotonic() + QUIET_TIMEOUT_S
            while time.monotonic() < deadline and not any(
                    e.status == 202 for e in self.tap.exchanges(since, account=other_account)):
                time.sleep(0.02)
        finally:
            world.set_faults(other_account)

    def bursts(self, work: BacklogWork, report: BenchReport) -> None:
        """BURST_EDITS edits of each burst task, BURST_GAPS_S apart (one task after another, gap
        after gap), through real scenario deliveries at Planfix's real limits (call real_day
        first: edits come at real gaps): requests per event for each gap, all-in for those tasks
        (what polls queued for them, up to TAIL_CYCLES polls after, included where the poll
        period is a real one; see tail)."""
        link_index = work.own_link
        self.scenarios(True)
        self.quiet()
        world = self.stack.world
        account = client_account(link_index)
        start = world.now()
        for gap_s, pairs in work.bursts.items():
            for client_number, _ in pairs:
                stream = self.next_stream()
                for edit in range(BURST_EDITS):
                    world.update_task(account, client_number, {"description": f"{event_token(stream, edit)} burst"},
                                      author=CLIENT_PERSON)
                    time.sleep(gap_s)
        end = self.tail(world.now())
        comments, files = self.owners()
        spent = charge(self.tap.exchanges(start, end), comments, files)
        report.burst_calls_by_gap = {
            _gap_key(gap): round(sum(spent.by_task.get((account, c), 0.0) + spent.by_task.get(("partner", p), 0.0)
                                     for c, p in pairs) / max(1, len(pairs) * BURST_EDITS), 3)
            for gap, pairs in work.bursts.items()}
        self.log(f"bursts: requests per event by gap {report.burst_calls_by_gap}")

    def fairness(self, work: BacklogWork, report: BenchReport) -> None:
        """A skewed backlog on the partner account at Planfix's 1 request/s (call real_day
        first): the first link's backlog is posted first, then every other link's. While it
        waits, what the workers do."""
        backlog = work.backlog
        self.scenarios(False)
        self.quiet()
        world = self.stack.world
        violations_before = sum(len(world.violations(account)) for account in self.accounts())
        lines_before = self.worker_lines()
        runs_before = self.worker_runs()
        cpu_before, cpu_started = self.worker_cpu_s(), time.monotonic()
        posted: dict[int, list[float]] = defaultdict(list)
        events: list[tuple[int, Event]] = []
        for link in sorted(backlog):  # link 0, the big backlog, first
            for client_number, _ in backlog[link]:
                stream = self.next_stream()
                world.update_task(client_account(link), client_number, {"description": f"{event_token(stream, 0)} fair"},
                                  author=CLIENT_PERSON)
                at = self.post(link, "client", client_number)
                posted[link].append(at)
                events.append((link, Event(stream, 0, at)))
        start = min(at for times in posted.values() for at in times)
        self.quiet(max(QUIET_TIMEOUT_S, 3 * len(events) / PLANFIX_RATE_PER_S))
        cpu = (self.worker_cpu_s() - cpu_before) / max(1e-9, time.monotonic() - cpu_started)
        runs_after = self.worker_runs()
        lines = [line for worker, before in zip(self.stack.worker_processes, lines_before)
                 for line in worker.lines[before:]]
        executions, synced = worker_counts(lines)
        done = write_times([event for _, event in events], writes_of(self.tap.exchanges(start), "partner"))
        written: dict[int, list[float]] = defaultdict(list)
        lags = []
        for (link, event), at in zip(events, done):
            if at is not None:
                written[link].append(at)
                lags.append(at - event.scheduled)
        shares = backlog_fairness(posted, written)
        end = max((at for times in written.values() for at in times), default=start)
        served = [entry for entry in self.log_entries(start, end, ["partner"]) if not entry["over_limit"]]
        completion = {link: max(written[link]) - min(posted[link]) for link in posted if written.get(link)}
        small = sorted(seconds for link, seconds in completion.items() if link != 0)
        violations = sum(len(world.violations(account)) for account in self.accounts()) - violations_before
        sync_jobs = sum(count for name, count in executions.items() if name.startswith(SYNC_JOB_PREFIX))
        runs = (runs_after - runs_before) if runs_after is not None and runs_before is not None else None
        report.limiter_violations = violations
        # Each served request holds one slot of 1/rate: the backlog lasted from the first slot's
        # start to the last one's end.
        report.limit_utilization = (round(len(served) / ((end - start) * PLANFIX_RATE_PER_S + 1), 3)
                                    if served else None)
        report.fairness_jain = _round(shares.jain)
        report.max_link_lag_s = round(max(lags), 1) if lags else None
        report.fair_links = len(backlog)
        report.celery_runs_per_sync = round(sync_jobs / synced, 3) if synced else None
        report.runs_per_sync = (round(sum(runs.values()) / runs["done"], 3)
                                if runs is not None and runs.get("done") else None)
        report.worker_cpu_while_waiting = round(cpu, 3)
        report.fairness = {
            "events": len(events), "written": sum(len(times) for times in written.values()),
            "big_backlog": len(backlog.get(0, ())),
            "big_link_completion_s": _round(completion.get(0), 1),
            "small_link_completion_p50_s": _round(percentile(small, 0.5), 1),
            "small_link_completion_max_s": _round(max(small) if small else None, 1),
            "jain_window_s": round(shares.window[1] - shares.window[0], 1) if shares.window else None,
            "served_in_window": {str(link): count for link, count in shares.served.items()} if len(shares.served) <= 10
            else None,
            "celery_executions": dict(executions), "synced_runs": synced,
            "runs_by_outcome": dict(runs) if runs is not None else None,
            "settled_before": self.settled,
        }
        self.log(f"fairness: {report.fairness}")

    def idle(self, work: BacklogWork, report: BenchReport) -> None:
        """Single changes on a quiet system at Planfix's 1 request/s (call real_day first), each
        at a fixed time (open loop): from that time to the end of the write that carries it."""
        link_index = work.own_link
        self.scenarios(False)
        self.quiet()
        world = self.stack.world
        first = world.now() + IDLE_GAP_S
        events = []
        for index, (client_number, _) in enumerate(work.idle):
            scheduled = first + index * IDLE_GAP_S
            pause = scheduled - world.now()
            if pause > 0:
                time.sleep(pause)
            stream = self.next_stream()
            world.update_task(client_account(link_index), client_number,
                              {"description": f"{event_token(stream, 0)} idle {index}"}, author=CLIENT_PERSON)
            self.post(link_index, "client", client_number)
            events.append(Event(stream, 0, scheduled))
        self.quiet()
        found = [seconds for seconds in latencies(events, writes_of(self.tap.exchanges(first), "partner"))
                 if seconds is not None]
        report.idle_latency_p50_s = _round(percentile(found, 0.5))
        report.idle_latency_p99_s = _round(percentile(found, 0.99))
        if len(found) < len(events):
            self.log(f"idle: {len(events) - len(found)} of {len(events)} changes never written")


    # -- the scale phase ---------------------------------------------------------------------------
    def scale_day(self, plan: Sequence[PlannedChange], pairs: Sequence[Sequence[tuple[int, int]]]) -> ScaleFigures:
        """PLAN's simulated day on PAIRS (each link's task pairs, made at set-up and settled),
        through real scenario deliveries but for the dropped changes', at the poller's shrunk day:
        every request of every account counted over the day, the day's last changes repaired
        (TAIL_CYCLES polls), then SCALE_QUIET_S with nothing changing (module docstring)."""
        world = self.stack.world
        scale = self.poller.scale
        day_real = DAY_S * scale
        figures = ScaleFigures(links=self.links, time_scale=round(scale, 6), day_real_s=round(day_real, 1),
                               settled_before=self.settled)
        specs = self.scenario_specs()
        for account, account_specs in specs.items():
            world.set_scenarios(account, account_specs)
        self.set_limits(self.poller.rate_per_s)
        self.quiet()
        violations_before = sum(len(world.violations(account)) for account in self.accounts())
        lines_before = self.worker_lines()
        runs_before = self.worker_runs()
        cpu_before, cpu_started = self.worker_cpu_s(), time.monotonic()
        streams: dict[tuple[int, int, str], tuple[int, int]] = {}
        # (the change, the kind made, its event (None: no content to match), the account its write goes to)
        made: list[tuple[PlannedChange, str, Event | None, str]] = []
        start = world.now()
        for change in plan:
            pause = start + change.at_s * scale - world.now()
            if pause > 0:
                time.sleep(pause)
            made.append(self.make_scale_change(change, pairs, specs, streams))
        pause = start + day_real - world.now()
        if pause > 0:
            time.sleep(pause)
        end = start + day_real
        cpu = (self.worker_cpu_s() - cpu_before) / max(1e-9, time.monotonic() - cpu_started)
        runs_after = self.worker_runs()
        lines = [line for worker, before in zip(self.stack.worker_processes, lines_before)
                 for line in worker.lines[before:]]
        violations = sum(len(world.violations(account)) for account in self.accounts()) - violations_before
        last_change = max((event.scheduled for _, _, event, _ in made if event is not None), default=start)
        self.tail(last_change)
        # The quiet stretch starts once the poller has nothing left to do about the day (its
        # second looks at stamps no run recorded come STAMP_SETTLE_S of real time later).
        self.settle(last_change)
        quiet_start = world.now()
        time.sleep(SCALE_QUIET_S * scale)
        quiet_end = world.now()

        partner = self.log_entries(start, end, ["partner"])
        total = len(self.log_entries(start, end))
        exchanges = self.tap.exchanges(start)
        partner_day = [e for e in exchanges if e.account == "partner" and e.started <= end]
        partner_polls = [e.started for e in partner_day if is_poll(e)]
        figures.partner_requests_by_kind = dict(Counter(request_kind(e) for e in partner_day).most_common())
        changes = len(made)
        figures.changes = changes
        figures.changes_by_kind = dict(sorted(Counter(kind for _, kind, _, _ in made).items()))
        figures.dropped = sum(1 for change, _, _, _ in made if change.dropped)
        figures.dropped_by_kind = dict(sorted(Counter(kind for change, kind, _, _ in made if change.dropped).items()))
        figures.partner_requests_per_day = len(partner)
        figures.partner_poll_requests_per_day = len(partner_polls)
        figures.requests_per_change = round(total / changes, 3) if changes else None
        figures.partner_requests_per_change = round(len(partner) / changes, 3) if changes else None
        figures.client_requests_per_day = round((total - len(partner)) / self.links, 1)
        figures.quota_share = round(len(partner) / PLAN_QUOTA, 4)
        cycles = poll_cycles(partner_polls, self.poller.cycle_gap_s)
        gaps = [b[0] - a[0] for a, b in itertools.pairwise(cycles)]
        figures.partner_poll_period_s = round(statistics.median(gaps) / scale, 1) if gaps else None
        quiet = quiet_per_day([entry["t"] for entry in self.log_entries(quiet_start, quiet_end, ["partner"])],
                              self.poller.cycle_gap_s, scale)
        figures.partner_overhead_quiet_per_day = _round(quiet, 1)

        writes: dict[str, list[Write]] = defaultdict(list)
        for exchange in exchanges:
            if exchange.is_write and exchange.status in (200, 201, 202):
                writes[exchange.account].append(Write(exchange.done, carried(exchange.body.decode("utf-8", "replace"))))
        drift: list[float] = []
        synced: list[float] = []
        by_account: dict[str, list[tuple[PlannedChange, Event]]] = defaultdict(list)
        for change, _, event, other in made:
            if event is not None:
                by_account[other].append((change, event))
        for account, timed in by_account.items():
            found = latencies([event for _, event in timed], writes[account])
            for (change, _), seconds in zip(timed, found):
                simulated = math.inf if seconds is None else seconds / scale
                (drift if change.dropped else synced).append(simulated)
        figures.drift_timed = len(drift)
        figures.drift_unrepaired = sum(1 for seconds in drift if math.isinf(seconds))
        figures.drift_repair_p50_s = _finite(percentile(drift, 0.5))
        figures.drift_repair_p99_s = _finite(percentile(drift, 0.99))
        if figures.drift_repair_p99_s is not None:
            figures.drift_repair_p99_real_s = round(figures.drift_repair_p99_s * scale, 2)
        figures.sync_latency_p50_s = _finite(percentile(synced, 0.5))
        figures.sync_latency_p99_s = _finite(percentile(synced, 0.99))

        executions, finished = worker_counts(lines)
        sync_jobs = sum(count for name, count in executions.items() if name.startswith(SYNC_JOB_PREFIX))
        runs = (runs_after - runs_before) if runs_after is not None and runs_before is not None else None
        figures.celery_executions = dict(executions)
        figures.celery_runs_per_sync = round(sync_jobs / finished, 3) if finished else None
        figures.runs_per_sync = (round(sum(runs.values()) / runs["done"], 3)
                                 if runs is not None and runs.get("done") else None)
        figures.worker_cpu_while_waiting = round(cpu, 3)
        figures.limiter_violations = violations
        self.log(f"scale, {self.links} links: {asdict(figures)}")
        return figures

    def make_scale_change(self, change: PlannedChange, pairs: Sequence[Sequence[tuple[int, int]]],
                          specs: Mapping[str, list[dict[str, Any]]],
                          streams: dict[tuple[int, int, str], tuple[int, int]]) -> tuple[PlannedChange, str, Event | None, str]:
        """Make CHANGE as a person on its side would; a dropped one with its account's scenarios
        off meanwhile (only this thread makes people's changes, and the sync's own writes start
        no scenario, so no other delivery is lost). An edit writes the next mark of its task
        side's stream (a later edit carries an earlier one), a comment one of its own; a status
        move carries none (a task with no move left is edited instead). Returns (CHANGE, the kind
        made, its event or None, the account the write carrying it goes to)."""
        world = self.stack.world
        link = self.stack.config.links[change.link]
        client_number, partner_number = pairs[change.link][change.task]
        account, number = (("partner", partner_number) if change.side == "partner"
                           else (client_account(change.link), client_number))
        other = client_account(change.link) if change.side == "partner" else "partner"
        author = self.person(change.side)
        kind, status = change.kind, None
        if kind == "status":
            with world.lock:
                current = world.account(account).tasks[number]["status"]
            status = next_status(change.side, current, link.statuses.transitions.get(change.side))
            kind = kind if status is not None else "edit"
        if kind == "edit":
            stream, seq = streams.get((change.link, change.task, change.side), (self.next_stream(), -1))
            seq += 1
            streams[(change.link, change.task, change.side)] = (stream, seq)
        else:
            stream, seq = self.next_stream(), 0
        if change.dropped:
            world.set_scenarios(account, [])
        try:
            at = world.now()
            if kind == "edit":
                owned = "name" if change.side == "partner" else "description"
                world.update_task(account, number, {owned: f"{event_token(stream, seq)} edited"}, author=author)
            elif kind == "status":
                world.update_task(account, number, {"status": {"id": status}}, author=author)
            else:
                world.add_comment(account, number, {"description": f"{event_token(stream, seq)} comment"},
                                  author=author)
        finally:
            if change.dropped:
                world.set_scenarios(account, specs[account])
        return change, kind, (Event(stream, seq, at) if kind != "status" else None), other


def quiet_overhead(plan: BenchPlan, links: int, workdir: Path, log: Callable[[str], None]) -> float | None:
    """The partner account's requests a day while nothing changes, with LINKS links sharing it
    and the poller at its default settings: whole poll cycles after WARM_UP_CYCLES."""
    bench = Bench(plan, workdir, log, links=links)
    try:
        bench.start(workers=1, beat=True)
        bench.wait_set_up()
        since = bench.stack.world.now()
        bench.wait_poll_cycles(WARM_UP_CYCLES + QUIET_CYCLES, since)
        gap = bench.poller.cycle_gap_s
        times = [entry["t"] for entry in bench.log_entries(since, accounts=["partner"])]
        cycles = poll_cycles(times, gap)
        if len(cycles) <= WARM_UP_CYCLES:
            return None
        counted = [at for at in times if at >= cycles[WARM_UP_CYCLES][0]]
        found = quiet_per_day(counted, gap, bench.poller.scale)
        log(f"quiet, {links} links: {found} partner requests a day ({len(counted)} in "
            f"{len(cycles) - WARM_UP_CYCLES} poll cycles)")
        return round(found, 1) if found is not None else None
    finally:
        bench.stop()


class QuietProbes:
    """quiet_overhead for each of the plan's link counts, side by side in the background (they
    wait for polls, and barely use the CPU)."""

    def __init__(self, plan: BenchPlan, workdir: Path, log: Callable[[str], None]):
        self.results: dict[str, float | None] = {str(links): None for links in plan.quiet_links}
        self.errors: list[str] = []
        self._threads = [threading.Thread(target=self._probe, args=(plan, links, workdir / f"quiet{links}", log),
                                          daemon=True) for links in plan.quiet_links]

    def _probe(self, plan: BenchPlan, links: int, workdir: Path, log: Callable[[str], None]) -> None:
        try:
            self.results[str(links)] = quiet_overhead(plan, links, workdir, log)
        except Exception as exc:  # noqa: BLE001 - reported as a figure not measured
            self.errors.append(f"quiet overhead with {links} links: {exc}")
            log(self.errors[-1])

    def start(self) -> "QuietProbes":
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> dict[str, float | None]:
        for thread in self._threads:
            thread.join()
        return self.results


def scale_day_s(links: int) -> float:
    """Real seconds the scale phase's simulated day lasts for LINKS links (SCALE_DAY_MIN_S, SCALE_DAY_S_PER_LINK)."""
    return max(SCALE_DAY_MIN_S, links * SCALE_DAY_S_PER_LINK)


def run_scale(plan: BenchPlan, links: int, workdir: Path, log: Callable[[str], None],
              day_real_s: float | None = None) -> ScaleFigures:
    """The scale phase's day for LINKS links on a stack of its own (module docstring): their
    task pairs made and settled, then the day; DAY_REAL_S: how long the day lasts (scale_day_s)."""
    scale = (day_real_s or scale_day_s(links)) / DAY_S
    bench = Bench(plan, workdir, log, links=links, time_scale=scale)
    bench.sync_work_only = True
    try:
        bench.start(workers=SCALE_WORKERS, beat=True, time_scale=scale)
        bench.wait_set_up()
        since = bench.stack.world.now()
        pairs = bench.create_pairs([(link, SCALE_TASKS_PER_LINK) for link in range(links)])
        made = bench.stack.world.now()
        bench.settle(since)
        # The poller's second looks at the set-up's stamps come STAMP_SETTLE_S of real time after
        # them, minutes of the shrunk day after a settle that a short period makes quick.
        pause = made + STAMP_SETTLE_S - bench.stack.world.now()
        if pause > 0:
            time.sleep(pause)
            bench.settle(since)
        return bench.scale_day(day_plan(links, plan.scale_seed), pairs)
    finally:
        bench.stop()


def scale_capacity(days: Sequence[ScaleFigures]) -> dict[str, Any]:
    """What a PLAN_QUOTA plan serves at the days' traffic (capacity): from the partner's requests a
    day by links, a line through them; from one day alone, its quiet overhead as the fixed part."""
    measured = {day.links: float(day.partner_requests_per_day) for day in days
                if day.partner_requests_per_day is not None}
    fewest = min((day for day in days if day.links in measured), key=lambda day: day.links, default=None)
    found = capacity(measured, fixed_per_day=fewest.partner_overhead_quiet_per_day if fewest else None)
    if found is None:
        return {}
    return {"quota": PLAN_QUOTA, "spare": SPARE_SHARE, "from_links": sorted(measured),
            "how": "least-squares line over the link counts" if len(measured) > 1
            else "quiet overhead fixed, the rest per link",
            "fixed_per_day": round(found.fixed_per_day, 1), "per_link_per_day": round(found.per_link_per_day, 2),
            "max_links": found.max_links}


def run_pipeline(plan: BenchPlan, workdir: Path, log: Callable[[str], None], report: BenchReport) -> None:
    bench = Bench(plan, workdir, log)
    try:
        bench.start(workers=max(plan.worker_counts), beat=False)
        pairs = bench.create_pairs([(0, plan.pipeline_tasks)])[0]
        for workers in plan.worker_counts:
            report.pipeline.append(bench.pipeline(pairs, workers))
    finally:
        bench.stop()


def run_bench(plan: BenchPlan, mode: str, workdir: Path | None = None,
              log: Callable[[str], None] = lambda _: None) -> BenchReport:
    """Every phase (module docstring). The full run measures the pipeline alone first (the
    machine's capacity); the quick run measures it while the deployments' poller settles after
    their set-up (at least STAMP_SETTLE_S of real time), or it would not fit in CI's minutes.
    The economy stack (the poller's day, shrunk in a quick run) and the stack at Planfix's real
    limits (fairness, then bursts) then run side by side (their figures are counts and turns, not
    speed), the idle phase last and alone."""
    import platform
    from concurrent.futures import ThreadPoolExecutor

    workdir = workdir or Path(tempfile.mkdtemp(prefix="crosslink-bench-"))
    started = time.monotonic()
    report = BenchReport(mode=mode, date=time.strftime("%Y-%m-%d"),
                         machine={"cores": os.cpu_count(), "python": platform.python_version(),
                                  "platform": platform.platform()},
                         workers=max(plan.worker_counts), time_scale=plan.time_scale)
    stacks: list[Bench] = []
    quiet: QuietProbes | None = None
    try:
        if plan.pipeline_first:
            run_pipeline(plan, workdir / "pipeline", log, report)
        quiet = QuietProbes(plan, workdir, log).start()
        economy = Bench(plan, workdir / "economy", log, links=1)
        backlog = Bench(plan, workdir / "fairness", log, links=plan.fair_links + 1)
        stacks += [economy, backlog]
        economy.start(workers=max(plan.worker_counts), beat=True, time_scale=plan.time_scale)
        backlog.start(workers=max(plan.worker_counts), beat=True)
        economy_work, backlog_work = economy.prepare_economy(), backlog.prepare_backlog()
        since = {id(bench): bench.stack.world.now() for bench in stacks}
        if not plan.pipeline_first:
            run_pipeline(plan, workdir / "pipeline", log, report)

        def economy_phase() -> None:
            try:
                economy.settle(since[id(economy)])
                economy.economy(economy_work, report)
            finally:
                economy.stop()

        def real_limit_phases() -> None:
            backlog.settle(since[id(backlog)])
            backlog.real_day()
            backlog.fairness(backlog_work, report)
            backlog.bursts(backlog_work, report)

        with ThreadPoolExecutor(max_workers=2) as pool:
            for done in [pool.submit(economy_phase), pool.submit(real_limit_phases)]:
                done.result()
        report.quiet_per_day_by_links = quiet.join()  # their stacks would disturb the latencies
        backlog.idle(backlog_work, report)
        backlog.stop()
        for links in plan.scale_links:  # alone: a day of many links keeps both cores busy
            try:
                report.scale.append(run_scale(plan, links, workdir / f"scale{links}", log))
            except Exception as exc:  # noqa: BLE001 - reported as a day not measured, the others go on
                log(f"scale phase with {links} links: {exc!r}")
        report.scale_capacity = scale_capacity(report.scale)
    finally:
        for bench in stacks:
            bench.stop()
        if quiet is not None:
            report.quiet_per_day_by_links = quiet.join()
        report.seconds = round(time.monotonic() - started, 1)
    return report
