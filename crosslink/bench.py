"""`crosslink bench`: how fast Crosslink is, within Planfix's limits, measured on this machine.

Why a benchmark of the whole pipeline rather than of functions: what a partner feels is webhook
in to write done through the producer, Redis, Celery worker processes and the Planfix API, and
what Planfix allows is counted at Planfix's end. So every phase runs the real parts (the
producer over HTTP, an embedded Redis, `celery worker` OS processes, the emulator over HTTP) and
reads its figures from the emulator's request log, which is what Planfix would count.

Phases:
- pipeline (limits off): webhooks posted at a fixed rate for a while; the highest rate whose
  backlog drains at once (every event written within DRAIN_S of the last post) is kept, and
  the latency of each event is webhook post to the first write on its counterpart after it
  (reported for that rate's long run, and for every rate's probe). Beside it, the highest rate
  held for the long run with p99 under P99_TARGET_MS (the latency a partner is promised): a rate
  held only with a long queue is throughput, not speed, and the two are reported apart. A long
  run that fails is tried at the next lower candidate rate (SUSTAIN_ATTEMPTS in all).
  Run with 1 and 2 worker processes to show how it scales out.
- economy (limits off, real scenario deliveries): a mixed workload of new tasks, field edits,
  status moves, comments and reassignments, one change per task at a time; Planfix requests on
  every account divided by changes. Then bursts of edits to the same tasks.
- fairness (limits on: 1 request/s per account, as Planfix): many links share one partner
  account, each with a backlog of client-side edits, so every event costs the partner one write;
  limiter violations (requests the emulator refused for rate), the share of the allowed requests
  used while the backlog lasts, Jain's index over the links' throughput while all of them still
  had a backlog, and the longest lag of any link.
- idle (limits on): one change at a time on a quiet system, webhook in to write done.

Changes are made in the emulator's world directly (as a person in the UI would), and the
webhooks are posted by the bench where timing matters (pipeline, fairness, idle) or delivered
by the emulator's scenarios (economy), as Planfix would.
"""

from __future__ import annotations

import http.client
import json
import logging
import math
import tempfile
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable
from urllib.parse import urlsplit

import redis

from crosslink.chaos import CLIENT_PROJECT, build_configs, client_account, link_name, partner_project
from crosslink.embedded_redis import EmbeddedRedis
from crosslink.stack import LocalStack
from planfix.limiter import AccountLimiter
from producers.scenarios import hook_path, request_auth, scenarios_for_side

