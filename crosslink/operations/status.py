"""What an operator reads of the links' state: `crosslink status`, `links` and `rejected`.

Status reads the shared state in Redis and, beside it, the producer's local spool (the webhooks
kept while Redis was unreachable), so that an operator sees both during an outage; and, per link
side, its account's reconciliation poll: the period its budget allows and how late a change whose
webhook was lost can be synced (producers/reconcile). Per Planfix account, once however many
links share it, its capacity: requests today against the daily quota, the day's forecast at the
pace so far, the share of the quota the reconciliation may spend, and how long each task's run
is held while the quota would not last the day (`account_capacity`, which
the producer's /metrics serves too). `status_table` lays it out for people. `links_overview` lists
the configured links with their severed sides, and `rejected_webhooks` the webhook bodies the
producer authenticated but could not use.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import redis

from crosslink.base.settings import Settings, get_settings
from crosslink.queue.names import pending_key
from producers.capacity import account_capacity, reconcile_view
from producers.receiver import rejected_events
from producers.spool import spool_directory, spooled_webhooks
from schemas.links import LinksConfig, load_links
from workers.state import LinkState

# `crosslink status` asks Redis with its own short deadline: it must still say what it knows (the
# spool, which is a file) while Redis is down, and say so, rather than hang.
STATUS_REDIS_TIMEOUT_S = 3.0


def status_report(links_path: str, redis_url: str, spool_dir: str = "",
                  settings: Settings | None = None) -> dict[str, list[dict[str, Any]]]:
    """`crosslink status`: {"links": link_status's rows, "accounts": account_capacity's rows},
    read through one Redis client with a short deadline. With Redis unreachable every row says
    so; the links' rows still count the spool."""
    config = load_links(links_path)
    spooled = spooled_webhooks(spool_directory(spool_dir, links_path))
    settings = settings or get_settings()
    client = redis.Redis.from_url(redis_url, decode_responses=True, socket_timeout=STATUS_REDIS_TIMEOUT_S,
                                  socket_connect_timeout=STATUS_REDIS_TIMEOUT_S)
    try:
        return {"links": _link_rows(client, config, spooled, settings),
                "accounts": account_capacity(client, config, settings)}
    except redis.RedisError as exc:
        down = f"unreachable ({type(exc).__name__})"
        accounts = dict.fromkeys(conf.account for link in config.links for conf in link.sides.values())
        return {"links": [{"link": link.name, "redis": down, "spooled_webhooks": spooled.get(link.name, 0)}
                          for link in config.links],
                "accounts": [{"account": account, "redis": down} for account in accounts]}
    finally:
        client.close()


def link_status(links_path: str, redis_url: str, spool_dir: str = "",
                settings: Settings | None = None) -> list[dict[str, Any]]:
    """One row per link: its mirrors, queue, parked events, dead letters and severed sides from
    Redis, its sides' reconciliation (reconcile_view, by SETTINGS, else the environment's), and
    the webhooks waiting in the producer's spool (SPOOL_DIR, else beside the links file) for
    Redis to come back. With Redis unreachable a row says so and still counts the spool."""
    return status_report(links_path, redis_url, spool_dir, settings)["links"]


def _link_rows(client: redis.Redis, config: LinksConfig, spooled: Mapping[str, int],
               settings: Settings) -> list[dict[str, Any]]:
    rows = []
    now = time.time()
    polls = reconcile_view(client, config, settings)
    for link in config.links:
        state = LinkState(client, link.name)
        last = state.last_sync()
        # A task's pending flag stands from its event until its run begins, whether a job is
        # queued for it or it waits in its side's line for its account's turn (workers.tasks).
        pending = sum(1 for _ in client.scan_iter(pending_key(link.name, "*", "*"), count=500))
        rows.append({
            "link": link.name,
            "tasks_mirrored": len(state.pairs("task")) // 2,
            "comments_mirrored": len(state.pairs("comment")) // 2,
            "last_sync_s_ago": round(now - last, 1) if last else None,
            "runs_waiting": pending,
            "parked_events": state.parked_count(),
            "dead_letters": len(state.dead_letters()),
            # Tasks older than the link, unpaired, left for a person (crosslink pair / mirror).
            "awaiting_decision": len(state.awaiting()),
            # Status moves the other side's process does not allow, while the sides stay apart.
            "held_status_moves": len(state.held_statuses()),
            # Paired tasks their side removed (deleted, trashed, out of scope); their copies stay.
            "removed_counterparts": len(state.removed_tasks()),
            "severed": {side: info["reason"] for side, info in state.severed().items()},
            "spooled_webhooks": spooled.get(link.name, 0),
            "reconcile": {side: polls[(link.name, side)] for side in link.sides},
        })
    return rows


# -- status for people --------------------------------------------------------------------------

