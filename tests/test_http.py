"""planfix.http, the client under PlanfixClient, against a real server over loopback.

The server is the standard library's, steered per test: it records what arrived on the wire
(request line, headers, body, which connection) and answers as told, slowly, with a redirect,
or by closing the connection. The Planfix-shaped round trip (JSON, query strings, multipart
uploads as the emulator parses them) is in tests/test_client.py and the spec conformance test.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from starlette.requests import Request

from planfix.http import ConnectFailed, ConnectionBroken, Http, TimedOut, multipart


class Recorder(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.seen: list[dict[str, Any]] = []
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


def test_multipart_parses_as_form_data_with_awkward_names():
    body, content_type = multipart({"file": ('отчёт "v2"\r\n.txt', b"\x00bytes\r\n--", "application/octet-stream")})

    async def parse() -> tuple[str | None, bytes, list[str]]:
        # As the emulator (Starlette, python-multipart) reads an upload.
        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request({"type": "http", "method": "POST",
                              "headers": [(b"content-type", content_type.encode())]}, receive).form()
        upload = form["file"]
        return upload.filename, await upload.read(), list(form.keys())

    name, content, fields = asyncio.run(parse())
    assert fields == ["file"]
    assert name == "отчёт %22v2%22%0D%0A.txt"  # no header injection
    assert content == b"\x00bytes\r\n--"


def test_connections_are_kept_alive_and_shared_between_threads(server):
    with Http(timeout=5, max_idle=2) as http:
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


def test_a_connection_the_server_closed_while_idle_is_not_reused(server):
    with Http(timeout=5) as http:
        server.answer = (200, {"Connection": "close"}, b"{}", 0.0)
        http.request("GET", server.url + "/closing")
        server.answer = (200, {}, b"{}", 0.0)
        http.request("GET", server.url + "/next")
        # The server's keep-alive timeout: it closes an idle connection on its side.
        first = server.seen[-1]["peer"]
        http.request("GET", server.url + "/kept")
        assert server.seen[-1]["peer"] == first
        (connection,) = http._idle[("http", "127.0.0.1", server.server_address[1])]
        connection.sock.shutdown(socket.SHUT_WR)  # looks closed from the server's side
        time.sleep(0.2)
        assert http.request("GET", server.url + "/after").status_code == 200
    assert server.seen[-1]["peer"] != first
    assert len({seen["peer"] for seen in server.seen}) == 3


def test_redirects_come_back_unfollowed(server):
    server.answer = (302, {"Location": "/elsewhere"}, b"", 0.0)
    with Http(timeout=5) as http:
        answer = http.request("GET", server.url + "/file/1/download")
        with pytest.raises(ValueError):
            http.request("GET", server.url + "/x", follow_redirects=True)
    assert answer.status_code == 302 and answer.headers.get("location") == "/elsewhere"
    assert len(server.seen) == 1


def test_failures_are_typed_by_what_the_caller_may_conclude(server):
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        closed_port = unused.getsockname()[1]
    with Http(timeout=0.3) as http:
        with pytest.raises(ConnectFailed):
            http.request("GET", f"http://127.0.0.1:{closed_port}/ping")
        server.answer = (200, {}, b"{}", 1.0)
        with pytest.raises(TimedOut):
            http.request("POST", server.url + "/task/", json={"name": "slow"})
        server.answer = (0, {}, b"", 0.0)
        with pytest.raises(ConnectionBroken):
            http.request("POST", server.url + "/task/", json={"name": "hung up"})
        server.answer = (200, {}, b"{}", 0.0)
        assert http.request("GET", server.url + "/ping").status_code == 200  # the pool recovers
    with pytest.raises(RuntimeError):
        http.request("GET", server.url + "/ping")


def test_a_plain_http_proxy_gets_the_absolute_url(server, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", server.url)
    monkeypatch.delenv("http_proxy", raising=False)  # the lower-case name wins where both are set
    monkeypatch.setenv("NO_PROXY", "")
    monkeypatch.delenv("no_proxy", raising=False)
    with Http(timeout=5) as http:
        http.request("GET", "http://planfix.example:8080/rest/ping?a=b")
    assert server.seen[0]["line"] == "GET http://planfix.example:8080/rest/ping?a=b HTTP/1.1"
    assert server.seen[0]["headers"]["Host"] == "planfix.example:8080"
