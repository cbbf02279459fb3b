"""The webhook receiver: Planfix scenario requests in, coalesced sync jobs out.

Planfix counts only HTTP 200 as delivered, and after any other answer it holds back every
outgoing request of that account for three minutes. So every authenticated request is answered
200, even when its body is unusable: such a body is kept in a visible list of rejected events
(``crosslink rejected``) instead, with every secret removed from what is kept. Only a request that
fails authentication gets 401, and an unknown link or side 404, as neither comes from a correctly
set up scenario. ``/hooks/<link>/<side>/`` (a trailing slash) is the same endpoint: a redirect
would count as a failed delivery.

While Redis is unreachable, what an authenticated request brought (its event, its rejection, a
doctor's test event) goes to a local durable spool (producers/spool.py) before the 200, and a
background task replays it into Redis, in order, once Redis answers; while the spool holds
anything, new webhooks queue behind it, so the order stays the order they came in. Only a full
spool (CROSSLINK_SPOOL_MAX) makes the producer answer 503.

Per (link, side, task) at most one sync job is queued (crosslink.queue.enqueue). Producers enqueue by
task name and never import worker code.

``/healthz`` says the process answers; ``/readyz`` says it can take webhooks: Redis answers, or
the spool has room (``crosslink health producer`` and the compose health check call it).
``/metrics`` is the Prometheus exposition (crosslink.base.metrics): every webhook is counted by link,
side and outcome, the spool's depth is read from it, and the queue, dead letters, each link's lag
and each Planfix account's requests, quota and forecast are read from Redis when it is scraped.
This process alone serves those Redis gauges (there is one producer; workers scale).
"""
from __future__ import annotations

import asyncio
import base64
import contextlib
import hmac
import json
import logging
import shutil
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import redis
import redis.asyncio
from kombu.exceptions import OperationalError
from marshmallow import ValidationError
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from crosslink.base import metrics
from crosslink.base.logs import register_secret
from crosslink.base.settings import Settings
from crosslink.queue.coalesce import AccountHolds
from crosslink.queue.enqueue import ENQUEUE_LUA, SENDS_JOB, Enqueuer, enqueue_call
from crosslink.queue.names import event_hint
from planfix.limiter import AccountLimiter
from producers import gauges
from producers.payload import PayloadError, parse_body, redact
from producers.scenarios import BASIC_USER, SECRET_HEADER
from producers.spool import Spool, SpoolFull, spool_directory
from schemas.links import Link, LinksConfig
from schemas.webhook import WebhookEventSchema

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
# A webhook's own Redis round trip gives up after this and goes to the spool instead: Planfix
# waits for our answer, and a Redis that does not answer in seconds is as good as down.
ENQUEUE_REDIS_TIMEOUT_S = 3.0
# How often the background task looks for a spool to replay (and so tries Redis while it is down).
SPOOL_RETRY_S = 1.0
# A configuration built in memory has no directory of its own: its spool goes in a new one of these.
TEMPORARY_SPOOL_PREFIX = "crosslink-spool-"
# What says Redis (or the broker on it) cannot be reached: the webhook goes to the spool.
REDIS_DOWN = (redis.RedisError, OperationalError, ConnectionError)
_schema = WebhookEventSchema()

# What each outcome of a webhook (crosslink_webhooks_total) answers.
ACCEPTED, COALESCED, REJECTED, TEST = "accepted", "coalesced", "rejected", "test"
SPOOLED, HUNG_UP = "spooled", "hung_up"
UNAUTHORIZED, UNAVAILABLE, UNKNOWN = "unauthorized", "unavailable", "unknown"
# The outcomes not answered 200, and what they are answered instead. UNAVAILABLE: Redis is down
# and the spool is full. HUNG_UP: nobody is left to read the answer.
REFUSALS = {UNAUTHORIZED: ("unauthorized", 401), UNAVAILABLE: ("queue unavailable, send again later", 503),
            HUNG_UP: ("the request body ended early", 400)}
