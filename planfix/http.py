"""The HTTP/1.1 client under PlanfixClient: kept-alive connections on the standard library.

Why not httpx here: on the 2-core bench machine httpx spent about 0.9 ms of CPU on one small
JSON request over loopback and http.client about 0.3 ms, and a worker makes two Planfix
requests per synced change, so the HTTP client was the larger part of a worker's CPU. What the
Planfix API needs is small: JSON and multipart bodies, query strings, a connect and a read
timeout, connections kept alive and shared between threads, HTTPS with certificate checks, the
environment's proxy (HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as httpx honoured; a proxy that asks
for credentials is not supported). Redirects are never followed: the caller decides (downloads
must not carry the token to another host).

Errors are typed by what the caller may conclude about the request:
- ConnectFailed: no connection, so nothing was sent;
- TimedOut: sent (or partly sent), no answer in time;
- ConnectionBroken: the connection failed while sending or reading.
"""

from __future__ import annotations

import http.client
import json as jsonlib
import secrets
import select
import socket
import ssl
import threading
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from email.message import Message
from typing import Any
from urllib.parse import urlencode, urlsplit

USER_AGENT = "crosslink"


class HttpError(Exception):
    """A request that got no HTTP answer."""


class ConnectFailed(HttpError):
    """No connection could be made: the request was not sent."""


class TimedOut(HttpError):
    """No answer within the read timeout."""


class ConnectionBroken(HttpError):
    """The connection failed while the request was sent or its answer read."""


@dataclass
class Response:
    status_code: int
    # Case-insensitive .get(), like every HTTP header map.
    headers: Message
    content: bytes

    def json(self) -> Any:
        return jsonlib.loads(self.content)


def multipart(files: Mapping[str, tuple[str, bytes, str]]) -> tuple[bytes, str]:
    """FILES ({field: (file name, bytes, content type)}) as a multipart/form-data body and its
    Content-Type."""
    boundary = secrets.token_hex(16)
    parts = []
    for field_name, (file_name, content, content_type) in files.items():
        head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{_quoted(field_name)}"; '
                f'filename="{_quoted(file_name)}"\r\nContent-Type: {content_type}\r\n\r\n')
        parts.append(head.encode() + content + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def _quoted(value: str) -> str:
    # As browsers and httpx write form-data names: a quote or a line break must not end the
    # header; the rest of the name stays as UTF-8.
    return value.replace("\\", "\\\\").replace('"', "%22").replace("\r", "%0D").replace("\n", "%0A")


class Http:
    """A pool of kept-alive HTTP/1.1 connections, safe to share between threads.

    `timeout` bounds each wait for the server's bytes, `connect_timeout` the connect; a pool
    keeps at most `max_idle` idle connections per host.
    """

    def __init__(self, timeout: float = 10.0, connect_timeout: float = 5.0, max_idle: int = 10,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.timeout = timeout
        self.connect_timeout = min(timeout, connect_timeout)
        self.max_idle = max_idle
        self._ssl = ssl_context
        self._proxies = urllib.request.getproxies()
        self._idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}
        self._lock = threading.Lock()
        self.is_closed = False

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            self.is_closed = True
            idle, self._idle = self._idle, {}
        for connections in idle.values():
            for connection in connections:
                connection.close()

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                params: Mapping[str, Any] | None = None, json: Any = None,
                files: Mapping[str, tuple[str, bytes, str]] | None = None,
                follow_redirects: bool = False) -> Response:
        """Send one request and read the whole answer. Redirects come back as they are."""
        if follow_redirects:
            raise ValueError("planfix.http never follows redirects")
        if self.is_closed:
            raise RuntimeError("this HTTP client is closed")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {parts.scheme}://{parts.hostname}{parts.path}")
        target = parts.path or "/"
        query = [item for item in (parts.query, urlencode(
            [(key, value) for key, value in (params or {}).items() if value is not None])) if item]
        if query:
            target += "?" + "&".join(query)
        sent = {"User-Agent": USER_AGENT, **(headers or {})}
        body: bytes | None = None
        if json is not None:
            body = jsonlib.dumps(json, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            sent["Content-Type"] = "application/json"
        elif files is not None:
            body, sent["Content-Type"] = multipart(files)
        elif method in ("POST", "PUT", "PATCH"):
            body = b""
        key = (parts.scheme, parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
        connection = self._take(key)
        if self._via_plain_proxy(connection, key):
            target = f"{parts.scheme}://{parts.netloc}{target}"
        try:
            connection.request(method, target, body=body, headers=sent)
            answer = connection.getresponse()
            content = answer.read()
        except (socket.timeout, TimeoutError):
            connection.close()
            raise TimedOut(f"no answer from {parts.hostname} within {self.timeout} s") from None
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise ConnectionBroken(f"connection to {parts.hostname} failed ({type(exc).__name__})") from None
        if answer.will_close:
            connection.close()
        else:
            self._give_back(key, connection)
        return Response(answer.status, answer.msg, content)

    def _take(self, key: tuple[str, str, int]) -> http.client.HTTPConnection:
        """An idle connection still open at the server's end, or a new one."""
        while True:
            with self._lock:
                idle = self._idle.get(key)
                connection = idle.pop() if idle else None
            if connection is None:
                return self._connect(key)
            # An idle connection the server has closed (or sent anything on) reads as ready.
            sock = connection.sock
            if sock is not None and not select.select([sock], [], [], 0)[0]:
                return connection
            connection.close()

    def _give_back(self, key: tuple[str, str, int], connection: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(key, [])
            if not self.is_closed and len(idle) < self.max_idle:
                idle.append(connection)
                return
        connection.close()

    def _proxy(self, scheme: str, host: str) -> tuple[str, int] | None:
        proxy = self._proxies.get(scheme)
        if not proxy or urllib.request.proxy_bypass(host):
            return None
        parts = urlsplit(proxy if "://" in proxy else "http://" + proxy)
        return (parts.hostname or "", parts.port or 80) if parts.hostname else None

    def _via_plain_proxy(self, connection: http.client.HTTPConnection, key: tuple[str, str, int]) -> bool:
        """Whether CONNECTION goes through an HTTP proxy without a tunnel (absolute-form target)."""
        return key[0] == "http" and (connection.host, connection.port) != (key[1], key[2])

    def _connect(self, key: tuple[str, str, int]) -> http.client.HTTPConnection:
        scheme, host, port = key
        proxy = self._proxy(scheme, host)
        address = proxy or (host, port)
        connection: http.client.HTTPConnection
        if scheme == "https":
            if self._ssl is None:
                # Loading the system's CA certificates takes milliseconds: once per pool.
                self._ssl = ssl.create_default_context()
            connection = http.client.HTTPSConnection(*address, timeout=self.connect_timeout, context=self._ssl)
            if proxy:
                connection.set_tunnel(host, port)
        else:
            connection = http.client.HTTPConnection(*address, timeout=self.connect_timeout)
        try:
            connection.connect()
        except (OSError, http.client.HTTPException) as exc:
            connection.close()
            raise ConnectFailed(f"cannot connect to {host}:{port} ({type(exc).__name__})") from None
        connection.sock.settimeout(self.timeout)
        return connection
