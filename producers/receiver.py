"""The webhook receiver: Planfix scenario requests in, coalesced sync jobs out.

Planfix counts only HTTP 200 as delivered, and after any other answer it holds back every
outgoing request of that account for three minutes. So every authenticated request is answered
200 at once, even when its body is unusable: such a body is kept in a visible list of rejected
events (``crosslink rejected``) instead. Only a request that fails authentication gets 401, and
an unknown link or side 404, as neither comes from a correctly set up scenario; and 503 while
Redis is unreachable, as then the event can be neither queued nor kept, and Planfix's retry is
the only copy of it.

Per (link, side, task) at most one sync job is queued (producers.enqueue). Producers enqueue by
task name and never import worker code.

``/healthz`` says the process answers; ``/readyz`` says it can take webhooks, which needs Redis
(``crosslink health producer`` and the compose health check call it). ``/metrics`` is the
Prometheus exposition (crosslink.metrics): every webhook is counted by link, side and outcome, and
the queue, dead letters and each link's lag are read from Redis when it is scraped.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field

import redis
import redis.asyncio
from marshmallow import ValidationError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crosslink import metrics
from producers.enqueue import ENQUEUE_LUA, SENDS_JOB, Enqueuer, enqueue_call
from producers.payload import PayloadError, parse_body
from producers.scenarios import BASIC_USER, SECRET_HEADER
from schemas.links import Link, LinksConfig
from schemas.webhook import WebhookEventSchema
from workers.names import event_hint

log = logging.getLogger("crosslink.producer")

# Planfix comments are capped at 64 KB; a body template quoting one, plus HTML, fits in this.
MAX_BODY_BYTES = 256 * 1024
# How many rejected events we keep for operators to look at.
REJECTED_KEEP = 1000
REJECTED_KEY = "crosslink:rejected"
# Where a `test` event is kept instead of being queued; `crosslink doctor` looks for its own there.
TEST_EVENT_KEY = "crosslink:test-event:{link}:{side}"
# A test event is evidence for one doctor run, not a record: it goes after an hour.
TEST_EVENT_TTL_S = 3600
# A body preview in the rejected list: enough to see what went wrong, not a data dump.
PREVIEW_CHARS = 500
# /readyz asks Redis with its own short deadline: a health probe that hangs on a dead Redis tells
# the orchestrator nothing, and compose's own probe timeout is a few seconds.
READY_REDIS_TIMEOUT_S = 2.0
_schema = WebhookEventSchema()

# What each outcome of a webhook (crosslink_webhooks_total) answers.
ACCEPTED, COALESCED, REJECTED, TEST = "accepted", "coalesced", "rejected", "test"
UNAUTHORIZED, UNAVAILABLE, UNKNOWN = "unauthorized", "unavailable", "unknown"
# The outcomes not answered 200, and what they are answered instead.
REFUSALS = {UNAUTHORIZED: ("unauthorized", 401), UNAVAILABLE: ("queue unavailable, send again later", 503)}


@dataclass(frozen=True)
class SideAuth:
    mode: str  # "header" | "basic"
    secret: str = field(repr=False)  # never in a log line or a traceback's locals


def authenticate(request: Request, auth: SideAuth) -> bool:
    """Constant-time check of the side's secret, by header or by Basic auth.

    Starlette decodes header bytes as latin-1, so encoding them back as latin-1 gives the exact
    bytes sent; a client sends a non-ASCII secret as UTF-8, the form compared against.
    """
    if auth.mode == "basic":
        header = request.headers.get("authorization", "")
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return False
        try:
            # ValueError, not just binascii.Error: b64decode refuses non-ASCII text with it.
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        user_ok = hmac.compare_digest(user.encode(), BASIC_USER.encode())
        return hmac.compare_digest(password.encode(), auth.secret.encode()) and user_ok
    supplied = request.headers.get(SECRET_HEADER.lower(), "")
    return hmac.compare_digest(supplied.encode("latin-1"), auth.secret.encode())


class Receiver:
    def __init__(self, config: LinksConfig, redis_url: str, env: Mapping[str, str]):
        self.links: dict[str, Link] = {link.name: link for link in config.links}
        self.auth: dict[tuple[str, str], SideAuth] = {}
        for link in config.links:
            for side_name, side in link.sides.items():
                self.auth[(link.name, side_name)] = SideAuth(
                    mode=side.webhook_auth, secret=side.webhook_secret(env)
                )
        self.enqueuer = Enqueuer(redis_url)
        self.redis = self.enqueuer.redis
        # The webhook's one round trip runs on the event loop: a hop to a thread and back cost
        # more CPU than the call (~150 us of ~1 ms per webhook). Celery's send stays synchronous.
        self.loop_redis = redis.asyncio.Redis.from_url(redis_url)
        self._decide = self.loop_redis.register_script(ENQUEUE_LUA)

    async def hook(self, request: Request) -> Response:
        link_name = request.path_params["link"]
        side = request.path_params["side"]
        auth = self.auth.get((link_name, side))
        if auth is None:
            # The path is the sender's choice: it never becomes a label value.
            metrics.WEBHOOKS.labels(link="", side="", outcome=UNKNOWN).inc()
            return PlainTextResponse("unknown link or side", status_code=404)
        if not authenticate(request, auth):
            log.warning("webhook refused: authentication failed", extra={"link": link_name, "side": side})
            outcome = UNAUTHORIZED
        else:
            try:
                outcome = await self._take(request, link_name, side)
            except redis.RedisError as exc:
                # Nothing was queued or recorded: not 200, so that Planfix sends it again later
                # (and pauses the account's requests for three minutes; losing the event is worse).
                log.warning("webhook not taken, Redis unavailable: %s", type(exc).__name__,
                            extra={"link": link_name, "side": side})
                outcome = UNAVAILABLE
        metrics.WEBHOOKS.labels(link=link_name, side=side, outcome=outcome).inc()
        if outcome in REFUSALS:
            text, status = REFUSALS[outcome]
            return PlainTextResponse(text, status_code=status)
        return JSONResponse({"result": "ok"}, status_code=200)

    async def _take(self, request: Request, link_name: str, side: str) -> str:
        """Queue (or reject, visibly) an authenticated request's event; its outcome, which is
        answered 200 whatever it is."""
        content_type = request.headers.get("content-type")
        raw, too_big = (b"", False) if request.method == "GET" else await _read_capped(request)
        if not raw.strip() and not too_big and request.query_params:
            # A scenario may put its variables in the URL instead of a body (always so for GET).
            raw, content_type = str(request.query_params).encode(), "application/x-www-form-urlencoded"
        if too_big:
            await run_in_threadpool(self._reject, link_name, side,
                                    f"body over {MAX_BODY_BYTES} bytes", raw[:PREVIEW_CHARS])
            return REJECTED
        try:
            event = _schema.load(parse_body(raw, content_type))
        except (PayloadError, ValidationError) as exc:
            reason = str(exc.messages if isinstance(exc, ValidationError) else exc)
            await run_in_threadpool(self._reject, link_name, side, reason, raw[:PREVIEW_CHARS])
            return REJECTED
        context = {"link": link_name, "side": side, "task": event["task"], "event": event["event"]}
        if event["event"] == "test":
            await run_in_threadpool(self._keep_test_event, link_name, side, event)
            log.info("webhook test event kept for crosslink doctor", extra=context)
            return TEST
        # The id of the Celery job that will sync the task, so that this line and the worker's
        # lines share it (a batch job's when the task joined one).
        job = await self._enqueue(link_name, side, event)
        if job is None:
            log.info("webhook coalesced: a sync of this task is already queued", extra=context)
            return COALESCED
        log.info("webhook accepted", extra={**context, "job": job})
        return ACCEPTED

    def _keep_test_event(self, link: str, side: str, event: dict) -> None:
        self.redis.set(key_for_test_event(link, side), json.dumps({**event, "at": time.time()}),
                       ex=TEST_EVENT_TTL_S)

    async def _enqueue(self, link: str, side: str, event: dict) -> str | None:
        """Queue a sync of the event's task unless one is already waiting: the job's id, or None
        (Enqueuer.queue, its script run on the loop)."""
        job_id = str(uuid.uuid4())
        task = event["task"]
        keys, args = enqueue_call(link, side, task, event_hint(event["event"], event.get("comment")), job_id)
        what, queued = await self._decide(keys=keys, args=args)
        if what in SENDS_JOB:
            return await run_in_threadpool(self.enqueuer.settle, link, side, task, job_id, what, queued)
        return self.enqueuer.settle(link, side, task, job_id, what, queued)

    def _reject(self, link: str, side: str, reason: str, preview: bytes) -> None:
        record = {"link": link, "side": side, "reason": reason, "at": time.time(),
                  "body": preview.decode("utf-8", errors="replace")}
        pipe = self.redis.pipeline()
        pipe.lpush(REJECTED_KEY, json.dumps(record, ensure_ascii=False))
        pipe.ltrim(REJECTED_KEY, 0, REJECTED_KEEP - 1)
        pipe.execute()
        log.warning("webhook rejected: %s", reason, extra={"link": link, "side": side})


async def _read_capped(request: Request) -> tuple[bytes, bool]:
    """The body, read no further than the cap; (prefix, True) when it was larger."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        return b"", True
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return b"".join(chunks), True
        chunks.append(chunk)
    return b"".join(chunks), False