# What a spooled record is, and so how it is replayed.
KEEP_EVENT, KEEP_REJECTED, KEEP_TEST = "event", "rejected", "test"


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
    def __init__(self, config: LinksConfig, redis_url: str, env: Mapping[str, str], spool: Spool):
        self.links: dict[str, Link] = {link.name: link for link in config.links}
        self.auth: dict[tuple[str, str], SideAuth] = {}
        for link in config.links:
            for side_name, side in link.sides.items():
                secret = side.webhook_secret(env)
                register_secret(secret)  # the log filter's last line of defence
                self.auth[(link.name, side_name)] = SideAuth(mode=side.webhook_auth, secret=secret)
        self.spool = spool
        self.enqueuer = Enqueuer(redis_url)
        self.redis = self.enqueuer.redis
        # Each event's run is held while its accounts' day would outrun the quota (crosslink.queue.coalesce).
        settings = Settings.from_env(dict(env))
        limiter = AccountLimiter(self.redis, rate_per_s=settings.rate_per_s, daily_quota=settings.daily_quota)
        self.enqueuer.holds = AccountHolds(limiter, config.links, settings.coalesce_max_s)
        # The webhook's one round trip runs on the event loop: a hop to a thread and back cost
        # more CPU than the call (~150 us of ~1 ms per webhook). Celery's send stays synchronous.
        self.loop_redis = redis.asyncio.Redis.from_url(
            redis_url, socket_timeout=ENQUEUE_REDIS_TIMEOUT_S, socket_connect_timeout=ENQUEUE_REDIS_TIMEOUT_S)
        self._decide = self.loop_redis.register_script(ENQUEUE_LUA)
        # Said once per outage and once per full spool, not once per webhook.
        self._spooling = spool.pending > 0
        self._full_said = False

    def _secrets(self, link: str, side: str) -> list[str]:
        """The side's secret, and every other side's: an admin may paste the wrong one."""
        own = self.auth[(link, side)].secret
        return [own, *(auth.secret for key, auth in self.auth.items() if key != (link, side))]

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
            except ClientDisconnect:
                # Nothing complete arrived, so nothing is taken; a sender that hangs up counts
                # it as failed and sends it again. One line, not a traceback.
                log.warning("webhook dropped: the sender hung up before the body ended",
                            extra={"link": link_name, "side": side})
                outcome = HUNG_UP
            except SpoolFull:
                outcome = UNAVAILABLE
        metrics.WEBHOOKS.labels(link=link_name, side=side, outcome=outcome).inc()
        if outcome in REFUSALS:
            text, status = REFUSALS[outcome]
            return PlainTextResponse(text, status_code=status)
        return JSONResponse({"result": "ok"}, status_code=200)

    async def _take(self, request: Request, link_name: str, side: str) -> str:
        """Queue (or reject, visibly) an authenticated request's event; its outcome, which is
        answered 200 whatever it is (SpoolFull when it can be neither queued nor kept)."""
        content_type = request.headers.get("content-type")
        raw, too_big = (b"", False) if request.method == "GET" else await _read_capped(request)
        if not raw.strip() and not too_big and request.query_params:
            # A scenario may put its variables in the URL instead of a body (always so for GET).
            raw, content_type = str(request.query_params).encode(), "application/x-www-form-urlencoded"
        if too_big:
            return await self._keep(self._rejection(link_name, side, f"body over {MAX_BODY_BYTES} bytes", raw))
        try:
            fields = parse_body(raw, content_type)
            # The schema quotes a bad value in its reason: a secret in one is removed first.
            event = _schema.load(_without_secrets(fields, self._secrets(link_name, side)))
        except (PayloadError, ValidationError) as exc:
            reason = str(exc.messages if isinstance(exc, ValidationError) else exc)
            return await self._keep(self._rejection(link_name, side, reason, raw))
        return await self._keep({"kind": KEEP_TEST if event["event"] == "test" else KEEP_EVENT,
                                 "link": link_name, "side": side, **event})

    def _rejection(self, link: str, side: str, reason: str, raw: bytes) -> dict:
        """The rejected-list record of an unusable body: its reason and the start of the body,
        both with every secret removed (before the body is cut, so no secret is half kept)."""
        secrets = self._secrets(link, side)
        body = redact(raw.decode("utf-8", errors="replace"), secrets)
        return {"kind": KEEP_REJECTED, "link": link, "side": side, "reason": redact(reason, secrets)[:PREVIEW_CHARS],
                "at": time.time(), "body": _cut_utf8(body, PREVIEW_CHARS)}

    async def _keep(self, record: dict) -> str:
        """Put RECORD into Redis, or into the spool when Redis cannot be reached or the spool
        already holds records (they go first): the webhook's outcome."""
        if self.spool.pending == 0:
            try:
                return await self._apply_now(record)
            except REDIS_DOWN as exc:
                if not self._spooling:
                    log.warning("Redis unreachable (%s): webhooks go to the spool %s until it is back",
                                type(exc).__name__, self.spool.path, extra=_context(record))
        await run_in_threadpool(self._spool, record)
        return SPOOLED if record["kind"] == KEEP_EVENT else (REJECTED if record["kind"] == KEEP_REJECTED else TEST)

    def _spool(self, record: dict) -> None:
        secrets = self._secrets(record["link"], record["side"])
        kept = {key: redact(value, secrets) if isinstance(value, str) else value for key, value in record.items()}
        try:
            self.spool.append({**kept, "spooled_at": time.time()})
        except SpoolFull:
            if not self._full_said:
                self._full_said = True
                log.error("spool full: %d webhooks wait in %s (CROSSLINK_SPOOL_MAX); answering 503, so "
                          "Planfix pauses the account, until Redis is back", self.spool.pending,
                          self.spool.path, extra=_context(record))
            raise
        self._spooling = True

    async def _apply_now(self, record: dict) -> str:
        """RECORD into Redis on the webhook's own path: the outcome."""
        context = _context(record)
        if record["kind"] == KEEP_REJECTED:
            await run_in_threadpool(self._reject, record)
            return REJECTED
        if record["kind"] == KEEP_TEST:
            await run_in_threadpool(self._keep_test_event, record)
            log.info("webhook test event kept for crosslink doctor", extra=context)
            return TEST
        # The id of the Celery job that will sync the task, so that this line and the worker's
        # lines share it (a batch job's when the task joined one).
        job = await self._enqueue(record["link"], record["side"], record)
        if job is None:
            log.info("webhook coalesced: a sync of this task is already queued", extra=context)
            return COALESCED
        log.info("webhook accepted", extra={**context, "job": job})
        return ACCEPTED

    def replay_record(self, record: dict) -> None:
        """One spooled RECORD into Redis, as it would have gone when it came (the spool's replay
        calls this in a thread; a Redis error stops the replay at this record)."""
        if record.get("kind") == KEEP_REJECTED:
            self._reject(record)
        elif record.get("kind") == KEEP_TEST:
            self._keep_test_event(record)
        else:
            self.enqueuer.queue(record["link"], record["side"], int(record["task"]),
                                event_hint(record.get("event", "task_changed"), record.get("comment")))

    async def replay_spool_forever(self) -> None:
        """The producer's background task: replay the spool whenever it holds records and Redis
        answers (SPOOL_RETRY_S apart)."""
        while True:
            await asyncio.sleep(SPOOL_RETRY_S)
            if not self.spool.pending:
                continue
            waiting = self.spool.pending
            try:
                replayed = await run_in_threadpool(self.spool.replay, self.replay_record)
            except REDIS_DOWN:
                continue
            except Exception:  # a bug must not end the only task that empties the spool
                log.exception("spool replay failed; trying again")
                continue
            self._spooling = self.spool.pending > 0
            self._full_said = False
            log.info("Redis is back: %d spooled webhooks replayed in the order they came (%d waited)",
                     replayed, waiting)

    def _keep_test_event(self, record: dict) -> None:
        event = {key: record[key] for key in ("event", "task", "comment", "account") if key in record}
        self.redis.set(key_for_test_event(record["link"], record["side"]),
                       json.dumps({**event, "at": time.time()}), ex=TEST_EVENT_TTL_S)

    async def _enqueue(self, link: str, side: str, event: dict) -> str | None:
        """Queue a sync of the event's task unless one is already waiting: the job's id, or None
        (Enqueuer.queue, its script run on the loop)."""
        job_id = str(uuid.uuid4())
        task = event["task"]
        holds = self.enqueuer.holds
        # The hold is cached per account; its read (every few seconds) goes off the event loop.
        if holds is not None and holds.stale(link, side):
            hold_s = await run_in_threadpool(self.enqueuer.hold_s, link, side)
        else:
            hold_s = self.enqueuer.hold_s(link, side)
        keys, args = enqueue_call(link, side, task, event_hint(event["event"], event.get("comment")), job_id, hold_s)
        what, queued = await self._decide(keys=keys, args=args)
        if what in SENDS_JOB:
            return await run_in_threadpool(self.enqueuer.settle, link, side, task, job_id, what, queued, hold_s)
        return self.enqueuer.settle(link, side, task, job_id, what, queued, hold_s)

    def _reject(self, record: dict) -> None:
        kept = {key: record[key] for key in ("link", "side", "reason", "at", "body")}
        pipe = self.redis.pipeline()
        pipe.lpush(REJECTED_KEY, json.dumps(kept, ensure_ascii=False))
        pipe.ltrim(REJECTED_KEY, 0, REJECTED_KEEP - 1)
        pipe.execute()
        log.warning("webhook rejected: %s", record["reason"], extra={"link": record["link"], "side": record["side"]})


