"""Starting Crosslink's own processes: the producer, Celery workers and Flower.

`crosslink run` uses it for real accounts; the demo and the end-to-end tests use the same code
so that what they prove is what production runs: the producer as a uvicorn server and each
worker as a separate `celery worker` OS process. Every one logs through crosslink.base.logs (JSON
lines when CROSSLINK_LOG_JSON is on): uvicorn gets no log setup of its own, and Flower's tornado
none either.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import uvicorn
from dotenv import dotenv_values

from crosslink.base.settings import get_settings
from crosslink.lab.embedded_redis import free_port
from crosslink.queue.names import SYNC_QUEUE
from producers.receiver import create_app
from schemas.links import load_links
from workers.app import app

# Flower's tasks page: a job's label (crosslink.queue.names.job_label: link, side, task) is its
# args column, and what a job did (a batch job's tasks) its result column; Flower's own default
# shows neither. The job's id comes last: it is long, and the name links to the job's page anyway.
FLOWER_COLUMNS = "name,state,args,result,received,started,runtime,worker,uuid"

# A worker that has not said "ready" by then did not start (imports, Redis unreachable).
WORKER_START_TIMEOUT_S = 60.0
PRODUCER_START_TIMEOUT_S = 15.0


@dataclass
class WorkerProcess:
    """One `celery worker` OS process; its log lines go to `on_line` (and are kept). With
    METRICS_PORT its main process serves /metrics there (on loopback)."""

    env: Mapping[str, str]
    concurrency: int = 2
    name: str = "w1"
    on_line: Callable[[str], None] | None = None
    metrics_port: int | None = None
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None
    _ready: threading.Event = field(default_factory=threading.Event)

    def start(self) -> "WorkerProcess":
        args = [sys.executable, "-m", "celery", "-A", "workers.app", "worker", "-Q", SYNC_QUEUE,
                "-c", str(self.concurrency), "--pool", "prefork", "-n", f"{self.name}@%h",
                "--without-gossip", "--without-mingle", "--loglevel", "INFO"]
        self._ready.clear()
        env = {**os.environ, **self.env}
        if self.metrics_port is not None:
            env.update(CROSSLINK_WORKER_METRICS_HOST="127.0.0.1",
                       CROSSLINK_WORKER_METRICS_PORT=str(self.metrics_port))
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, bufsize=1, start_new_session=True,
        )
        threading.Thread(target=self._pump, daemon=True).start()
        try:
            ready = self._ready.wait(WORKER_START_TIMEOUT_S)
        except BaseException:  # interrupted (SIGTERM, Ctrl-C): the worker must not outlive it
            self.stop()
            raise
        if not ready:
            self.stop()
            raise RuntimeError("celery worker did not become ready:\n" + "\n".join(self.lines[-30:]))
        return self

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def _pump(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        for line in self.process.stdout:
            line = line.rstrip("\n")
            self.lines.append(line)
            if " ready." in line:
                self._ready.set()
            if self.on_line:
                self.on_line(line)

    def kill(self) -> None:
        """SIGKILL the whole worker (main process and pool children), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()


@dataclass
class ProducerServer:
    """The producer app served by uvicorn in a background thread of this process."""

    app: object
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ProducerServer":
        # log_config=None: uvicorn's lines go through this process's own log setup.
        config = uvicorn.Config(self.app, host=self.host, port=self.port, log_level="warning",
                                lifespan="on", log_config=None)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + PRODUCER_START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                time.sleep(0.05)
        raise RuntimeError(f"producer did not start on {self.url}")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


@dataclass
class ProducerProcess:
    """`crosslink producer` as an OS process of its own, as production runs it (the benchmark's
    producer must not share a Python interpreter, and its GIL, with the load it measures)."""

    env: Mapping[str, str]
    host: str = "127.0.0.1"
    port: int = field(default_factory=free_port)
    process: subprocess.Popen | None = None
    # Where its stdout and stderr go (None: nowhere).
    log_path: Path | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self) -> "ProducerProcess":
        output = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "crosslink.cli", "producer", "--host", self.host, "--port", str(self.port)],
                env={**os.environ, **self.env}, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True)
        finally:
            if self.log_path:
                output.close()
        deadline = time.monotonic() + PRODUCER_START_TIMEOUT_S
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                        return self
                except httpx.HTTPError:
                    time.sleep(0.05)
        except BaseException:  # interrupted: the producer must not outlive it
            self.stop()
            raise
        self.stop()
        raise RuntimeError(f"producer process did not start on {self.url}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def run_services(links_path: str, concurrency: int) -> int:
    """`crosslink run`: producer, one worker and the beat (the poller's and the daily anchor's
    schedule) as child processes until interrupted (a second `run` elsewhere is harmless: polls
    take turns). The settings in ./.env count as compose counts them: the environment wins."""
    dotenv = {key: value for key, value in dotenv_values(".env").items() if value is not None}
    env = {**dotenv, **os.environ, "CROSSLINK_LINKS": str(Path(links_path).resolve())}
    children = [
        subprocess.Popen([sys.executable, "-m", "crosslink.cli", "producer"], env=env),
        subprocess.Popen([sys.executable, "-m", "crosslink.cli", "worker", "-c", str(concurrency)], env=env),
        subprocess.Popen([sys.executable, "-m", "crosslink.cli", "beat"], env=env),
    ]
    try:
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(timeout=20)
            except subprocess.TimeoutExpired:
                child.kill()
    return max((child.returncode or 0) for child in children)


def serve_producer(links_path: str | None = None, host: str | None = None, port: int | None = None) -> None:
    """Serve the webhook receiver in this process until stopped (`crosslink producer`): the links
    file, host and port default to the settings'."""
    settings = get_settings()
    app = create_app(load_links(links_path or settings.links_path), settings.redis_url, os.environ)
    # log_config=None: uvicorn's error lines go through ours (JSON when JSON logs are on), not
    # through a text format of its own.
    uvicorn.run(app, host=host or settings.producer_host, port=port or settings.producer_port,
                log_level="warning", log_config=None)


def run_flower(port: int, address: str, flower_args: list[str]) -> None:
    """`crosslink flower`: Flower on the workers' task events, until stopped, its tasks page
    showing each job's link, side and task (FLOWER_COLUMNS) and its lines logged through ours
    (--logging=none keeps tornado's text format off). FLOWER_ARGS (any of Flower's options)
    come last, so they win."""
    app.start(["flower", f"--port={port}", f"--address={address}", f"--tasks_columns={FLOWER_COLUMNS}",
               "--logging=none", *flower_args])