# Planfix's documented limit (API-NOTES section 1), for the limited phases.
PLANFIX_RATE_PER_S = 1.0
# The client person who makes the changes in the emulator's seed accounts (chaos.py uses the same).
CLIENT_PERSON = 5
CLIENT_PEOPLE = (5, 6)
CLIENT_PROCESS = 3
PARTNER_PROCESS = 1
PARTNER_PEOPLE = (2, 3, 4)
# Partner status moves: In work and Review in turn (the example link names no partner
# transitions), which map to one allowed client move each (12 <-> 13).
PARTNER_STATUS_CYCLE = {1: 2, 2: 3, 3: 2, 4: 2}
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
# A burst: this many edits to one task, this far apart (a person saving repeatedly).
BURST_EDITS = 10
BURST_GAP_S = 0.02
# Worker processes' prefork concurrency: slots wait on the network, not the CPU.
CONCURRENCY = 4
# Idle samples are this far apart, so the limiter has forgotten the previous one.
IDLE_GAP_S = 2.5
QUIET_TIMEOUT_S = 300.0


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
    idle_samples: int

    @classmethod
    def quick(cls) -> "BenchPlan":
        return cls(pipeline_rates=(50,), pipeline_probe_s=4.0, pipeline_sustain_s=4.0,
                   pipeline_tasks=40, worker_counts=(1, 2), economy_changes=48, bursts=4,
                   fair_links=4, fair_events_per_link=4, idle_samples=3)

    @classmethod
    def full(cls) -> "BenchPlan":
        return cls(pipeline_rates=(50, 100, 150, 200, 250, 300, 350, 400, 450, 500), pipeline_probe_s=10.0,
                   pipeline_sustain_s=60.0, pipeline_tasks=600, worker_counts=(1, 2),
                   economy_changes=120, bursts=20, fair_links=50, fair_events_per_link=4,
                   idle_samples=20)


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
class BenchReport:
    mode: str
    date: str
    machine: dict[str, Any]
    workers: int
    pipeline: list[PipelineFigures] = field(default_factory=list)
    api_calls_per_change: float | None = None
    # Planfix requests per change, by kind of change (economy phase).
    calls_by_kind: dict[str, float] = field(default_factory=dict)
    api_calls_per_event_burst: float | None = None
    limiter_violations: int | None = None
    limit_utilization: float | None = None
    fairness_jain: float | None = None
    max_link_lag_s: float | None = None
    fair_links: int = 0
    idle_latency_p50_s: float | None = None
    idle_latency_p99_s: float | None = None
    seconds: float = 0.0

    def headline(self) -> dict[str, Any]:
        best = fastest(self.pipeline)
        return {
            "pipeline_events_per_s": best.pipeline_events_per_s if best else None,
            "e2e_p50_ms": best.e2e_p50_ms if best else None,
            "e2e_p99_ms": best.e2e_p99_ms if best else None,
            "pipeline_workers": best.workers if best and best.pipeline_events_per_s else None,
            **self.target_headline(),
            "api_calls_per_change": self.api_calls_per_change,
            "api_calls_per_event_burst": self.api_calls_per_event_burst,
            "limiter_violations": self.limiter_violations,
            "limit_utilization": self.limit_utilization,
            "fairness_jain": self.fairness_jain,
            "max_link_lag_s": self.max_link_lag_s,
            "idle_latency_p50_s": self.idle_latency_p50_s,
            "idle_latency_p99_s": self.idle_latency_p99_s,
            "workers": self.workers,
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
        lines = [f"crosslink bench ({self.mode}, {self.seconds:.0f} s)"]
        for row in self.pipeline:
            tried = ", ".join(key + ("" if held else " (backlog grew)") for key, held in row.tried.items())
            lines.append(f"  pipeline, {row.workers} worker process(es): {row.pipeline_events_per_s:.0f} events/s, "
                         f"p50 {_fmt(row.e2e_p50_ms)} ms, p99 {_fmt(row.e2e_p99_ms)} ms "
                         f"(rates tried: {tried})")
            lines.append(f"    with p99 under {P99_TARGET_MS:.0f} ms: {row.target_events_per_s:.0f} events/s, "
                         f"p50 {_fmt(row.target_p50_ms)} ms, p99 {_fmt(row.target_p99_ms)} ms")
            lines.append("    p50/p99 ms by rate: " + ", ".join(
                f"{rate}/s {_fmt(p50)}/{_fmt(p99)}" for rate, (p50, p99) in row.latency_by_rate.items()))
        for key, value in self.headline().items():
            lines.append(f"  {key:28} {_fmt(value)}")
        return "\n".join(lines)

    def failures(self) -> list[str]:
        """What the CI gate refuses: any request over Planfix's limit, more than 2 calls a change."""
        problems = []
        if self.limiter_violations is None or self.limiter_violations > 0:
            problems.append(f"limiter_violations = {self.limiter_violations} (must be 0)")
        if self.api_calls_per_change is None or self.api_calls_per_change > 2.0:
            problems.append(f"api_calls_per_change = {self.api_calls_per_change} (must be at most 2.0)")
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


def _ms(seconds: float | None) -> float | None:
    return round(seconds * 1000, 1) if seconds is not None else None


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


class Bench:
    """One benchmark run: an embedded Redis, the stack, and the phases."""

    def __init__(self, plan: BenchPlan, workdir: Path, log: Callable[[str], None] = lambda _: None):
        self.plan = plan
        self.workdir = workdir
        self.log = log
        self.redis: EmbeddedRedis | None = None
        self.stack: LocalStack | None = None
        self.limiter: AccountLimiter | None = None
        # One keep-alive connection per sending thread: http.client costs a tenth of httpx's
        # CPU per request, and the sender shares this process with the emulator it measures.
        self._senders = threading.local()
        self.links = max(plan.fair_links, 1)

    # -- set-up -------------------------------------------------------------------------------
    def start(self, workers: int) -> None:
        emulator, links = build_configs(self.links)
        for account in emulator["accounts"].values():
            account["limits"] = {}
        self.redis = EmbeddedRedis().start()
        self.stack = LocalStack(emulator, links, redis_url=self.redis.url, workdir=self.workdir / "stack",
                                workers=workers, concurrency=CONCURRENCY, time_scale=1.0,
                                producer_process=True)
        self.stack.start()
        logging.getLogger("crosslink.producer").setLevel(logging.WARNING)
        self.limiter = AccountLimiter(redis.Redis.from_url(self.redis.url))
        self.set_limits(None)

    def set_workers(self, count: int) -> None:
        stack = self.stack
        assert stack is not None
        while len(stack.worker_processes) > count:
            stack.worker_processes.pop().stop()
        while len(stack.worker_processes) < count:
            stack.add_worker(f"bench{len(stack.worker_processes) + 1}")

    def accounts(self) -> list[str]:
        return ["partner"] + [client_account(i) for i in range(self.links)]

    def set_limits(self, rate_per_s: float | None) -> None:
        """Planfix's rate limit on (RATE_PER_S) or off (None), at the emulator and in our limiter.
        The daily quota is off throughout: a full run spends more than a day's 20,000 requests on
        some accounts, and the limiter would rightly hold every job until midnight."""
        assert self.stack is not None and self.stack.world is not None and self.limiter is not None
        for account in self.accounts():
            self.stack.world.set_limits(account, rate_per_s=rate_per_s)
            self.limiter.set_account_limits(account, rate_per_s=rate_per_s or 0, daily_quota=0)
            self.limiter.reset(account)

    def scenarios(self, on: bool) -> None:
        """Real scenario deliveries (each link side limited to its project) or none."""
        stack = self.stack
        assert stack is not None and stack.world is not None and stack.config is not None
        per_account: dict[str, list[dict[str, Any]]] = {account: [] for account in self.accounts()}
        if on:
            for link in stack.config.links:
                for side_name, side in link.sides.items():
                    project = side.scope.value if side.scope.kind == "project" else None
                    for spec in scenarios_for_side(stack.producer.url, link.name, side_name, side.webhook_auth,
                                                   stack.env[side.webhook_secret_env], side.integration_user):
                        per_account[side.account].append({**spec, "project": project} if project else spec)
        for account, specs in per_account.items():
            stack.world.set_scenarios(account, specs)

    def quiet(self) -> None:
        assert self.stack is not None
        if not self.stack.wait_quiet(QUIET_TIMEOUT_S):
            raise RuntimeError("the pipeline did not go quiet")

    def mirrored_client_tasks(self, link: int, count: int) -> list[tuple[int, int]]:
        """COUNT client tasks of LINK mirrored on the partner: [(client number, partner number)].
        Scenarios are on afterwards."""
        self.scenarios(True)
        world = self.stack.world
        numbers = [world.create_task(client_account(link), {
            "name": f"Bench task {link + 1}.{i}", "processId": CLIENT_PROCESS, "project": {"id": CLIENT_PROJECT},
            "assignees": {"users": [{"id": f"user:{CLIENT_PERSON}"}]}}, author=CLIENT_PERSON)
            for i in range(count)]
        self.quiet()
        pairs = []
        for number in numbers:
            mirror = self.stack.mirror_of(link_name(link), "client", number)
            if mirror is None:
                raise RuntimeError(f"client task {number} of link {link + 1} was not mirrored")
            pairs.append((number, int(mirror["id"])))
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

    def writes(self, account: str, number: int, since: float) -> list[float]:
        return [entry["t"] for entry in self.stack.world.requests(account)
                if entry["method"] == "POST" and entry["path"] == f"/task/{number}"
                and entry["status"] == 200 and entry["t"] >= since]

    def request_count(self) -> int:
        return sum(len(self.stack.world.requests(account)) for account in self.accounts())

    # -- phases -------------------------------------------------------------------------------
    def pipeline(self, pairs: list[tuple[int, int]], workers: int) -> PipelineFigures:
        figures = PipelineFigures(workers=workers)
        self.set_workers(workers)
        self.scenarios(False)
        self.quiet()
        probes: dict[int, tuple[bool, float | None]] = {}
        seq = [0]
        warm_rate = self.plan.pipeline_rates[0]
        warmed, _ = self._offer(pairs, warm_rate, WARM_UP_S, seq)
        figures.tried[f"{warm_rate} for {WARM_UP_S:.0f} s (warm-up, not counted)"] = warmed
        for rate in self.plan.pipeline_rates:
            ok, latencies = self._offer(pairs, rate, self.plan.pipeline_probe_s, seq)
            figures.tried[str(rate)] = ok
            p99 = _ms(percentile(latencies, 0.99))
            figures.latency_by_rate[str(rate)] = [_ms(percentile(latencies, 0.5)), p99]
            probes[rate] = (ok, p99)
            self.log(f"pipeline {workers}w {rate}/s: {'held' if ok else 'backlog grew'}")
            if not ok:
                break
        best = self._sustain(pairs, sustain_order(probes), seq, figures, None)
        if best is not None:
            figures.pipeline_events_per_s, latencies = best
            figures.events = len(latencies)
            figures.e2e_p50_ms = _ms(percentile(latencies, 0.5))
            figures.e2e_p99_ms = _ms(percentile(latencies, 0.99))
        if best is not None and figures.e2e_p99_ms is not None and figures.e2e_p99_ms < P99_TARGET_MS:
            target: tuple[float, list[float]] | None = best
        else:
            # Below the rate just held (or failed) at length: it said what that rate does.
            ceiling = best[0] if best is not None else math.inf
            order = [rate for rate in sustain_order(probes, P99_TARGET_MS) if rate < ceiling]
            target = self._sustain(pairs, order, seq, figures, P99_TARGET_MS)
        if target is not None:
            figures.target_events_per_s, latencies = target
            figures.target_p50_ms = _ms(percentile(latencies, 0.5))
            figures.target_p99_ms = _ms(percentile(latencies, 0.99))
        return figures

    def _sustain(self, pairs: list[tuple[int, int]], order: list[int], seq: list[int], figures: PipelineFigures,
                 p99_under_ms: float | None) -> tuple[float, list[float]] | None:
        """Offer the rates of ORDER for the long run in turn (SUSTAIN_ATTEMPTS at most) until one
        is held (and, with P99_UNDER_MS, with its p99 under that); (rate, latencies) or None."""
        seconds = self.plan.pipeline_sustain_s
        for rate in order[:SUSTAIN_ATTEMPTS]:
            try:
                ok, latencies = self._offer(pairs, rate, seconds, seq)
            except RuntimeError as exc:  # did not drain: not sustained, said so in the figures
                self.log(f"pipeline {figures.workers}w {rate}/s for {seconds:.0f} s: {exc}")
                ok, latencies = False, []
            p99 = _ms(percentile(latencies, 0.99))
            if ok and p99_under_ms is not None and (p99 is None or p99 >= p99_under_ms):
                ok = False
                self.log(f"pipeline {figures.workers}w {rate}/s for {seconds:.0f} s: p99 {p99} ms")
            key = f"{rate} for {seconds:.0f} s" + (f" with p99 under {p99_under_ms:.0f} ms" if p99_under_ms else "")
            figures.tried[key] = ok
            if ok:
                return float(rate), latencies
        return None

    def _offer(self, pairs: list[tuple[int, int]], rate: int, seconds: float,
               seq: list[int]) -> tuple[bool, list[float]]:
        """Post RATE task edits a second for SECONDS, round-robin over PAIRS; (held, latencies)."""
        world = self.stack.world
        total = int(rate * seconds)
        sent: list[tuple[float, int]] = []
        lock = threading.Lock()
        started = time.monotonic()

        def sender(offset: int) -> None:
            for index in range(offset, total, SENDERS):
                due = started + index / rate
                pause = due - time.monotonic()
                if pause > 0:
                    time.sleep(pause)
                client_number, partner_number = pairs[index % len(pairs)]
                seq_no = seq[0] + index
                world.update_task(client_account(0), client_number, {"description": f"edit {seq_no}"},
                                  author=CLIENT_PERSON)
                at = self.post(0, "client", client_number)
                with lock:
                    sent.append((at, partner_number))

        threads = [threading.Thread(target=sender, args=(i,)) for i in range(SENDERS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        seq[0] += total
        first_post, last_post = min(at for at, _ in sent), max(at for at, _ in sent)
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
        latencies = []
        # One pass over the request log (a scan per task grows with the square of the run).
        by_task: dict[int, list[float]] = defaultdict(list)
        for entry in world.requests("partner"):
            if entry["method"] == "POST" and entry["status"] == 200 and entry["path"].startswith("/task/"):
                number = entry["path"][len("/task/"):]
                if number.isdigit():
                    by_task[int(number)].append(entry["t"])
        for at, partner_number in sent:
            done = next((t for t in by_task[partner_number] if t >= at), None)
            if done is None:
                held = False
                continue
            latencies.append(done - at)
            if done > last_post + DRAIN_S:
                held = False
        return held, latencies

    def economy(self) -> tuple[float, dict[str, float]]:
        """The standard mixed workload through real scenario deliveries, made on both sides in
        turn: new tasks, field edits, status moves, comments, reassignments within the joint
        team. One change at a time (each synced before the next), every change a real one; each
        side edits the field it owns (the link names the partner owner of names and the client
        of descriptions), and "contested" edits (of a field the other side owns, which the sync
        must check on the owner's side first) are counted apart. Returns requests per change of
        the standard workload, and per side and kind of change, contested edits included."""
        world = self.stack.world
        link = self.stack.config.links[1]
        tasks = {"client": [number for number, _ in self.mirrored_client_tasks(1, 6)]}
        tasks["partner"] = [mirror for _, mirror in self.mirrored_client_tasks(1, 6)]
        where = {"client": (client_account(1), CLIENT_PROCESS, CLIENT_PROJECT, CLIENT_PEOPLE),
                 "partner": ("partner", PARTNER_PROCESS, partner_project(1), PARTNER_PEOPLE)}
        kinds = ("create", "edit", "status", "comment", "reassign", "contested edit")
        owned = {"partner": "name", "client": "description"}
        done: dict[str, int] = defaultdict(int)
        spent: dict[str, int] = defaultdict(int)
        for index in range(self.plan.economy_changes):
            side = ("client", "partner")[index % 2]
            kind = kinds[(index // 2) % len(kinds)]
            account, process, project, people = where[side]
            number = tasks[side][(index // 2) % len(tasks[side])]
            author = people[0]
            with world.lock:
                task = world.account(account).tasks[number]
                status, assignees = task["status"], task["assignees"]
            at_start = self.request_count()
            if kind == "create":
                world.create_task(account, {"name": f"New bench task {index}", "processId": process,
                                            "project": {"id": project}}, author=author)
            elif kind == "edit":
                world.update_task(account, number, {owned[side]: f"edited {index}"}, author=author)
            elif kind == "contested edit":
                other_field = owned[link.other(side)]
                world.update_task(account, number, {other_field: f"edited {index}"}, author=author)
            elif kind == "status":
                allowed = (link.statuses.transitions.get(side) or {}).get(status)
                choices = sorted(allowed) if allowed is not None else [PARTNER_STATUS_CYCLE[status]]
                if not choices:
                    continue
                world.update_task(account, number, {"status": {"id": choices[0]}}, author=author)
            elif kind == "comment":
                world.add_comment(account, number, {"description": f"comment {index}"}, author=author)
            else:
                current = {str(person) for person in assignees["users"]}
                person = next(p for p in people if f"user:{p}" not in current)
                world.update_task(account, number, {"assignees": {"users": [{"id": f"user:{person}"}]}},
                                  author=author)
            self.quiet()
            key = f"{side} {kind}"
            done[key] += 1
            spent[key] += self.request_count() - at_start
        standard = [key for key in done if not key.endswith("contested edit")]
        per_kind = {key: round(spent[key] / done[key], 2) for key in sorted(done)}
        calls = sum(spent[key] for key in standard)
        return round(calls / max(1, sum(done[key] for key in standard)), 3), per_kind

    def bursts(self) -> float:
        """BURST_EDITS quick edits to each of a few tasks: requests per event."""
        self.scenarios(True)
        world = self.stack.world
        pairs = self.mirrored_client_tasks(2, self.plan.bursts)
        before = self.request_count()
        events = 0
        for number, _ in pairs:
            for edit in range(BURST_EDITS):
                world.update_task(client_account(2), number, {"description": f"burst {number}.{edit}"},
                                  author=CLIENT_PERSON)
                events += 1
                time.sleep(BURST_GAP_S)
        self.quiet()
        return round((self.request_count() - before) / max(1, events), 3)

    def fairness(self) -> dict[str, Any]:
        """Every link's backlog competes for the partner account's 1 request/s."""
        per_link = {link: self.mirrored_client_tasks(link, self.plan.fair_events_per_link)
                    for link in range(self.plan.fair_links)}
        self.scenarios(False)
        world = self.stack.world
        self.set_limits(PLANFIX_RATE_PER_S)
        violations_before = sum(len(world.violations(account)) for account in self.accounts())
        posted: dict[int, list[tuple[float, int]]] = defaultdict(list)
        for round_ in range(self.plan.fair_events_per_link):
            for link, pairs in per_link.items():
                client_number, partner_number = pairs[round_]
                world.update_task(client_account(link), client_number, {"description": f"fair {round_}"},
                                  author=CLIENT_PERSON)
                posted[link].append((self.post(link, "client", client_number), partner_number))
        start = min(at for events in posted.values() for at, _ in events)
        self.quiet()
        done: dict[int, list[float]] = {}
        lags = []
        for link, events in posted.items():
            finished = []
            for at, partner_number in events:
                write = next((t for t in self.writes("partner", partner_number, at)), None)
                if write is not None:
                    finished.append(write)
                    lags.append(write - at)
            done[link] = sorted(finished)
        end = max((times[-1] for times in done.values() if times), default=start)
        # Throughput while every link still had a backlog: up to the first link to finish.
        window_end = min((times[-1] for times in done.values() if times), default=end)
        shares = [sum(1 for t in times if t <= window_end) for times in done.values()]
        served = sorted(entry["t"] for entry in world.requests("partner")
                        if start <= entry["t"] <= end and not entry["over_limit"])
        violations = sum(len(world.violations(account)) for account in self.accounts()) - violations_before
        self.set_limits(None)
        complete = sum(len(times) for times in done.values())
        return {
            "limiter_violations": violations,
            # Each served request holds one slot of 1/rate: the backlog lasted from the first
            # slot's start to the last one's end.
            "limit_utilization": round(len(served) / ((served[-1] - start) * PLANFIX_RATE_PER_S + 1), 3)
            if served else None,
            "fairness_jain": round(jain([float(share) for share in shares]) or 0.0, 3),
            "max_link_lag_s": round(max(lags), 1) if lags else None,
            "complete": complete,
            "expected": self.plan.fair_links * self.plan.fair_events_per_link,
        }

    def idle(self) -> list[float]:
        """Single changes on a quiet system with the limits on: webhook in to write done."""
        pairs = self.mirrored_client_tasks(3 % self.links, self.plan.idle_samples)
        self.scenarios(False)
        world = self.stack.world
        self.set_limits(PLANFIX_RATE_PER_S)
        latencies = []
        for index, (client_number, partner_number) in enumerate(pairs):
            time.sleep(IDLE_GAP_S)
            world.update_task(client_account(3 % self.links), client_number, {"description": f"idle {index}"},
                              author=CLIENT_PERSON)
            at = self.post(3 % self.links, "client", client_number)
            self.quiet()
            write = next((t for t in self.writes("partner", partner_number, at)), None)
            if write is not None:
                latencies.append(write - at)
        self.set_limits(None)
        return latencies

    def stop(self) -> None:
        if self.stack is not None:
            self.stack.stop()
        if self.redis is not None:
            self.redis.cleanup()


def run_bench(plan: BenchPlan, mode: str, workdir: Path | None = None,
              log: Callable[[str], None] = lambda _: None) -> BenchReport:
    import os
    import platform

    workdir = workdir or Path(tempfile.mkdtemp(prefix="crosslink-bench-"))
    started = time.monotonic()
    report = BenchReport(mode=mode, date=time.strftime("%Y-%m-%d"),
                         machine={"cores": os.cpu_count(), "python": platform.python_version(),
                                  "platform": platform.platform()},
                         workers=max(plan.worker_counts))
    bench = Bench(plan, workdir, log)
    try:
        bench.start(workers=max(plan.worker_counts))
        pairs = bench.mirrored_client_tasks(0, plan.pipeline_tasks)
        for workers in plan.worker_counts:
            report.pipeline.append(bench.pipeline(pairs, workers))
        bench.set_workers(max(plan.worker_counts))
        report.api_calls_per_change, report.calls_by_kind = bench.economy()
        log(f"economy: {report.api_calls_per_change} calls per change {report.calls_by_kind}")
        report.api_calls_per_event_burst = bench.bursts()
        log(f"bursts: {report.api_calls_per_event_burst} calls per event")
        fair = bench.fairness()
        log(f"fairness: {fair}")
        report.limiter_violations = fair["limiter_violations"]
        report.limit_utilization = fair["limit_utilization"]
        report.fairness_jain = fair["fairness_jain"]
        report.max_link_lag_s = fair["max_link_lag_s"]
        report.fair_links = plan.fair_links
        idle = bench.idle()
        report.idle_latency_p50_s = round(percentile(idle, 0.5), 3) if idle else None
        report.idle_latency_p99_s = round(percentile(idle, 0.99), 3) if idle else None
    finally:
        bench.stop()
        report.seconds = round(time.monotonic() - started, 1)
    return report
