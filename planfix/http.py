"""The HTTP client under PlanfixClient: one httpx.Client, its failures typed for the caller.

Why httpx: it is the project's one HTTP stack (the emulator's deliveries, doctor, health and the
lab use it too), so proxies, TLS and keep-alive behave the same everywhere and need no code of
ours. A hand-written http.client pool stood here for a while to save CPU: for a small JSON POST
to the emulator over loopback it spent about 0.16 ms of CPU and httpx about 0.4 ms. At Planfix's
1 request/s per account the quarter millisecond is 0.03 % of a core per account, invisible; an
account's requests wait for the limiter, not for the CPU.

What the client is built with:
- one httpx.Client per Http, safe to share between threads, keeping connections alive. Its
  `max_idle` counts over all hosts, and httpcore 1.0.9 closes an idle connection whenever the
  pool holds more than `max_idle` connections, busy ones included (encode/httpcore PR #1000):
  it must be at least the connections a process holds at once (threads x hosts), or every
  request beyond it opens a new connection;
- a connect timeout and a read timeout (which also bounds each write of the request);
- certificate checks on, against certifi's CA bundle unless SSL_CERT_FILE or SSL_CERT_DIR
  names another (not the system's store: a private CA must be named there), and the
  environment's proxy settings (HTTPS_PROXY, HTTP_PROXY, NO_PROXY), as httpx reads them;
- redirects never followed: a download's redirect comes back to the caller, so the token is
  never carried to another host.

Why a module around it rather than httpx in PlanfixClient: a sync run decides what a lost
answer means for a write, and that turns on whether anything was sent. The errors below say
exactly that, and nothing else of httpx leaks out:
- ConnectFailed: no connection was made (refused, unreachable, connect timeout, a certificate
  not trusted, a proxy that would not tunnel), so nothing was sent and a write is known not
  to be applied. A pool timeout would be one too (it waited for a free connection and sent
  nothing), though the uncapped pool never has one;
- TimedOut: the request was sent, or partly sent, and no answer came within the read timeout:
  a write may have been applied;
- ConnectionBroken: the connection failed while the request was sent or its answer read (the
  server hung up, a reset, a garbled answer): a write may have been applied.
Their messages name the host and httpx's error class, never a header (the token is in one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx

USER_AGENT = "crosslink"

# The answer: status_code, headers (case-insensitive .get), content, json(). httpx's own, so
# PlanfixClient sees the same type from this client and from Starlette's TestClient in tests.
Response = httpx.Response


class HttpError(Exception):
    """A request that got no HTTP answer."""


class ConnectFailed(HttpError):
    """No connection could be made: the request was not sent."""


class TimedOut(HttpError):
    """The request was sent (or partly sent) and no answer came within the read timeout."""


class ConnectionBroken(HttpError):
    """The connection failed while the request was sent or its answer read."""


class Http:
    """Kept-alive HTTP connections on one httpx.Client, safe to share between threads.

    `timeout` bounds each wait for the server (a read, a write, a free pooled connection),
    `connect_timeout` the connect (never longer than `timeout`); at most `max_idle` idle
    connections are kept alive, over all hosts (see the module docstring). The number of
    connections is not capped: a thread never waits for another's.
    """

    def __init__(self, timeout: float = 10.0, connect_timeout: float = 5.0, max_idle: int = 10) -> None:
        self.timeout = timeout
        self.connect_timeout = min(timeout, connect_timeout)
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_keepalive_connections=max_idle),
            follow_redirects=False, trust_env=True, verify=True,
            headers={"User-Agent": USER_AGENT})

    def __enter__(self) -> Http:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def is_closed(self) -> bool:
        return self._client.is_closed

    def close(self) -> None:
        self._client.close()

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                params: Mapping[str, Any] | None = None, json: Any = None,
                files: Mapping[str, tuple[str, bytes, str]] | None = None,
                follow_redirects: bool = False) -> Response:
        """Send one request and read the whole answer. Redirects come back as they are; a
        parameter whose value is None is left out of the query string. A closed client raises
        RuntimeError, a URL that is not http(s) ValueError."""
        if follow_redirects:
            raise ValueError("planfix.http never follows redirects")
        target: str | httpx.URL = url
        if params:
            # Added to the URL's own query: httpx's params= would replace it (and an empty
            # params= would wipe a signed download link's query).
            target = httpx.URL(url).copy_merge_params(
                {key: value for key, value in params.items() if value is not None})
        try:
            return self._client.request(method, target, headers=headers, json=json, files=files)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ProxyError, httpx.PoolTimeout) as exc:
            # A pool timeout waited for a free connection (none here: the pool is uncapped) and
            # a proxy error is the proxy's refusal to tunnel: neither sent a byte to the host.
            raise ConnectFailed(f"cannot connect to {_host(url)} ({type(exc).__name__})") from exc
        except (httpx.ReadTimeout, httpx.WriteTimeout) as exc:
            raise TimedOut(f"no answer from {_host(url)} within {self.timeout} s ({type(exc).__name__})") from exc
        except httpx.UnsupportedProtocol as exc:
            raise ValueError(f"not an http(s) URL: {urlsplit(url).scheme}://{_host(url)}") from exc
        except (httpx.TransportError, httpx.DecodingError) as exc:
            # The server hung up, reset, or sent what is not HTTP (or not the encoding it named).
            raise ConnectionBroken(f"connection to {_host(url)} failed ({type(exc).__name__})") from exc


def _host(url: str) -> str:
    # Only the host: a URL's query may hold an access_token.
    return urlsplit(url).hostname or "?"
