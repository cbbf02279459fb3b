"""The reconciliation poller's Celery tasks: the periodic tick and one poll per link side.

Why here and not in workers/: polling Planfix for changes and queueing sync jobs is a producer's
work (STYLE.md), and producers must not import worker code. So these tasks are declared with
``shared_task`` (bound to whichever app loads the module) and the workers' app lists this module
in its ``include``; the app refers to it by name, neither imports the other. The tasks use only
what a producer may: planfix (client, limiter), schemas, the task names, producers.enqueue, and
the settings and secret redaction from crosslink/.

Why a tick that fans out: the beat schedule is fixed when the app is built and does not know the
links; the tick reads links.yaml in the worker and sends one poll per link side, so sides are
polled in parallel and one side's failure does not hold back another's.

Exactly one poll per period, whatever the number of beats: every beat replica sends its own
tick, but a poll first takes its side's turn key in Redis (SET NX with a TTL of most of a period,
producers.reconcile.take_turn) and the polls of other ticks in that period find it taken and do
nothing. A second beat is therefore harmless, and a dead one is covered by the others.

A poll never sleeps for the limiter longer than INLINE_LIMIT_WAIT_S in a worker slot: when the
account's budget is spent by live traffic, the poll gives up with its cursor unmoved and the
next period reads the same window again.
"""

from __future__ import annotations

import logging
import os
import secrets
from dataclasses import dataclass, field

import redis
from celery import current_app, shared_task

from crosslink.logs import register_secret
from crosslink.settings import Settings, get_settings
from planfix.client import PlanfixClient
from planfix.errors import PlanfixError, RateLimited
from planfix.http import Http
from planfix.limiter import AccountLimiter
from producers.enqueue import Enqueuer
from producers.reconcile import poll_side, take_turn
from schemas.links import Link, LinksConfig, find_link, load_links
from workers.names import RECONCILE_POLL, RECONCILE_TICK, SYNC_QUEUE

log = logging.getLogger("crosslink.reconcile")

# A poll makes a handful of calls; waiting out one or two limiter intervals is fine, waiting
# out a backlog of live traffic is not (the next period will try again).
INLINE_LIMIT_WAIT_S = 2.5
# Planfix answers list calls within seconds; one stuck longer counts as failed for this period.
HTTP_TIMEOUT_S = 15.0


@dataclass
class Poller:
    """What one worker process keeps for polling: built after the prefork fork, per pid."""

    settings: Settings
    config: LinksConfig
    redis: redis.Redis
    enqueuer: Enqueuer
    limiter: AccountLimiter
    http: Http
    clients: dict[tuple[str, str], PlanfixClient] = field(default_factory=dict)

    def client(self, link: Link, side: str) -> PlanfixClient:
        if (link.name, side) not in self.clients:
            conf = link.sides[side]
            token = conf.token(os.environ)
            register_secret(token)
            self.clients[(link.name, side)] = PlanfixClient(
                conf.base_url, token, account=conf.account, limiter=self.limiter, http=self.http,
                timeout=HTTP_TIMEOUT_S, sleep_on_limit=True, max_limit_sleep_s=INLINE_LIMIT_WAIT_S,
                lane=link.name)
        return self.clients[(link.name, side)]


_pollers: dict[int, Poller] = {}


def poller() -> Poller:
    pid = os.getpid()
    if pid not in _pollers:
        settings = get_settings()
        store = redis.Redis.from_url(settings.redis_url)
        _pollers.clear()
        _pollers[pid] = Poller(
            settings=settings, config=load_links(settings.links_path), redis=store,
            enqueuer=Enqueuer(settings.redis_url),
            limiter=AccountLimiter(store, rate_per_s=settings.rate_per_s, daily_quota=settings.daily_quota),
            http=Http(timeout=HTTP_TIMEOUT_S))
    return _pollers[pid]


@shared_task(name=RECONCILE_TICK, acks_late=True, ignore_result=True)
def reconcile_tick(period_s: float) -> int:
    """Send one poll per link side, and a batch job to any side whose waiting tasks have none;
    returns how many polls were sent."""
    sent = 0
    state = poller()
    for link in state.config.links:
        for side in link.sides:
            # Tasks a batch job died with (claimed again once their claims lapsed), or whose
            # batch job was lost: waiting for longer than a period.
            state.enqueuer.send_batch(link.name, side, stale_s=period_s)
            # Tasks whose job message was lost (workers.names.PENDING_SINCE_KEY). A job begins
            # within moments unless a backlog holds it: two periods tell a lost one from those.
            recovered = state.enqueuer.recover_pending(link.name, side, stale_s=2 * period_s)
            if recovered:
                log.warning("pending tasks whose job was lost, sent again: %s", recovered,
                            extra={"link": link.name, "side": side})
            current_app.send_task(RECONCILE_POLL, args=[link.name, side, period_s], queue=SYNC_QUEUE,
                                  expires=period_s)
            sent += 1
    return sent


@shared_task(name=RECONCILE_POLL, acks_late=True, ignore_result=True)
def reconcile_poll(link_name: str, side: str, period_s: float) -> str:
    """Poll LINK_NAME's SIDE once, unless another poll already took this period's turn."""
    state = poller()
    context = {"link": link_name, "side": side}
    if not take_turn(state.redis, link_name, side, period_s, secrets.token_hex(8)):
        return "not-my-turn"
    link = find_link(state.config, link_name)
    try:
        report = poll_side(link, side, state.client(link, side), state.enqueuer, state.redis)
    except RateLimited as exc:
        log.info("reconcile poll waits for the next period: rate limited (%s)", exc, extra=context)
        return "rate-limited"
    except PlanfixError as exc:
        log.warning("reconcile poll failed, the cursor stays: %s", exc, extra=context)
        return "failed"
    return f"queued {report.queued} of {report.found}"
