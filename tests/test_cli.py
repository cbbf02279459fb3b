"""The `crosslink` command as an operator meets it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from crosslink.base.settings import Settings, get_settings
from crosslink.cli import main
from crosslink.operations.status import link_status
from planfix.limiter import AccountLimiter
from tests.test_reconcile import links_doc

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def test_lint_config_accepts_the_example():
    result = run("lint-config", str(EXAMPLE))
    assert result.exit_code == 0 and "OK" in result.output


def test_lint_config_rejects_a_broken_status_map_naming_line_and_fix(tmp_path):
    broken = EXAMPLE.read_text(encoding="utf-8").replace(
        "partner_to_client: {1: 11, 2: 12, 3: 13, 4: 14}", "partner_to_client: {1: 11, 2: 12, 3: 13, 4: 99}")
    assert broken != EXAMPLE.read_text(encoding="utf-8")
    path = tmp_path / "links.yaml"
    path.write_text(broken, encoding="utf-8")
    result = run("lint-config", str(path))
    assert result.exit_code == 1
    line = next(n for n, text in enumerate(broken.splitlines(), 1) if "4: 99" in text)
    assert f"{path}:{line}:" in result.output and "99" in result.output and "fix:" in result.output


def test_lint_config_names_an_unknown_key(tmp_path):
    path = tmp_path / "links.yaml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8").replace("on_forbidden: path", "on_forbiden: path"),
                    encoding="utf-8")
    result = run("lint-config", str(path))
    assert result.exit_code == 1 and "on_forbiden" in result.output and "on_forbidden" in result.output


def test_lint_config_reports_schema_and_semantic_problems_in_one_run(tmp_path):
    path = tmp_path / "links.yaml"
    path.write_text(EXAMPLE.read_text(encoding="utf-8").replace("on_forbidden: path", "on_forbiden: path")
                    .replace("partner_to_client: {1: 11, 2: 12, 3: 13, 4: 14}",
                             "partner_to_client: {1: 11, 2: 12, 3: 13, 4: 99}"), encoding="utf-8")
    result = run("lint-config", str(path))
    assert result.exit_code == 1
    assert "unknown key 'on_forbiden'" in result.output and "client status 99 is a target" in result.output


def test_lint_config_on_a_missing_file():
    result = run("lint-config", "/nonexistent/links.yaml")
    assert result.exit_code != 0 and "no such file" in result.output


def test_every_subcommand_has_help():
    for command in main.commands:
        result = run(command, "--help")
        assert result.exit_code == 0, (command, result.output)


# --- status -----------------------------------------------------------------------------------

@pytest.fixture
def status_env(monkeypatch, tmp_path, redis_url) -> Iterator[str]:
    """A links file of two links sharing the partner account, and the environment `status` reads."""
    path = tmp_path / "links.yaml"
    path.write_text(yaml.safe_dump(links_doc(2)), encoding="utf-8")
    for name, value in {"REDIS_URL": redis_url, "CROSSLINK_LINKS": str(path),
                        "CROSSLINK_SPOOL_DIR": str(tmp_path / "spool")}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        yield str(path)
    finally:
        get_settings.cache_clear()


def test_links_shows_a_severed_side_with_why(status_env, redis_client):
    from schemas.links import load_links
    from workers.state import LinkState

    names = [link.name for link in load_links(status_env).links]
    LinkState(redis_client, names[0]).sever("client", "AuthError: token revoked", at=1.0)
    lines = run("links").output.splitlines()
    assert len(lines) == len(names)
    assert "client=" in lines[0] and "[severed: AuthError: token revoked]" in lines[0]
    assert "partner=" in lines[0] and lines[0].count("severed") == 1
    assert "severed" not in lines[1]


def test_status_shows_people_a_table_of_links_and_accounts(status_env, redis_client):
    for _ in range(12):
        AccountLimiter(redis_client, rate_per_s=0).acquire("partner")
    result = run("status")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Links" and lines[1].split()[0] == "link"
    assert any(line.startswith("Accounts") for line in lines)
    assert [line.split()[:3] for line in lines if line.startswith("partner ")] == [["partner", "12", "20,000"]]
    for line in lines:
        with pytest.raises(json.JSONDecodeError):
            json.loads(line)


def test_status_json_prints_the_link_rows_as_before_then_one_line_per_account(status_env, redis_client):
    for _ in range(3):
        AccountLimiter(redis_client, rate_per_s=0).acquire("client-1")
    result = run("status", "--json")
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    links = [row for row in rows if "link" in row]
    assert rows[:len(links)] == links  # links first, every line one JSON object
    assert links == link_status(status_env, get_settings().redis_url, get_settings().spool_dir,
                                settings=Settings.from_env())
    accounts = {row["account"]: row for row in rows[len(links):]}
    assert list(accounts) == ["partner", "client", "client-1"]
    assert (accounts["client-1"]["used_today"], accounts["client-1"]["daily_quota"]) == (3, 20_000)
    assert accounts["client-1"]["forecast_today"] >= 3
    assert set(accounts["partner"]) >= {"used_share", "forecast_share", "reconcile_share", "poll_share",
                                        "audit_share", "poll_period_s"}


def test_status_with_redis_down_names_no_password(status_env, monkeypatch):
    monkeypatch.setenv("REDIS_URL", "redis://:hunter2-pass@127.0.0.1:1/0")
    get_settings.cache_clear()
    for args in (("status",), ("status", "--json")):
        result = run(*args)
        assert result.exit_code == 0, result.output
        assert "unreachable" in result.output and "hunter2" not in result.output


@pytest.mark.parametrize("args, says", [
    (["--scale-links", "10,ten"], "expected numbers of links"),
    (["--scale-links", "-5"], "cannot be negative"),
    (["--quick", "--scale-links", "10"], "for the full run"),
])
def test_bench_refuses_scale_links_it_cannot_run_before_starting_anything(args, says):
    result = run("bench", *args)
    assert result.exit_code == 2 and says in result.output, result.output
