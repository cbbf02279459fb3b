"""planfix.http, the client under PlanfixClient, against real servers over loopback.

The main server is the standard library's, steered per test: it records what arrived on the wire
(request line, headers, body, which connection) and answers as told, slowly, with a redirect,
or by closing the connection. Bare sockets stand in for servers that refuse, never accept, or
accept and never answer, and a TLS server for one whose certificate nobody trusts. The
Planfix-shaped round trip (JSON, query strings, multipart uploads through the emulator) is in
tests/test_client.py and the spec conformance test.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from starlette.requests import Request

from planfix.http import ConnectFailed, ConnectionBroken, Http, TimedOut

SECRET = "tok-never-in-a-message-8c1f"


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[dict[str, Any]] = []
        # The server's end of each connection, by the client's port: a test closes one.
        self.connections: dict[int, socket.socket] = {}
        # What the next requests get: (status, headers, body, delay before answering).
        self.answer = (200, {"Content-Type": "application/json"}, b'{"ok": true}', 0.0)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Recorder

    def log_message(self, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.connections[self.client_address[1]] = self.connection

    def _serve(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.server.seen.append({"line": self.requestline, "headers": dict(self.headers.items()),
                                 "body": body, "peer": self.client_address[1]})
        status, headers, content, delay = self.server.answer
        if status == 0:  # hang up without an answer
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        time.sleep(delay)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        self.wfile.write(content)

    do_GET = do_POST = do_DELETE = _serve


@pytest.fixture
def server() -> Iterator[Recorder]:
    running = Recorder()
    thread = threading.Thread(target=running.serve_forever, daemon=True)
    thread.start()
    yield running
    running.shutdown()
    running.server_close()


def free_port() -> int:
    """A loopback port nothing listens on: a connect there is refused."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        return unused.getsockname()[1]


def test_json_body_query_and_headers_arrive_as_sent(server):
    with Http(timeout=5) as http:
        answer = http.request("POST", server.url + "/rest/task/7?x=1", headers={"Authorization": "Bearer t"},
                              params={"fields": "id,name", "skipped": None, "n": 3},
                              json={"name": "Задача «7»", "n": [1, 2]})
    assert answer.status_code == 200 and answer.json() == {"ok": True}
    assert answer.headers.get("content-type") == "application/json"  # any case
    seen = server.seen[0]
    assert seen["line"] == "POST /rest/task/7?x=1&fields=id%2Cname&n=3 HTTP/1.1"
    assert seen["headers"]["Authorization"] == "Bearer t"
    assert seen["headers"]["Content-Type"] == "application/json"
    assert seen["headers"]["User-Agent"] == "crosslink"
    assert json.loads(seen["body"].decode()) == {"name": "Задача «7»", "n": [1, 2]}


def test_a_post_without_a_body_says_so():
    # Planfix's load balancer refuses a POST with no Content-Length (411).
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        received: list[bytes] = []

        def answer_once() -> None:
            connection, _ = listener.accept()
            with connection:
                received.append(connection.recv(65536))
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")

        thread = threading.Thread(target=answer_once)
        thread.start()
        with Http(timeout=5) as http:
            assert http.request("POST", f"http://127.0.0.1:{port}/file/1/attach/task").status_code == 200
        thread.join()
    assert b"\r\ncontent-length: 0\r\n" in received[0].lower()


def test_an_upload_parses_as_form_data_with_awkward_names(server):
    with Http(timeout=5) as http:
        http.request("POST", server.url + "/rest/file/",
                     files={"file": ('отчёт "v2"\r\n.txt', b"\x00bytes\r\n--", "application/octet-stream")})
    seen = server.seen[0]

    async def parse() -> tuple[str | None, bytes, str | None, list[str]]:
        # As the emulator (Starlette, python-multipart) reads an upload.
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": seen["body"], "more_body": False}

        form = await Request({"type": "http", "method": "POST",
                              "headers": [(b"content-type", seen["headers"]["Content-Type"].encode())]},
                             receive).form()
        upload = form["file"]
        return upload.filename, await upload.read(), upload.content_type, list(form.keys())

    name, content, content_type, fields = asyncio.run(parse())
    assert fields == ["file"]
    assert name == "отчёт %22v2%22%0D%0A.txt"  # no header injection
    assert content == b"\x00bytes\r\n--"
    assert content_type == "application/octet-stream"


