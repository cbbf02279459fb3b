"""Operator commands that read or repair a link's state: status and relink.

Status reads the shared state in Redis and, beside it, the producer's local spool (the webhooks
kept while Redis was unreachable), so that an operator sees both during an outage; and, per link
side, its account's reconciliation poll: the period its budget allows and how late a change whose
webhook was lost can be synced (producers/reconcile.py).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

import redis

from crosslink.logs import register_secret
from crosslink.settings import Settings, get_settings
from planfix.client import PlanfixClient
from planfix.limiter import AccountLimiter
from producers.reconcile import account_budget, poll_accounts
from producers.spool import spool_directory, spooled_webhooks
from schemas.links import Link, LinksConfig, load_links
from workers.names import SYNC_QUEUE
from workers.state import LinkState, parse_marker


def work_waiting(client: redis.Redis, link: str = "*") -> bool:
    """Whether any sync work of LINK (every link by default) is left: jobs queued or running,
    a task whose run is pending, or tasks claimed by a batch job (one that died leaves them)."""
    if client.llen(SYNC_QUEUE) or client.hlen("unacked"):
        return True
    return any(next(client.scan_iter(pattern, count=1000), None) is not None
               for pattern in (f"crosslink:pending:{link}:*", f"crosslink:claims:{link}:*"))


# `crosslink status` asks Redis with its own short deadline: it must still say what it knows (the
# spool, which is a file) while Redis is down, and say so, rather than hang.
STATUS_REDIS_TIMEOUT_S = 3.0


def reconcile_view(client: redis.Redis, config: LinksConfig, settings: Settings) -> dict[tuple[str, str], dict]:
    """Per (link, side): its account's poll, period, requests a poll, daily budget, repair bound
    and last poll, with the account's limits in force (the limiter's overrides)."""
    limiter = AccountLimiter(client, rate_per_s=settings.rate_per_s, daily_quota=settings.daily_quota)
    floor_s = settings.reconcile_period_s
    tick_s = min(settings.reconcile_tick_s, floor_s)
    view = {}
    for group in poll_accounts(config):
        limits = limiter.limits(group.account)
        budget = account_budget(client, group, daily_quota=int(limits["daily_quota"]),
                                rate_per_s=float(limits["rate_per_s"]), share=settings.reconcile_share,
                                floor_s=floor_s, tick_s=tick_s)
        for member in group.members:
            view[(member.link, member.side)] = {
                "poll": group.key, "period_s": budget.period_s, "requests_per_poll": budget.requests_per_poll,
                "budget_per_day": budget.budget_per_day, "repair_bound_s": budget.repair_bound_s,
                "last_poll_s_ago": budget.last_poll_s_ago}
    return view


def link_status(links_path: str, redis_url: str, spool_dir: str = "",
                settings: Settings | None = None) -> list[dict[str, Any]]:
    """One row per link: its mirrors, queue, parked events, dead letters and severed sides from
    Redis, its sides' reconciliation (reconcile_view, by SETTINGS, else the environment's), and
    the webhooks waiting in the producer's spool (SPOOL_DIR, else beside the links file) for
    Redis to come back. With Redis unreachable a row says so and still counts the spool."""
    config = load_links(links_path)
    links = config.links
    spooled = spooled_webhooks(spool_directory(spool_dir, links_path))
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=STATUS_REDIS_TIMEOUT_S,
                                  socket_connect_timeout=STATUS_REDIS_TIMEOUT_S)
    try:
        rows = []
        now = time.time()
        polls = reconcile_view(client, config, settings or get_settings())
        for link in links:
            state = LinkState(client, link.name)
            last = state.last_sync()
            # A task's pending flag stands from its event until its run begins, whether a job is
            # queued for it or it waits in its side's line for its account's turn (workers.tasks).
            pending = sum(1 for _ in client.scan_iter(f"crosslink:pending:{link.name}:*", count=500))
            rows.append({
                "link": link.name,
                "tasks_mirrored": len(state.pairs("task")) // 2,
                "comments_mirrored": len(state.pairs("comment")) // 2,
                "last_sync_s_ago": round(now - last, 1) if last else None,
                "runs_waiting": pending,
                "parked_events": state.parked_count(),
                "dead_letters": len(state.dead_letters()),
                "severed": {side: info["reason"] for side, info in state.severed().items()},
                "spooled_webhooks": spooled.get(link.name, 0),
                "reconcile": {side: polls[(link.name, side)] for side in link.sides},
            })
        return rows
    except redis.RedisError as exc:
        return [{"link": link.name, "redis": f"unreachable ({type(exc).__name__})",
                 "spooled_webhooks": spooled.get(link.name, 0)} for link in links]
    finally:
        client.close()


def cli_client(link: Link, side: str, limiter: AccountLimiter,
               env: Mapping[str, str] | None = None) -> PlanfixClient:
    """A client for an operator command: it may sleep for the limiter instead of failing."""
    conf = link.sides[side]
    token = conf.token(os.environ if env is None else env)
    register_secret(token)
    return PlanfixClient(conf.base_url, token, account=conf.account, limiter=limiter,
                         sleep_on_limit=True)


def relink(links_path: str, redis_url: str, link_name: str,
           env: Mapping[str, str] | None = None) -> dict[str, int]:
    """Rebuild LINK's registry from the markers (sourceDataVersion) on every mirror in Planfix.

    Every mirror the sync creates names its original in plain text, so the pairs can be read back
    from the two accounts alone, when Redis has lost them.
    """
    config = load_links(links_path)
    link = next((item for item in config.links if item.name == link_name), None)
    if link is None:
        raise SystemExit(f"no link named {link_name!r} in {links_path}")
    client = redis.Redis.from_url(redis_url)
    state = LinkState(client, link.name)
    limiter = AccountLimiter(client)
    found = {"tasks": 0, "comments": 0}
    for side in link.sides:
        planfix = cli_client(link, side, limiter, env)
        other = link.other(side)
        create = link.sides[side].create
        filters = [{"type": 5, "operator": "equal", "value": create.project}] if create.project else []
        for task in planfix.list_tasks(filters=filters, fields="id,sourceDataVersion"):
            marker = parse_marker(task.get("sourceDataVersion"))
            if not marker or marker[0] != link.name or marker[1] != other:
                continue
            state.pair("task", other, marker[2], side, int(task["id"]))
            state.mark_mirror("task", side, int(task["id"]))
            found["tasks"] += 1
            for comment in planfix.list_task_comments(int(task["id"]), fields="id,sourceDataVersion",
                                                      type_list="All"):
                comment_marker = parse_marker(comment.get("sourceDataVersion"))
                if comment_marker and comment_marker[0] == link.name and comment_marker[1] == other:
                    state.pair("comment", other, comment_marker[2], side, int(comment["id"]))
                    state.mark_mirror("comment", side, int(comment["id"]))
                    found["comments"] += 1
        planfix.close()
    return found
