"""Each Planfix account's capacity and each link side's poll budget, as people and metrics see them.

Per Planfix account, once however many links share it: requests today against the daily quota,
the day's forecast at the pace so far, the share of the quota the reconciliation may spend, and
how long each task's run is held while the quota would not last the day. The producer's /metrics
(producers.gauges) and `crosslink status` both show it; it lives beside the poller whose budgets
it reads (producers.reconcile).
"""

from __future__ import annotations

from typing import Any

import redis

from crosslink.base.settings import Settings
from crosslink.queue.coalesce import usage_hold_s
from planfix.limiter import AccountLimiter, forecast_day_requests
from producers.reconcile import Budget, PollAccount, account_budget, poll_accounts
from schemas.links import LinksConfig


def settings_limiter(client: redis.Redis, settings: Settings) -> AccountLimiter:
    """The limiter as the workers and the poller build it: SETTINGS' defaults, overrides from Redis."""
    return AccountLimiter(client, rate_per_s=settings.rate_per_s, daily_quota=settings.daily_quota)


def poll_budgets(client: redis.Redis, config: LinksConfig, settings: Settings,
                 limiter: AccountLimiter | None = None) -> list[tuple[PollAccount, Budget]]:
    """Every poll of CONFIG with its budget, by the account's limits in force (the limiter's
    overrides over SETTINGS)."""
    limiter = limiter or settings_limiter(client, settings)
    floor_s = settings.reconcile_period_s
    tick_s = min(settings.reconcile_tick_s, floor_s)
    budgets = []
    for group in poll_accounts(config):
        limits = limiter.limits(group.account)
        budgets.append((group, account_budget(
            client, group, daily_quota=int(limits["daily_quota"]), rate_per_s=float(limits["rate_per_s"]),
            share=settings.poll_share, floor_s=floor_s, tick_s=tick_s)))
    return budgets


def reconcile_view(client: redis.Redis, config: LinksConfig, settings: Settings) -> dict[tuple[str, str], dict]:
    """Per (link, side): its account's poll, period, requests a poll, daily budget, repair bound
    and last poll, with the account's limits in force (the limiter's overrides)."""
    view = {}
    for group, budget in poll_budgets(client, config, settings):
        for member in group.members:
            view[(member.link, member.side)] = {
                "poll": group.key, "period_s": budget.period_s, "requests_per_poll": budget.requests_per_poll,
                "budget_per_day": budget.budget_per_day, "repair_bound_s": budget.repair_bound_s,
                "last_poll_s_ago": budget.last_poll_s_ago}
    return view


def share_of(requests: float, daily_quota: int) -> float | None:
    """REQUESTS as a share of DAILY_QUOTA; None for no quota (0, the limiter's meaning)."""
    return round(requests / daily_quota, 4) if daily_quota > 0 else None


def account_capacity(client: redis.Redis, config: LinksConfig, settings: Settings) -> list[dict[str, Any]]:
    """One row per Planfix account of CONFIG, in config order, once however many link sides
    and robots share it (the limiter's account is what has one quota):

    - used_today, daily_quota (the limits in force; 0: no quota) and used_share;
    - forecast_today: the requests by 24:00 UTC at the pace so far (forecast_day_requests) and
      forecast_share: above 1 the quota runs out before midnight at this pace;
    - reconcile_share: the share of the quota the reconciliation may spend
      (CROSSLINK_RECONCILE_SHARE), its polls' (poll_share) and the comment audit's (audit_share,
      a part of it) together,
      and reconcile_budget_per_day, that share in requests;
    - poll_period_s: each of the account's polls (one per robot) and its period now;
    - coalesce_hold_s: how long each task's run is held now so that edits merge (0 while the
      forecast stays within the quota; crosslink.queue.coalesce): the latency the quota costs.

    Account names come from CONFIG only: nothing found in Redis adds a row.
    """
    limiter = settings_limiter(client, settings)
    periods: dict[str, dict[str, float]] = {}
    for group, budget in poll_budgets(client, config, settings, limiter):
        periods.setdefault(group.account, {})[group.key] = budget.period_s
    reconcile_share = settings.reconcile_share
    rows = []
    for account, polls in periods.items():
        usage = limiter.usage(account)
        used, quota = int(usage["used_today"]), int(usage["daily_quota"])
        forecast = round(forecast_day_requests(used, usage["day_elapsed_s"]))
        rows.append({
            "account": account,
            "used_today": used,
            "daily_quota": quota,
            "used_share": share_of(used, quota),
            "forecast_today": forecast,
            "forecast_share": share_of(forecast, quota),
            "reconcile_share": round(reconcile_share, 4),
            "poll_share": round(settings.poll_share, 4),
            "audit_share": settings.audit_share,
            "reconcile_budget_per_day": round(reconcile_share * quota) if quota > 0 else None,
            "poll_period_s": polls,
            "coalesce_hold_s": round(usage_hold_s(usage, settings.coalesce_max_s), 2),
        })
    return rows