def test_a_url_query_survives_without_params(server):
    # A download link signs its query: it must arrive byte for byte, params or none.
    with Http(timeout=5) as http:
        http.request("GET", server.url + "/download?sig=a%2Fb&exp=1", params={})
        http.request("GET", server.url + "/download?sig=a%2Fb&exp=1")
    assert [seen["line"] for seen in server.seen] == ["GET /download?sig=a%2Fb&exp=1 HTTP/1.1"] * 2


def test_connections_are_kept_alive_and_shared_between_threads(server):
    # max_idle as many as the threads: httpcore 1.0.9 counts busy connections against it too
    # and closes idle ones beyond it (encode/httpcore PR #1000), so fewer would churn.
    with Http(timeout=5, max_idle=4) as http:
        for _ in range(5):
            http.request("GET", server.url + "/a")
        assert len({seen["peer"] for seen in server.seen}) == 1
        threads = [threading.Thread(target=lambda: [http.request("GET", server.url + "/b") for _ in range(10)])
                   for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    assert len(server.seen) == 45
    # At most one connection per thread at once, never one per request.
    assert len({seen["peer"] for seen in server.seen}) <= 5


def test_a_connection_the_server_closed_is_not_reused(server):
    with Http(timeout=5) as http:
        server.answer = (200, {"Connection": "close"}, b"{}", 0.0)
        http.request("GET", server.url + "/closing")
        server.answer = (200, {}, b"{}", 0.0)
        http.request("GET", server.url + "/next")
        first = server.seen[-1]["peer"]
        assert first != server.seen[0]["peer"]
        http.request("GET", server.url + "/kept")
        assert server.seen[-1]["peer"] == first
        # The server's keep-alive timeout: it closes the idle connection on its side.
        server.connections[first].shutdown(socket.SHUT_RDWR)
        time.sleep(0.2)
        assert http.request("GET", server.url + "/after").status_code == 200
    assert server.seen[-1]["peer"] != first
    assert len({seen["peer"] for seen in server.seen}) == 3


def test_redirects_come_back_unfollowed(server):
    server.answer = (302, {"Location": "http://elsewhere.example/file"}, b"", 0.0)
    with Http(timeout=5) as http:
        answer = http.request("GET", server.url + "/file/1/download", headers={"Authorization": f"Bearer {SECRET}"})
        with pytest.raises(ValueError):
            http.request("GET", server.url + "/x", follow_redirects=True)
    assert answer.status_code == 302 and answer.headers.get("location") == "http://elsewhere.example/file"
    assert len(server.seen) == 1


def assert_typed(raised: pytest.ExceptionInfo, cause: type[Exception]) -> None:
    """The error keeps httpx's as its cause, and neither message carries a header's secret."""
    assert isinstance(raised.value.__cause__, cause)
    assert "127.0.0.1" in str(raised.value)
    assert SECRET not in str(raised.value) and SECRET not in str(raised.value.__cause__)


AUTH = {"Authorization": f"Bearer {SECRET}"}


def test_a_refused_connection_sent_nothing():
    with Http(timeout=0.3) as http, pytest.raises(ConnectFailed) as raised:
        http.request("POST", f"http://127.0.0.1:{free_port()}/task/", json={"name": "x"}, headers=AUTH)
    assert_typed(raised, httpx.ConnectError)


def test_a_connect_that_times_out_sent_nothing():
    # A listener that never accepts: once its backlog is full, the kernel leaves further
    # connects unanswered (Linux drops their SYN), so they time out.
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        fillers: list[socket.socket] = []
        try:
            while len(fillers) < 64:
                filler = socket.socket()
                fillers.append(filler)
                filler.settimeout(0.2)
                try:
                    filler.connect(address)
                except TimeoutError:
                    break
            else:
                pytest.skip("this kernel answers every connect to a full backlog")
            started = time.monotonic()
            with Http(timeout=5, connect_timeout=0.3) as http, pytest.raises(ConnectFailed) as raised:
                http.request("POST", f"http://127.0.0.1:{address[1]}/task/", json={"name": "x"}, headers=AUTH)
            assert time.monotonic() - started < 3  # the connect timeout, not the read timeout
        finally:
            for filler in fillers:
                filler.close()
    assert_typed(raised, httpx.ConnectTimeout)


def test_a_server_that_reads_and_never_answers_times_out():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        received: list[bytes] = []
        done = threading.Event()

        def read_and_stay_silent() -> None:
            connection, _ = listener.accept()
            with connection:
                received.append(connection.recv(65536))
                done.wait(5)

        thread = threading.Thread(target=read_and_stay_silent)
        thread.start()
        try:
            with Http(timeout=0.3) as http, pytest.raises(TimedOut) as raised:
                http.request("POST", f"http://127.0.0.1:{port}/task/", json={"name": "silent"}, headers=AUTH)
        finally:
            done.set()
            thread.join()
    assert received and received[0].startswith(b"POST /task/ ")  # it was sent: maybe applied
    assert_typed(raised, httpx.ReadTimeout)


def test_failures_are_typed_by_what_the_caller_may_conclude(server):
    with Http(timeout=0.3) as http:
        server.answer = (200, {}, b"{}", 1.0)
        with pytest.raises(TimedOut) as raised:
            http.request("POST", server.url + "/task/", json={"name": "slow"}, headers=AUTH)
        assert_typed(raised, httpx.ReadTimeout)
        server.answer = (0, {}, b"", 0.0)
        with pytest.raises(ConnectionBroken) as raised:
            http.request("POST", server.url + "/task/", json={"name": "hung up"}, headers=AUTH)
        assert_typed(raised, httpx.RemoteProtocolError)
        assert json.loads(server.seen[-1]["body"]) == {"name": "hung up"}  # it arrived: maybe applied
        server.answer = (200, {}, b"{}", 0.0)
        assert http.request("GET", server.url + "/ping").status_code == 200  # the pool recovers
        with pytest.raises(ValueError):
            http.request("GET", "ftp://127.0.0.1/file")
    with pytest.raises(RuntimeError):
        http.request("GET", server.url + "/ping")


def test_a_server_that_answers_garbage_broke_the_connection():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def answer_garbage() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(65536)
                connection.sendall(b"not http at all\r\n\r\n")

        thread = threading.Thread(target=answer_garbage)
        thread.start()
        with Http(timeout=5) as http, pytest.raises(ConnectionBroken) as raised:
            http.request("GET", f"http://127.0.0.1:{port}/ping", headers=AUTH)
        thread.join()
    assert_typed(raised, httpx.RemoteProtocolError)


@pytest.fixture
def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no CA signed, and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    return cert, key


def test_certificates_are_checked(self_signed, monkeypatch):
    cert, key = self_signed
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    received: list[bytes] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]

        def serve_tls(count: int) -> None:
            for _ in range(count):
                connection, _ = listener.accept()
                with connection:
                    try:
                        with context.wrap_socket(connection, server_side=True) as tls:
                            received.append(tls.recv(65536))
                            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    except (ssl.SSLError, OSError):
                        pass  # the client walked out of the handshake

        thread = threading.Thread(target=serve_tls, args=(2,))
        thread.start()
        monkeypatch.delenv("SSL_CERT_FILE", raising=False)
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        with Http(timeout=5) as http, pytest.raises(ConnectFailed) as raised:
            http.request("POST", f"https://127.0.0.1:{port}/task/", json={"name": "x"}, headers=AUTH)
        assert received == []  # refused before a byte of the request
        assert_typed(raised, httpx.ConnectError)
        # The same server, once its certificate is trusted the way the environment says.
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))
        with Http(timeout=5) as http:
            assert http.request("GET", f"https://127.0.0.1:{port}/ping").status_code == 200
        thread.join()
    assert received[0].startswith(b"GET /ping ")


def test_a_plain_http_proxy_gets_the_absolute_url(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("http_proxy", raising=False)  # the lower-case name wins where both are set
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    with Http(timeout=5) as http:
        http.request("GET", "http://planfix.example:8080/rest/ping?a=b")
    assert server.seen[0]["line"] == "GET http://planfix.example:8080/rest/ping?a=b HTTP/1.1"
    assert server.seen[0]["headers"]["Host"] == "planfix.example:8080"
