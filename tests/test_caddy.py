"""deploy/caddy/Caddyfile, the https profile's front door, checked by Caddy itself.

A Caddyfile error shows only when the container starts on the operator's server, and a route too
wide would publish the producer's /metrics to the internet without any error at all. So Caddy
validates the file with example values, and then runs it, on loopback and over plain HTTP, in
front of a stand-in producer: the webhook paths must reach it with their headers and body, and
nothing else may. Skipped, saying so, where no `caddy` binary is installed.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from crosslink.lab.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[1]
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
EXAMPLE_ENV = {"CROSSLINK_DOMAIN": "sync.example.com", "CROSSLINK_TLS_EMAIL": "ops@example.com"}
# Adapting and validating reads one file; starting listens on one port. Both take well under a
# second; this only stops a hang.
CADDY_TIMEOUT_S = 30
UPSTREAM = "producer:8080"

CADDY = shutil.which("caddy")
pytestmark = pytest.mark.skipif(CADDY is None, reason="no caddy binary on this machine (Debian: apt install "
                                                      "caddy): deploy/caddy/Caddyfile not validated")


def caddy(*args: str, env: dict[str, str], home: Path) -> subprocess.CompletedProcess:
    # Caddy keeps its state under XDG_DATA_HOME/XDG_CONFIG_HOME: a temporary folder, not ~.
    environment = {**os.environ, **env, "XDG_DATA_HOME": str(home / "data"), "XDG_CONFIG_HOME": str(home / "config")}
    return subprocess.run([CADDY, *args], capture_output=True, text=True, env=environment, timeout=CADDY_TIMEOUT_S)


def test_caddy_validates_the_caddyfile_with_example_values(tmp_path):
    result = caddy("validate", "--adapter", "caddyfile", "--config", str(CADDYFILE), env=EXAMPLE_ENV, home=tmp_path)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("missing", sorted(EXAMPLE_ENV))
def test_caddy_refuses_the_caddyfile_when_a_variable_is_empty(tmp_path, missing):
    """Left empty, the domain would make the site block a second global block, and the e-mail an
    `email` with no address: Caddy must refuse to start rather than serve something else."""
    env = {**EXAMPLE_ENV, missing: ""}
    result = caddy("validate", "--adapter", "caddyfile", "--config", str(CADDYFILE), env=env, home=tmp_path)
    assert result.returncode != 0


def test_the_domain_gets_an_automatic_certificate(tmp_path):
    """For a public name Caddy listens on 443 and manages the certificate itself: nothing in the
    file turns automatic HTTPS off or points it at a certificate of its own."""
    result = caddy("adapt", "--adapter", "caddyfile", "--config", str(CADDYFILE), env=EXAMPLE_ENV, home=tmp_path)
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    (server,) = config["apps"]["http"]["servers"].values()
    assert server["listen"] == [":443"]
    assert "automatic_https" not in server
    assert "sync.example.com" in result.stdout
    assert config["apps"].get("tls", {}).get("certificates") is None
    issuers = config["apps"]["tls"]["automation"]["policies"][0]["issuers"]
    assert {issuer.get("email") for issuer in issuers} == {"ops@example.com"}


# --- in front of a stand-in producer -------------------------------------------------------------

class StandIn(BaseHTTPRequestHandler):
    """Records what reaches the producer and answers 200 as it does."""

    seen: list[tuple[str, str, dict[str, str], bytes]] = []

    def _answer(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append((self.command, self.path, dict(self.headers), body))
        reply = b'{"result":"ok"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = _answer

    def log_message(self, *args: object) -> None:  # keep the test output clean
        pass


def wait_for_port(port: int, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + CADDY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"caddy exited: {process.stderr.read() if process.stderr else ''}")
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"caddy did not listen on {port}")


@pytest.fixture
def front(tmp_path):
    """The Caddyfile served over HTTP on a free loopback port, its upstream a stand-in producer.
    Returns (base URL, what reached the stand-in). Only the site address, the upstream and the
    admin endpoint (off, so parallel runs never clash on :2019) differ from the real file."""
    text = CADDYFILE.read_text(encoding="utf-8")
    assert text.count(UPSTREAM) == 1 and text.count("\n{\n") == 1
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), StandIn)
    StandIn.seen = []
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    config = tmp_path / "Caddyfile"
    config.write_text(text.replace(UPSTREAM, f"127.0.0.1:{upstream.server_port}")
                      .replace("\n{\n", "\n{\n\tadmin off\n", 1), encoding="utf-8")
    port = free_port()
    env = {**os.environ, **EXAMPLE_ENV, "CROSSLINK_DOMAIN": f"http://127.0.0.1:{port}",
           "XDG_DATA_HOME": str(tmp_path / "data"), "XDG_CONFIG_HOME": str(tmp_path / "config")}
    process = subprocess.Popen([CADDY, "run", "--adapter", "caddyfile", "--config", str(config)], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_port(port, process)
        yield f"http://127.0.0.1:{port}", StandIn.seen
    finally:
        process.terminate()
        try:
            process.wait(timeout=CADDY_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        upstream.shutdown()
        upstream.server_close()


def test_a_webhook_reaches_the_producer_as_planfix_sent_it(front):
    base, seen = front
    body = b'{"event": "task_changed", "task": "12", "account": "acme"}'
    answer = httpx.post(f"{base}/hooks/acme/partner", content=body,
                        headers={"X-Crosslink-Secret": "s3cret", "Content-Type": "application/json"})
    assert (answer.status_code, answer.text) == (200, '{"result":"ok"}')
    ((method, path, headers, received),) = seen
    assert (method, path, received) == ("POST", "/hooks/acme/partner", body)
    assert headers["X-Crosslink-Secret"] == "s3cret"
    basic = httpx.post(f"{base}/hooks/acme/client", content=body, auth=("planfix", "s3cret"))
    assert basic.status_code == 200 and seen[-1][2]["Authorization"].startswith("Basic ")


@pytest.mark.parametrize("path", ["/metrics", "/readyz", "/healthz", "/", "/hooks", "/hooks/../metrics",
                                  "/%2e%2e/metrics", "//metrics"])
def test_nothing_but_the_webhooks_reaches_the_producer(front, path):
    base, seen = front
    # http.client sends the path as written; httpx would tidy "/hooks/../metrics" first.
    connection = http.client.HTTPConnection(urlsplit(base).netloc, timeout=CADDY_TIMEOUT_S)
    try:
        connection.request("GET", path)
        status = connection.getresponse().status
    finally:
        connection.close()
    assert status == 404
    assert seen == [], f"{path} reached the producer as {seen[0][1]}"
