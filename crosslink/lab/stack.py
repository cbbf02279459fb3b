"""A whole Crosslink on this machine: the emulator, the producer and real Celery workers.

The demo, the end-to-end tests (and later the chaos suite and the benchmark) all need the same
thing, so it is built here once: an emulated Planfix with the given accounts, the links pointed at
it, each side's token and a fresh webhook secret in the environment (never in a file), the
scenarios each side needs pointed at the producer, and worker OS processes reading the same
links file and writing one journal, an SQLite file in the stack's folder.
"""

from __future__ import annotations

import copy
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis
import yaml

from crosslink.base.settings import Settings
from crosslink.journal.store import SQLITE_FILE, Journal
from crosslink.lab.embedded_redis import free_port
from crosslink.lab.services import ProducerProcess, ProducerServer, WorkerProcess
from crosslink.operations.backfill import BackfillReport, run_backfill
from crosslink.operations.journal import open_journal
from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.inspect import work_waiting
from planfix.client import PlanfixClient
from planfix.emulator.server import EmulatorServer
from planfix.emulator.world import World
from planfix.limiter import AccountLimiter
from producers.receiver import create_app
from producers.scenarios import scenarios_for_side
from schemas.links import Link, LinksConfig, load_links
from workers.state import parse_marker, record_source_id

# Flower imports the app and connects to Redis before it answers; a few seconds on this machine.
FLOWER_START_TIMEOUT_S = 30.0
# How often the quiet check looks, and how many looks in a row must find nothing to do.
QUIET_POLL_S = 0.2
QUIET_LOOKS = 3


def _stop_group(process: subprocess.Popen | None, timeout: float) -> None:
    """SIGTERM PROCESS's session (it was started in one of its own), SIGKILL once TIMEOUT passed."""
    if process is None or process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def without_record_tasks(tasks: list[dict[str, Any]], links: Iterable[Link], side: str) -> list[dict[str, Any]]:
    """TASKS (an account's dump) less the record tasks (workers.anchors) LINKS keep on SIDE: where
    the journal's heads are posted, not tasks of any link."""
    records = {record_source_id(link.name, side) for link in links}
    return [task for task in tasks if task.get("sourceObjectId") not in records]


def integration_token(emulator_config: dict[str, Any], account: str, user: str) -> str:
    """The seeded token that acts as USER ("user:N") in ACCOUNT."""
    user_id = int(user.split(":", 1)[1])
    for token in emulator_config["accounts"][account].get("tokens", []):
        if int(token["user"]) == user_id:
            return str(token["token"])
    raise ValueError(f"the emulator seed has no token for {user} in account {account!r}")


