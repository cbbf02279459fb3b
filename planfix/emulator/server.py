"""Serving the emulator over real loopback HTTP, for end-to-end tests, the demo and the CLI.

Unit tests drive the app in-process; anything that must cross a socket (the sync's HTTP client,
Celery workers in other processes, the scenario deliveries hitting the producer) needs a real
server. EmulatorServer runs uvicorn in a background thread on a free port and returns only once
it accepts connections.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import uvicorn

from planfix.emulator.app import create_app
from planfix.emulator.world import World

log = logging.getLogger(__name__)

# How long start() waits for uvicorn to accept connections before giving up.
STARTUP_TIMEOUT_S = 10.0
# How long stop() lets in-flight requests (a held "timeout" fault, say) finish before forcing exit.
GRACEFUL_STOP_S = 2.0


class EmulatorServer:
    """uvicorn serving WORLD on HOST:PORT (a free port when PORT is None) in a daemon thread.
    WRAP, when given, wraps the emulator's ASGI app (a test watching the wire)."""

    def __init__(self, world: World, host: str = "127.0.0.1", port: int | None = None,
                 wrap: Callable[[Any], Any] | None = None) -> None:
        self.world = world
        self.wrap = wrap
        self.host = host
        self._requested_port = port
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the emulator server is not started")
        return f"http://{self.host}:{self.port}"

    def base_url(self, account: str) -> str:
        """The REST base URL for ACCOUNT, as a client's base_url."""
        return f"{self.url}/{account}/rest"

    def start(self) -> "EmulatorServer":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted connections inherit this on Linux. Without it uvicorn's separate writes of
        # headers and body meet the client's delayed ACK: every answer took 40 ms more.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self.host, self._requested_port or 0))
        self.port = sock.getsockname()[1]
        app = create_app(self.world)
        config = uvicorn.Config(self.wrap(app) if self.wrap else app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=GRACEFUL_STOP_S)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._serve, args=(sock,), name=f"emulator-server-{self.port}",
                                        daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the emulator did not start on {self.host}:{self.port}")
            time.sleep(0.01)
        return self

    def _serve(self, sock: socket.socket) -> None:
        # uvicorn's own choice of loop (uvloop where installed), as `crosslink emulator` runs:
        # a third of the asyncio loop's CPU per request.
        assert self._server is not None
        with asyncio.Runner(loop_factory=self._server.config.get_loop_factory()) as runner:
            runner.run(self._server.serve(sockets=[sock]))

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(GRACEFUL_STOP_S + 1)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(GRACEFUL_STOP_S)
        self._server = self._thread = None

    def __enter__(self) -> "EmulatorServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def serve(config_path: str | Path, host: str = "127.0.0.1", port: int = 8100) -> None:
    """Run the emulator seeded from CONFIG_PATH until interrupted (`crosslink emulator`)."""
    world = World.from_yaml(config_path)
    log.info("Planfix emulator on http://%s:%s, accounts: %s", host, port, ", ".join(world.accounts))
    try:
        uvicorn.run(create_app(world), host=host, port=port, log_level="warning")
    finally:
        world.close()