def _without_secrets(fields: dict, secrets: list[str]) -> dict:
    """FIELDS with SECRETS removed from their text values (a number is left as it is: it is a
    task or comment number, not a secret quoted by mistake)."""
    return {key: redact(value, secrets) if isinstance(value, str) and not value.strip().isdigit() else value
            for key, value in fields.items()}


def _context(record: dict) -> dict:
    return {key: record[key] for key in ("link", "side", "task", "event") if key in record}


def _cut_utf8(text: str, limit: int) -> str:
    """TEXT's start within LIMIT bytes of UTF-8, a character cut in two shown as U+FFFD."""
    return text.encode("utf-8")[:limit].decode("utf-8", errors="replace")


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


def open_spool(config: LinksConfig, env: Mapping[str, str]) -> Spool:
    """The producer's spool: CROSSLINK_SPOOL_DIR, else beside the links file; a configuration
    built in memory (tests) gets a temporary directory of its own."""
    settings = Settings.from_env(dict(env))
    directory = spool_directory(settings.spool_dir, config.source)
    if directory is None:
        spool = Spool(Path(tempfile.mkdtemp(prefix=TEMPORARY_SPOOL_PREFIX)), settings.spool_max_webhooks)
        spool.temporary = True
        return spool
    return Spool(directory, settings.spool_max_webhooks)


