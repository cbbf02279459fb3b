"""`crosslink status`'s capacity per Planfix account, against the real private Redis: requests
today against the quota in force, the day's forecast at the pace so far, the share the
reconciliation may spend and the poll period; one row per account however many links share it,
and only accounts the links file names. The command's own output is tests/test_cli.py.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from crosslink.base.settings import Settings
from crosslink.operations.status import link_status, status_report, status_table
from crosslink.queue.coalesce import BASE_HOLD_S, coalesce_hold_s
from planfix.limiter import AccountLimiter, forecast_day_requests
from producers.capacity import account_capacity
from schemas.links import load_links
from tests.test_reconcile import links_doc

ACCOUNTS = ["partner", "client", "client-1", "client-2"]


def write_links(tmp_path, doc: dict) -> str:
    path = tmp_path / "links.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return str(path)


@pytest.fixture
def settings(redis_url) -> Settings:
    # Shares other than the defaults, so a row that took them from anywhere else shows it.
    return Settings.from_env({"REDIS_URL": redis_url, "CROSSLINK_RECONCILE_SHARE": "0.06",
                              "CROSSLINK_AUDIT_SHARE": "0.02"})


def day_elapsed(client) -> float:
    return AccountLimiter(client).usage("any")["day_elapsed_s"]


def test_each_account_appears_once_with_its_requests_quota_forecast_and_reconciliation(
        tmp_path, redis_client, settings):
    config = load_links(write_links(tmp_path, links_doc(3)))  # three links share the partner account
    limiter = AccountLimiter(redis_client, rate_per_s=0)
    for _ in range(37):
        assert limiter.acquire("partner").go
    limiter.set_account_limits("client-1", daily_quota=0)        # no quota
    limiter.set_account_limits("client-2", daily_quota=50_000)   # a bigger plan

    before = day_elapsed(redis_client)
    rows = {row["account"]: row for row in account_capacity(redis_client, config, settings)}
    after = day_elapsed(redis_client)

    assert list(rows) == ACCOUNTS
    partner = rows["partner"]
    assert (partner["used_today"], partner["daily_quota"], partner["used_share"]) == (37, 20_000, 0.0019)
    # The forecast is the pure function's at Redis's time of the read (it only falls as the day goes on).
    assert round(forecast_day_requests(37, after)) <= partner["forecast_today"] \
        <= round(forecast_day_requests(37, before))
    assert partner["forecast_share"] == round(partner["forecast_today"] / 20_000, 4)
    assert (partner["reconcile_share"], partner["poll_share"], partner["audit_share"]) == (0.06, 0.04, 0.02)
    assert partner["reconcile_budget_per_day"] == 1200
    # One poll for the three links' partner sides (one robot), at the period its budget allows.
    assert list(partner["poll_period_s"]) == ["partner/user:1"]
    assert partner["poll_period_s"]["partner/user:1"] > settings.reconcile_period_s

    assert (rows["client"]["used_today"], rows["client"]["forecast_today"], rows["client"]["used_share"]) == (0, 0, 0)
    no_quota = rows["client-1"]
    assert (no_quota["daily_quota"], no_quota["used_share"], no_quota["forecast_share"],
            no_quota["reconcile_budget_per_day"]) == (0, None, None, None)
    assert no_quota["poll_period_s"] == {"client-1/user:1": settings.reconcile_period_s}  # only the floor
    assert (rows["client-2"]["daily_quota"], rows["client-2"]["reconcile_budget_per_day"]) == (50_000, 3000)
    assert all(row["coalesce_hold_s"] == 0 for row in rows.values())    # every forecast within its quota


def test_the_hold_in_force_is_shown_for_an_account_whose_quota_would_not_last_the_day(tmp_path, redis_client):
    config = load_links(write_links(tmp_path, links_doc(1)))
    limiter = AccountLimiter(redis_client, rate_per_s=0)
    limiter.set_account_limits("partner", daily_quota=10)
    for _ in range(10):
        assert limiter.acquire("partner").go
    usage = limiter.usage("partner")
    rows = {row["account"]: row for row in account_capacity(
        redis_client, config, Settings.from_env({"CROSSLINK_COALESCE_MAX_S": "20"}))}
    expected = coalesce_hold_s(forecast_day_requests(10, usage["day_elapsed_s"]), 10, BASE_HOLD_S, 20)
    assert rows["partner"]["coalesce_hold_s"] == pytest.approx(expected, abs=0.05)
    assert BASE_HOLD_S <= rows["partner"]["coalesce_hold_s"] <= 20 and rows["client"]["coalesce_hold_s"] == 0
    off = account_capacity(redis_client, config, Settings.from_env({"CROSSLINK_COALESCE_MAX_S": "0"}))
    assert [row["coalesce_hold_s"] for row in off] == [0, 0]


def test_the_poll_period_is_the_one_each_side_reports(tmp_path, redis_client, settings):
    path = write_links(tmp_path, links_doc(2))
    config = load_links(path)
    sides = {side["poll"]: side["period_s"] for row in link_status(path, settings.redis_url, settings=settings)
             for side in row["reconcile"].values()}
    periods = {poll: period for row in account_capacity(redis_client, config, settings)
               for poll, period in row["poll_period_s"].items()}
    assert periods == sides


def test_two_robots_of_one_account_are_one_row_with_both_polls(tmp_path, redis_client, settings):
    doc = copy.deepcopy(links_doc(2))
    doc["links"][1]["sides"]["partner"]["integration_user"] = "user:3"
    config = load_links(write_links(tmp_path, doc))
    rows = account_capacity(redis_client, config, settings)
    assert [row["account"] for row in rows] == ["partner", "client", "client-1"]
    assert sorted(rows[0]["poll_period_s"]) == ["partner/user:1", "partner/user:3"]


def test_an_account_only_redis_knows_gets_no_row(tmp_path, redis_client, settings):
    config = load_links(write_links(tmp_path, links_doc(1)))
    AccountLimiter(redis_client, rate_per_s=0).acquire("stray-account")
    redis_client.set("crosslink:limiter:other:conf", "x")
    assert [row["account"] for row in account_capacity(redis_client, config, settings)] == ["partner", "client"]


def test_the_table_shows_links_then_accounts_and_says_when_the_quota_runs_out(tmp_path, redis_client, settings):
    path = write_links(tmp_path, links_doc(2))
    limiter = AccountLimiter(redis_client, rate_per_s=0, daily_quota=0)
    for _ in range(40):
        limiter.acquire("partner")
    limiter.set_account_limits("partner", daily_quota=30)  # already past it: the forecast is too
    lines = status_table(status_report(path, settings.redis_url, settings=settings)).splitlines()

    links_at, accounts_at = lines.index("Links"), next(i for i, line in enumerate(lines) if line.startswith("Accounts"))
    assert lines[links_at + 1].split()[:4] == ["link", "tasks", "comments", "last"]
    assert [line.split()[0] for line in lines[links_at + 2:accounts_at - 1]] == ["demo", "client-1"]
    assert lines[accounts_at + 1].split()[:3] == ["account", "today", "quota"]
    accounts = {line.split()[0]: line for line in lines[accounts_at + 2:]}
    assert list(accounts) == ["partner", "client", "client-1"]
    assert accounts["partner"].split()[1:4] == ["40", "30", "133.3"]
    assert "(runs out)" in accounts["partner"] and "(runs out)" not in accounts["client"]
    # Past its quota the partner's runs are held (5 s just past it, up to 30 s at twice it).
    held, unit = accounts["partner"].split()[-2:]
    assert unit == "s" and 5 <= int(held) <= 30 and accounts["client"].split()[-1] == "none"
    assert "6 % (polls 4 %, audit 2 %)" in accounts["client"]
    # Columns line up: every row of a table as wide as its header's columns say.
    header = lines[accounts_at + 1]
    assert all(line[header.index("today") + len("today") - 1] != " " for line in lines[accounts_at + 2:])


def test_with_redis_down_each_link_and_account_says_so(tmp_path, settings):
    path = write_links(tmp_path, links_doc(2))
    report = status_report(path, "redis://:hunter2-pass@127.0.0.1:1/0", settings=settings)
    assert [row["account"] for row in report["accounts"]] == ["partner", "client", "client-1"]
    assert all(row["redis"].startswith("unreachable") for row in report["accounts"] + report["links"])
    table = status_table(report)
    assert "client-1: Redis unreachable" in table and "hunter2" not in table