# Columns are this far apart: wide enough to tell them apart, narrow enough for 100 columns.
COLUMN_GAP = "  "


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _share(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.1f} %"


def _setting_share(value: float) -> str:
    """A configured share as written (0.05: "5 %")."""
    return f"{value * 100:g} %"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]], numeric: set[int]) -> list[str]:
    """Fixed-width columns, numbers (the NUMERIC columns) right-aligned."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    return [COLUMN_GAP.join(cell.rjust(width) if i in numeric else cell.ljust(width)
                            for i, (cell, width) in enumerate(zip(row, widths))).rstrip()
            for row in (header, *rows)]


def _link_line(row: dict[str, Any]) -> tuple[str, ...]:
    severed = ", ".join(f"{side} ({reason})" for side, reason in sorted(row["severed"].items())) or "-"
    repair = ", ".join(f"{side} {_duration(poll['repair_bound_s'])}" for side, poll in row["reconcile"].items())
    last = row["last_sync_s_ago"]
    return (row["link"], _count(row["tasks_mirrored"]), _count(row["comments_mirrored"]),
            "never" if last is None else f"{_duration(last)} ago", _count(row["runs_waiting"]),
            _count(row["parked_events"]), _count(row["dead_letters"]), _count(row["held_status_moves"]),
            _count(row["removed_counterparts"]), _count(row["awaiting_decision"]),
            _count(row["spooled_webhooks"]), severed, repair)


def _account_line(row: dict[str, Any]) -> tuple[str, ...]:
    forecast_share = row["forecast_share"]
    over = " (runs out)" if forecast_share is not None and forecast_share > 1 else ""
    periods = row["poll_period_s"]
    every = ", ".join(_duration(period) if len(periods) == 1 else f"{_duration(period)} ({poll})"
                      for poll, period in periods.items())
    reconcile = (f"{_setting_share(row['reconcile_share'])} (polls {_setting_share(row['poll_share'])}, "
                 f"audit {_setting_share(row['audit_share'])})")
    quota = _count(row["daily_quota"]) if row["daily_quota"] else "none"
    hold = _duration(row["coalesce_hold_s"]) if row["coalesce_hold_s"] else "none"
    return (row["account"], _count(row["used_today"]), quota, _share(row["used_share"]),
            _count(row["forecast_today"]), _share(forecast_share) + over, reconcile, every, hold)


def status_table(report: dict[str, list[dict[str, Any]]]) -> str:
    """status_report for people: a table of links, then one of accounts and their capacity."""
    lines = ["Links"]
    up = [_link_line(row) for row in report["links"] if "redis" not in row]
    if up:
        lines += _table(("link", "tasks", "comments", "last sync", "waiting", "parked", "dead", "held moves",
                         "removed", "undecided", "spooled", "severed", "repair within"), up,
                        {1, 2, 4, 5, 6, 7, 8, 9, 10})
    lines += [f"{row['link']}: Redis {row['redis']}; {_count(row['spooled_webhooks'])} webhook(s) in the spool"
              for row in report["links"] if "redis" in row]
    lines += ["", "Accounts (requests since 00:00 UTC; forecast: by 24:00 UTC at today's pace)"]
    up = [_account_line(row) for row in report["accounts"] if "redis" not in row]
    if up:
        lines += _table(("account", "today", "quota", "used", "forecast", "of quota",
                         "reconciliation may spend", "polled every", "runs held"), up, {1, 2, 3, 4, 5})
    lines += [f"{row['account']}: Redis {row['redis']}" for row in report["accounts"] if "redis" in row]
    return "\n".join(lines)


def links_overview(links_path: str, redis_url: str) -> list[str]:
    """One line per configured link: its sides with their base URLs, each severed one with why
    (its access was lost: its events wait, nothing is deleted). With Redis unreachable a line
    says the severed sides are unknown."""
    config = load_links(links_path)
    store = redis.Redis.from_url(redis_url)
    lines = []
    try:
        for link in config.links:
            try:
                severed = LinkState(store, link.name).severed()
            except redis.RedisError as exc:
                severed, unknown = {}, f" (severed sides unknown: Redis {type(exc).__name__})"
            else:
                unknown = ""
            sides = ", ".join(f"{name}={side.base_url}"
                              + (f" [severed: {severed[name]['reason']}]" if name in severed else "")
                              for name, side in link.sides.items())
            lines.append(f"{link.name}: {sides}{unknown}")
    finally:
        store.close()
    return lines


def rejected_webhooks(redis_url: str, limit: int) -> list[dict[str, Any]]:
    """The newest LIMIT webhook bodies the producer authenticated but could not use, newest
    first, with their reasons (secrets already removed by the producer)."""
    client = redis.Redis.from_url(redis_url)
    try:
        return rejected_events(client, limit)
    finally:
        client.close()