def key_for_test_event(link: str, side: str) -> str:
    return TEST_EVENT_KEY.format(link=link, side=side)


def rejected_events(client: redis.Redis, limit: int = 50) -> list[dict]:
    return [json.loads(item) for item in client.lrange(REJECTED_KEY, 0, limit - 1)]


def create_app(config: LinksConfig, redis_url: str, env: Mapping[str, str]) -> Starlette:
    receiver = Receiver(config, redis_url, env)

    ready_probe = redis.Redis.from_url(redis_url, socket_timeout=READY_REDIS_TIMEOUT_S,
                                       socket_connect_timeout=READY_REDIS_TIMEOUT_S)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    async def readyz(_: Request) -> Response:
        """Ready when Redis answers PING: without it no webhook can be queued (they get 503)."""
        try:
            await run_in_threadpool(ready_probe.ping)
        except redis.RedisError as exc:
            return JSONResponse({"status": "not ready", "redis": type(exc).__name__}, status_code=503)
        return JSONResponse({"status": "ready"})

    # The state gauges read Redis through the readiness probe's client: the same short deadline.
    exposition = metrics.Exposition(REGISTRY, metrics.StateCollector(ready_probe, receiver.links))

    async def metrics_endpoint(_: Request) -> Response:
        """This process's counters and the pipeline's state read from Redis now."""
        body = await run_in_threadpool(generate_latest, exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        yield
        await receiver.loop_redis.aclose()
        receiver.enqueuer.close()
        ready_probe.close()

    app = Starlette(lifespan=lifespan, routes=[
        Route("/hooks/{link}/{side}", receiver.hook, methods=["POST", "PUT", "GET"]),
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics_endpoint),
    ])
    app.state.receiver = receiver
    return app
