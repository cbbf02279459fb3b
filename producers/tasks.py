"""The reconciliation poller's Celery tasks: the periodic tick and one poll per account.

Why here and not in workers/: polling Planfix for changes and queueing sync jobs is a producer's
work (STYLE.md), and producers must not import worker code. So these tasks are declared with
``shared_task`` (bound to whichever app loads the module) and the workers' app lists this module
in its ``include``; the app refers to it by name, neither imports the other. The tasks use only
what a producer may: planfix (client, limiter), schemas, the task names, crosslink.queue.enqueue, and
the settings and secret redaction from crosslink/.

Why a tick that fans out: the beat schedule is fixed when the app is built and does not know the
links; the tick reads links.yaml in the worker and sends one poll for each account (the link
sides sharing a Planfix account and robot: producers.reconcile.poll_accounts) whose turn has
come, so accounts are polled in parallel and one account's failure does not hold back another's.

One poll per account per period, whatever the number of beats: the tick ticks often (every
CROSSLINK_RECONCILE_TICK_S, at most the floor period) and, for each account, takes its turn key
in Redis (SET NX with the account's adapted period as TTL, producers.reconcile.take_turn) before
sending its poll; other ticks in that period find it taken. A second beat is therefore harmless,
and a dead one is covered by the others. The period is the account's reconciliation budget
(producers.reconcile.poll_period_s), and a tick that finds the account busy with live runs leaves
the turn alone for now (producers.reconcile.defer_poll).

A poll never sleeps for the limiter longer than INLINE_LIMIT_WAIT_S in a worker slot: when the
account's budget is spent by live traffic, the poll gives up with its cursor unmoved and the
next period reads the same window again.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from dataclasses import dataclass, field

import redis
from celery import current_app, shared_task

from crosslink.base.logs import register_secret
from crosslink.base.settings import Settings, get_settings
from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.names import RECONCILE_POLL, RECONCILE_TICK, SYNC_QUEUE
from planfix.client import PlanfixClient
from planfix.errors import PlanfixError, RateLimited
from planfix.http import Http
from planfix.limiter import AccountLimiter
from producers.reconcile import (
    POLL_LANE,
    TURN_KEY,
    PollAccount,
    account_budget,
    audit_comments,
    defer_poll,
    find_poll_account,
    key,
    live_requests,
    poll_account,
    poll_accounts,
    read_last_poll,
    take_audit_allowance,
    take_turn,
)
from schemas.links import LinksConfig, load_links

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
    clients: dict[str, PlanfixClient] = field(default_factory=dict)

    def client(self, group: PollAccount) -> PlanfixClient:
        """GROUP's client: the first member's base URL and token, in the poll's limiter lane. A
        poll serves every link of its account, so its requests name no link (metrics)."""
        if group.key not in self.clients:
            conf = group.first.conf
            token = conf.token(os.environ)
            register_secret(token)
            self.clients[group.key] = PlanfixClient(
                conf.base_url, token, account=conf.account, limiter=self.limiter, http=self.http,
                timeout=HTTP_TIMEOUT_S, sleep_on_limit=True, max_limit_sleep_s=INLINE_LIMIT_WAIT_S,
                lane=POLL_LANE)
        return self.clients[group.key]


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


def poll_due(state: Poller, group: PollAccount, floor_s: float, tick_s: float) -> float | None:
    """GROUP's period if this tick should poll it (its turn taken), else None: the turn is not
    free, or the account is busy with live runs and the poll may still wait."""
    if state.redis.exists(key(TURN_KEY, group.key)):
        return None  # polled within its period: nothing to read (take_turn below decides races)
    limits = state.limiter.limits(group.account)
    budget = account_budget(state.redis, group, daily_quota=int(limits["daily_quota"]),
                            rate_per_s=float(limits["rate_per_s"]), share=state.settings.poll_share,
                            floor_s=floor_s, tick_s=tick_s)
    last = read_last_poll(state.redis, group.key)
    if last is not None:
        used = int(state.limiter.usage(group.account)["used_today"])
        if defer_poll(live_requests=live_requests(used, last.used_after), since_poll_s=max(0.0, time.time() - last.at),
                      rate_per_s=float(limits["rate_per_s"]), period_s=budget.period_s):
            log.info("reconcile poll waits: the account is busy with live runs", extra={"account": group.key})
            return None
    if not take_turn(state.redis, group.key, budget.period_s, secrets.token_hex(8)):
        return None
    return budget.period_s


@shared_task(name=RECONCILE_TICK, acks_late=True, ignore_result=True)
def reconcile_tick(tick_s: float, period_s: float | None = None) -> int:
    """Send a batch job to any link side whose waiting tasks have none, and a poll to every
    account whose turn has come; returns how many polls were sent.

    TICK_S: how often the beat ticks; PERIOD_S: the shortest period between two polls of an
    account (the beat's CROSSLINK_RECONCILE_PERIOD_S; a tick of an older beat carries only it).
    """
    floor_s = period_s if period_s is not None else tick_s
    state = poller()
    for link in state.config.links:
        for side in link.sides:
            # Tasks a batch job died with (claimed again once their claims lapsed), or whose
            # batch job was lost: waiting for longer than a period.
            state.enqueuer.send_batch(link.name, side, stale_s=floor_s)
            # Tasks whose job message was lost (crosslink.queue.names.PENDING_SINCE_KEY). A job begins
            # within moments unless a backlog holds it: two periods tell a lost one from those.
            recovered = state.enqueuer.recover_pending(link.name, side, stale_s=2 * floor_s)
            if recovered:
                log.warning("pending tasks whose job was lost, sent again: %s", recovered,
                            extra={"link": link.name, "side": side})
    sent = 0
    for group in poll_accounts(state.config):
        period = poll_due(state, group, floor_s, tick_s)
        if period is None:
            continue
        current_app.send_task(RECONCILE_POLL, args=[group.key, period], queue=SYNC_QUEUE, expires=period)
        sent += 1
    return sent


@shared_task(name=RECONCILE_POLL, acks_late=True, ignore_result=True)
def reconcile_poll(account: str, period_s: float | None = None, *_: object) -> str:
    """Poll ACCOUNT (a poll account's key) once, then audit a few of its tasks' comments; its
    tick took the turn for PERIOD_S (an older tick's job carries none: the floor period)."""
    state = poller()
    context = {"account": account}
    group = find_poll_account(state.config, account)
    if group is None:
        log.warning("reconcile poll for an account no link uses (an older tick?): skipped", extra=context)
        return "unknown-account"
    client = state.client(group)
    try:
        report = poll_account(group, client, state.enqueuer, state.redis,
                              used_today=lambda: int(state.limiter.usage(group.account)["used_today"]))
        quota = int(state.limiter.limits(group.account)["daily_quota"])
        period = period_s if period_s is not None else state.settings.reconcile_period_s
        audit = audit_comments(group, client, state.enqueuer, state.redis,
                               take_audit_allowance(state.redis, group, quota, state.settings.audit_share, period))
    except RateLimited as exc:
        log.info("reconcile poll waits for the next period: rate limited (%s)", exc, extra=context)
        return "rate-limited"
    except PlanfixError as exc:
        log.warning("reconcile poll failed, the cursor stays: %s", exc, extra=context)
        return "failed"
    return f"queued {report.queued} of {report.found}; audited {audit.tasks}, queued {len(audit.runs)}"