def _receiver_or_no_spool(config: LinksConfig, redis_url: str, env: Mapping[str, str], spool: Spool) -> Receiver:
    """The receiver, taking SPOOL; when it cannot be built, SPOOL is closed (and removed, if
    temporary) before the error goes on."""
    try:
        return Receiver(config, redis_url, env, spool)
    except BaseException:  # a missing secret: nothing of the spool may stay behind
        spool.close()
        if spool.temporary:
            shutil.rmtree(spool.directory, ignore_errors=True)
        raise


def _readiness(spool: Spool, ready_probe: redis.Redis) -> Callable[[Request], Awaitable[Response]]:
    """The /readyz endpoint: it asks Redis through READY_PROBE (its own short deadline)."""

    async def readyz(_: Request) -> Response:
        """Ready while webhooks can be taken: Redis answers PING, or the spool has room for them
        (they are answered 200 and replayed later). Not ready only when neither holds."""
        spooled = {"spooled_webhooks": spool.pending} if spool.pending else {}
        try:
            await run_in_threadpool(ready_probe.ping)
        except redis.RedisError as exc:
            if spool.full:
                return JSONResponse({"status": "not ready", "redis": type(exc).__name__, "spool": "full",
                                     **spooled}, status_code=503)
            return JSONResponse({"status": "ready", "redis": type(exc).__name__, "spooling": True,
                                 "spooled_webhooks": spool.pending})
        return JSONResponse({"status": "ready", **spooled})

    return readyz


def _lifespan(receiver: Receiver, ready_probe: redis.Redis,
              spool: Spool) -> Callable[[Starlette], contextlib.AbstractAsyncContextManager[None]]:
    """The app's lifespan: the spool's replay runs while the app serves; then it stops, every
    client and the spool are closed, and a temporary spool left empty is removed."""

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        replaying = asyncio.create_task(receiver.replay_spool_forever())
        try:
            yield
        finally:
            replaying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await replaying
            await receiver.loop_redis.aclose()
            receiver.enqueuer.close()
            ready_probe.close()
            spool.close()
            if spool.temporary and not spool.pending:
                shutil.rmtree(spool.directory, ignore_errors=True)

    return lifespan


def create_app(config: LinksConfig, redis_url: str, env: Mapping[str, str]) -> Starlette:
    spool = open_spool(config, env)
    receiver = _receiver_or_no_spool(config, redis_url, env, spool)

    ready_probe = redis.Redis.from_url(redis_url, socket_timeout=READY_REDIS_TIMEOUT_S,
                                       socket_connect_timeout=READY_REDIS_TIMEOUT_S)

    async def healthz(_: Request) -> Response:
        return JSONResponse({"status": "alive"})

    # The state gauges read Redis through the readiness probe's client: the same short deadline.
    state = gauges.StateCollector(ready_probe, config, Settings.from_env(dict(env)))
    exposition = gauges.Exposition(REGISTRY, state,
                                   gauges.SpoolCollector(lambda: spool.pending, spool.max_webhooks))

    async def metrics_endpoint(_: Request) -> Response:
        """This process's counters and the pipeline's state read from Redis now."""
        body = await run_in_threadpool(generate_latest, exposition)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app = Starlette(lifespan=_lifespan(receiver, ready_probe, spool), routes=[
        # With and without the trailing slash: Starlette would answer the other 307, which
        # Planfix counts as a failed delivery (and pauses the account for).
        Route("/hooks/{link}/{side}", receiver.hook, methods=["POST", "PUT", "GET"]),
        Route("/hooks/{link}/{side}/", receiver.hook, methods=["POST", "PUT", "GET"]),
        Route("/healthz", healthz),
        Route("/readyz", _readiness(spool, ready_probe)),
        Route("/metrics", metrics_endpoint),
    ])
    app.state.receiver = receiver
    return app
