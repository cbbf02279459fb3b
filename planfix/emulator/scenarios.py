"""Outgoing automation-scenario requests, delivered the way Planfix delivers them.

The producer's whole design rests on how Planfix calls it (API-NOTES.md section 5): plain-text
variable substitution with no JSON escaping, one request at a time per account, only HTTP 200
counting as delivered, retries after 15 min, +30 min, +1 h, +1 h, and a 3-minute silence for the
whole account after any failure. The emulator reproduces exactly that, so the producer is tested
against the behaviour it will meet, with every delay multiplied by the world's time_scale.

Design: one worker thread per account (started on that account's first event), so delivery works
the same whether the World runs alone in a test or behind the ASGI server.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

log = logging.getLogger(__name__)

# Planfix retries a failed request 4 more times at these offsets from the previous failure.
RETRY_DELAYS_S = (15 * 60, 30 * 60, 60 * 60, 60 * 60)
# After any failure or timeout Planfix sends nothing from the account for 3 minutes.
FAILURE_PAUSE_S = 3 * 60
# How long Planfix waits for the receiver before counting the request as failed [verify].
DEFAULT_DELIVERY_TIMEOUT_S = 30.0
# The only answer Planfix treats as delivered.
DELIVERED_STATUS = 200

EVENTS = ("task_created", "task_changed", "comment_added")
_VARIABLE = re.compile(r"\{\{([^{}]+)\}\}")
_RAW_VARIABLE = re.compile(r"%%%\{\{([^{}]+)\}\}%%%")


def render(template: str, variables: dict[str, str], *, url: bool = False) -> str:
    """Substitute {{variables}} as plain text, exactly as Planfix does: no JSON escaping.

    Unknown variables become "". In a URL (url=True) values are URL-encoded, except those wrapped
    in %%%...%%%, which Planfix inserts raw.
    """
    def value_of(match: re.Match[str]) -> str:
        return variables.get(match.group(1).strip(), "")

    if not url:
        return _VARIABLE.sub(value_of, template)
    raw_done = _RAW_VARIABLE.sub(lambda m: value_of(m).replace("{", "\x00"), template)
    encoded = _VARIABLE.sub(lambda m: quote(value_of(m), safe=""), raw_done)
    return encoded.replace("\x00", "{")


@dataclass
class Outgoing:
    """One request a scenario produced, with its delivery state."""

    seq: int
    account: str
    scenario: str
    event: str
    task: int
    method: str
    url: str
    body: str
    content_type: str
    headers: dict[str, str]
    basic_auth: tuple[str, str] | None
    timeout_s: float
    attempt: int = 1
    due: float = 0.0

    def __repr__(self) -> str:  # headers and basic auth carry secrets
        return f"Outgoing(#{self.seq} {self.account} {self.event} task {self.task} -> {self.url})"


@dataclass
class _AccountQueue:
    items: list[Outgoing] = field(default_factory=list)
    paused_until: float = 0.0
    in_flight: bool = False
    thread: threading.Thread | None = None
    log: list[dict[str, Any]] = field(default_factory=list)


class Dispatcher:
    """Per-account FIFO of scenario requests with Planfix's retry schedule and failure pause."""

    def __init__(self, time_scale: float = 1.0, *, wall_clock=time.time) -> None:
        self.time_scale = float(time_scale)
        self._wall_clock = wall_clock
        self._cond = threading.Condition()
        self._queues: dict[str, _AccountQueue] = {}
        self._seq = 0
        self._closed = False

    def enqueue(self, outgoing: Outgoing) -> None:
        with self._cond:
            if self._closed:
                return
            self._seq += 1
            outgoing.seq = self._seq
            outgoing.due = time.monotonic()
            queue = self._queues.setdefault(outgoing.account, _AccountQueue())
            queue.items.append(outgoing)
            if queue.thread is None:
                queue.thread = threading.Thread(target=self._run, args=(outgoing.account,),
                                                name=f"emulator-scenarios-{outgoing.account}",
                                                daemon=True)
                queue.thread.start()
            self._cond.notify_all()

    def deliveries(self, account: str) -> list[dict[str, Any]]:
        with self._cond:
            queue = self._queues.get(account)
            return [dict(entry) for entry in queue.log] if queue else []

    def pending(self, account: str) -> int:
        with self._cond:
            queue = self._queues.get(account)
            return (len(queue.items) + int(queue.in_flight)) if queue else 0

    def wait_idle(self, timeout: float) -> bool:
        """True once no account has anything queued, scheduled for retry or in flight."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while any(q.items or q.in_flight for q in self._queues.values()):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.05))
            return True

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            threads = [q.thread for q in self._queues.values() if q.thread]
        for thread in threads:
            thread.join(timeout=2)

    # -- the worker ---------------------------------------------------------------------------

    def _take(self, queue: _AccountQueue) -> Outgoing | None:
        """Wait for the next request allowed to leave: ready, in order, and not in a pause."""
        while not self._closed:
            now = time.monotonic()
            ready = [item for item in queue.items if item.due <= now]
            if ready and now >= queue.paused_until:
                item = min(ready, key=lambda it: (it.due, it.seq))
                queue.items.remove(item)
                queue.in_flight = True
                return item
            wake = [queue.paused_until] if ready else [item.due for item in queue.items]
            delay = (min(wake) - now) if wake else 1.0
            self._cond.wait(max(0.001, min(delay, 1.0)))
        return None

    def _run(self, account: str) -> None:
        with httpx.Client(follow_redirects=False) as http:
            while True:
                with self._cond:
                    queue = self._queues[account]
                    item = self._take(queue)
                if item is None:
                    return
                status, error = self._send(http, item)
                delivered = status == DELIVERED_STATUS
                with self._cond:
                    queue.log.append({
                        "t": self._wall_clock(), "scenario": item.scenario, "event": item.event,
                        "task": item.task, "method": item.method, "url": item.url,
                        "status": status, "error": error, "attempt": item.attempt,
                        "delivered": delivered, "seq": item.seq, "body": item.body,
                    })
                    if not delivered:
                        now = time.monotonic()
                        queue.paused_until = now + FAILURE_PAUSE_S * self.time_scale
                        if item.attempt <= len(RETRY_DELAYS_S):
                            item.due = now + RETRY_DELAYS_S[item.attempt - 1] * self.time_scale
                            item.attempt += 1
                            queue.items.append(item)
                        else:
                            log.warning("scenario request %r dropped after %d attempts", item, item.attempt)
                    queue.in_flight = False
                    self._cond.notify_all()

    @staticmethod
    def _send(http: httpx.Client, item: Outgoing) -> tuple[int | None, str | None]:
        headers = dict(item.headers)
        content: bytes | None = None
        if item.method.upper() != "GET":
            headers.setdefault("Content-Type", item.content_type)
            content = item.body.encode("utf-8")
        auth = httpx.BasicAuth(*item.basic_auth) if item.basic_auth else None
        try:
            response = http.request(item.method.upper(), item.url, content=content, headers=headers,
                                    auth=auth, timeout=item.timeout_s)
            return response.status_code, None
        except httpx.TimeoutException:
            return None, "timeout"
        except httpx.HTTPError as exc:
            return None, type(exc).__name__