@dataclass
class LocalStack:
    emulator_config: dict[str, Any]
    links_config: dict[str, Any]
    redis_url: str
    workdir: Path
    workers: int = 1
    concurrency: int = 2
    time_scale: float = 0.01
    # The producer in an OS process of its own (the benchmark) rather than a thread of this one.
    producer_process: bool = False
    # Settings for every process of the stack beyond the ones it derives (CROSSLINK_* variables).
    extra_env: dict[str, str] = field(default_factory=dict)
    on_line: Callable[[str], None] | None = None
    world: World | None = None
    emulator: EmulatorServer | None = None
    producer: ProducerServer | ProducerProcess | None = None
    worker_processes: list[WorkerProcess] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    config: LinksConfig | None = None
    beat_process: subprocess.Popen | None = None
    flower_process: subprocess.Popen | None = None
    flower_port: int | None = None

    def start(self) -> "LocalStack":
        self.world = World.from_config(copy.deepcopy(self.emulator_config))
        self.emulator = EmulatorServer(self.world).start()
        links_doc = copy.deepcopy(self.links_config)
        env: dict[str, str] = {}
        for link in links_doc["links"]:
            for side_name, side in link["sides"].items():
                account = side.get("account", side_name)
                side["base_url"] = self.emulator.base_url(account)
                env[side["token_env"]] = integration_token(
                    self.emulator_config, account, side["integration_user"])
                env.setdefault(side["webhook_secret_env"], secrets.token_urlsafe(18))
        self.workdir.mkdir(parents=True, exist_ok=True)
        links_path = self.workdir / "links.yaml"
        links_path.write_text(yaml.safe_dump(links_doc, allow_unicode=True, sort_keys=False),
                              encoding="utf-8")
        self.config = load_links(links_path)
        rate = min((acc.get("limits") or {}).get("rate_per_s") or 1000.0
                   for acc in self.emulator_config["accounts"].values())
        self.env = {
            **env,
            "REDIS_URL": self.redis_url,
            "CROSSLINK_LINKS": str(links_path),
            # Its own journal, named even where it is the default: the workers inherit this
            # process's environment, and a stack must never append to a deployment's journal.
            "CROSSLINK_JOURNAL_URL": f"sqlite:///{self.workdir.resolve() / SQLITE_FILE}",
            "CROSSLINK_TIME_SCALE": str(self.time_scale),
            "CROSSLINK_RATE_PER_S": str(rate),
            "CROSSLINK_LOG_JSON": "1",
            **self.extra_env,
        }
        if self.producer_process:
            self.producer = ProducerProcess(self.env, log_path=self.workdir / "producer.log").start()
        else:
            self.producer = ProducerServer(create_app(self.config, self.redis_url, self.env)).start()
        self.point_scenarios_at(self.producer.url)
        for index in range(self.workers):
            self.add_worker(f"w{index + 1}")
        return self

    def point_scenarios_at(self, producer_url: str) -> None:
        """Give every account the scenarios of every link side it takes part in."""
        assert self.world is not None and self.config is not None
        per_account: dict[str, list[dict[str, Any]]] = {}
        for link in self.config.links:
            for side_name, side in link.sides.items():
                per_account.setdefault(side.account, []).extend(scenarios_for_side(
                    producer_url, link.name, side_name, side.webhook_auth,
                    self.env[side.webhook_secret_env], side.integration_user))
        for account, scenarios in per_account.items():
            self.world.set_scenarios(account, scenarios)

    def add_worker(self, name: str) -> WorkerProcess:
        # Each worker its own metrics port: several serve side by side on this machine.
        worker = WorkerProcess(env=self.env, concurrency=self.concurrency, name=name,
                               on_line=self.on_line, metrics_port=free_port()).start()
        self.worker_processes.append(worker)
        return worker

    def start_beat(self, period_s: float) -> subprocess.Popen:
        """Run `crosslink beat` ticking the reconciliation poller every PERIOD_S (its log goes
        to workdir/beat.log). The workers need nothing new: the tick carries the period."""
        assert not self.beat_process, "a beat is already running"
        log = open(self.workdir / "beat.log", "ab")
        self.beat_process = subprocess.Popen(
            [sys.executable, "-m", "crosslink.cli", "beat", "--schedule", str(self.workdir / "beat-schedule")],
            env={**os.environ, **self.env, "CROSSLINK_RECONCILE_PERIOD_S": str(period_s)},
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        return self.beat_process

    def stop_beat(self, timeout: float = 10.0) -> None:
        process, self.beat_process = self.beat_process, None
        _stop_group(process, timeout)

    def start_flower(self, port: int | None = None) -> str:
        """Run `crosslink flower` on PORT (a free one by default) on loopback, its log in
        workdir/flower.log; the URL of its tasks page once it answers. It turns the workers' task
        events on within seconds of starting (and of a worker's start): jobs before that show
        only in part."""
        assert not self.flower_process, "Flower is already running"
        self.flower_port = port or free_port()
        log = open(self.workdir / "flower.log", "ab")
        self.flower_process = subprocess.Popen(
            [sys.executable, "-m", "crosslink.cli", "flower", "--port", str(self.flower_port)],
            env={**os.environ, **self.env}, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        url = f"http://127.0.0.1:{self.flower_port}/tasks"
        deadline = time.monotonic() + FLOWER_START_TIMEOUT_S
        while time.monotonic() < deadline and self.flower_process.poll() is None:
            try:
                if httpx.get(url, timeout=1).status_code == 200:
                    return url
            except httpx.HTTPError:
                time.sleep(0.1)
        self.stop_flower()
        raise RuntimeError("Flower did not start:\n" + (self.workdir / "flower.log").read_text(errors="replace")[-2000:])

    def stop_flower(self, timeout: float = 10.0) -> None:
        process, self.flower_process = self.flower_process, None
        _stop_group(process, timeout)

    def backfill(self, link_name: str, max_items: int | None = None,
                 dry_run: bool = False) -> BackfillReport:
        """Match-then-link the tasks already in the link's scope, as `crosslink backfill` does
        (MAX_ITEMS stops it early, as an interruption would)."""
        assert self.config is not None and self.emulator is not None
        link = next(item for item in self.config.links if item.name == link_name)
        store = redis.Redis.from_url(self.redis_url)
        enqueuer = None if dry_run else Enqueuer(self.redis_url)
        rate = float(self.env["CROSSLINK_RATE_PER_S"])
        limiter = AccountLimiter(store, rate_per_s=rate)
        clients = {side: PlanfixClient(conf.base_url, conf.token(self.env), account=conf.account,
                                       limiter=limiter, sleep_on_limit=True, link=link.name)
                   for side, conf in link.sides.items()}
        try:
            return run_backfill(link, clients, store, enqueuer, dry_run=dry_run, max_items=max_items,
                                rate_per_s={conf.account: rate for conf in link.sides.values()})
        finally:
            for client in clients.values():
                client.close()
            if enqueuer is not None:
                enqueuer.close()
            store.close()

    # --- observing ----------------------------------------------------------------------
    def journal(self) -> Journal:
        """The journal the stack's workers write (the caller closes it)."""
        return open_journal(settings=Settings.from_env(self.env))

    def busy(self) -> bool:
        """Anything still to do: scenario requests in flight, jobs queued, waiting or running."""
        assert self.world is not None
        client = redis.Redis.from_url(self.redis_url)
        try:
            waiting = work_waiting(client)
        finally:
            client.close()
        return waiting or not self.world.wait_deliveries_idle(0)

    def wait_quiet(self, timeout: float = 120.0) -> bool:
        """Wait until nothing is in flight for a few looks in a row; False on timeout."""
        deadline = time.monotonic() + timeout
        calm = 0
        while time.monotonic() < deadline:
            calm = 0 if self.busy() else calm + 1
            if calm >= QUIET_LOOKS:
                return True
            time.sleep(QUIET_POLL_S)
        return False

    def dumps(self, link_name: str) -> dict[str, list[dict[str, Any]]]:
        """Both sides' tasks with comments, straight from the emulator (not via the sync)."""
        assert self.world is not None and self.config is not None
        link = next(item for item in self.config.links if item.name == link_name)
        return {side: without_record_tasks(self.world.dump_tasks(conf.account), self.config.links, side)
                for side, conf in link.sides.items()}

    def mirror_of(self, link_name: str, side: str, number: int) -> dict[str, Any] | None:
        """The other side's task whose marker names SIDE's task NUMBER, if exactly one exists."""
        assert self.config is not None
        link = next(item for item in self.config.links if item.name == link_name)
        found = [task for task in self.dumps(link_name)[link.other(side)]
                 if parse_marker(task.get("sourceDataVersion")) == (link_name, side, number)]
        return found[0] if len(found) == 1 else None

    def stop(self) -> None:
        self.stop_flower()
        self.stop_beat()
        for worker in self.worker_processes:
            worker.stop()
        self.worker_processes.clear()
        if self.producer is not None:
            self.producer.stop()
        if self.emulator is not None:
            self.emulator.stop()
        if self.world is not None:
            self.world.close()

    def __enter__(self) -> "LocalStack":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
