"""deploy/monitoring as Prometheus, promtool and Grafana read it, against what Crosslink exposes.

An alert rule fails silently: a misspelt metric name selects nothing and never fires, and a rule
over a gauge every worker serves too fires once per process. So here promtool checks the
Prometheus configuration, the rules and their unit tests, and parses every dashboard query; each
metric a rule or a panel names is looked up in a real scrape of the producer (its counters and
the gauges it reads from the test Redis); each alert reads only what the producer alone serves,
so it gives one series per link, side or account; and the compose `monitoring` profile mounts
these very files. promtool comes with Debian's `prometheus` package; without it those checks
are skipped, saying so.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.test_compose import DOCKER_TIMEOUT_S, argv, compose, host_path, interpolate, services
from tests.test_receiver import client, config  # noqa: F401 - the producer's fixtures
from workers.heartbeat import record_beat
from workers.state import LinkState

ROOT = Path(__file__).resolve().parents[1]
MONITORING = ROOT / "deploy" / "monitoring"
PROMETHEUS_YML = MONITORING / "prometheus.yml"
ALERTS = MONITORING / "alerts.yml"
ALERT_TESTS = MONITORING / "alerts.test.yml"
GRAFANA = MONITORING / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "crosslink.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "crosslink.yml"
GUIDE = ROOT / "docs" / "monitoring.md"
PROMTOOL = shutil.which("promtool")
# promtool reads a few small files; this only stops a hang.
PROMTOOL_TIMEOUT_S = 60
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool is not installed (Debian: apt-get install prometheus): "
    "deploy/monitoring's configuration, rules and dashboard queries are not checked")

# Series Prometheus makes itself for every target.
PROMETHEUS_OWN = {"up"}
# Sample names each metric type adds to its family's name in the exposition.
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
            "summary": ("_count", "_sum", "_created", ""), "gauge": ("",), "info": ("_info",),
            "unknown": ("",)}
# Words of PromQL that are not metric names (functions are told by the "(" after them).
PROMQL_WORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}
# Grafana's template variables, as a rule file must have them to be parsed by promtool.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$link": ".*", "$account": ".*"}


def promtool(*args: str) -> subprocess.CompletedProcess:
    assert PROMTOOL is not None
    return subprocess.run([PROMTOOL, *args], cwd=MONITORING, capture_output=True, text=True,
                          timeout=PROMTOOL_TIMEOUT_S)


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def dashboard_queries() -> list[str]:
    """Every PromQL query of the dashboard's panels (rows hold none when not collapsed)."""
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def variable_queries() -> list[str]:
    return [variable["query"]["query"] for variable in dashboard()["templating"]["list"]]


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL EXPR selects (or Grafana's label_values(metric, label) names)."""
    grafana = re.fullmatch(r"\s*label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*,\s*\w+\s*\)\s*", expr)
    if grafana:
        return {grafana.group(1)}
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values
    expr = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", expr)  # matchers, ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    names = set()
    for word in re.finditer(r"(?<![\w.$])[A-Za-z_:][A-Za-z0-9_:]*", expr):
        if expr[word.end():].lstrip().startswith("(") or word.group(0).lower() in PROMQL_WORDS:
            continue  # a function or an aggregation
        names.add(word.group(0))
    return names


def test_metric_names_finds_the_names_and_only_them():
    """The check below is only as good as this: a name it missed would never be looked up."""
    assert metric_names('sum by (link, le) (rate(foo_seconds_bucket{link=~"$link",x="a b"}[$__rate_interval]))'
                        ' > 0.9 * bar and on(account) baz > 1e3') == {"foo_seconds_bucket", "bar", "baz"}
    assert metric_names("label_values(crosslink_side_severed, link)") == {"crosslink_side_severed"}
    assert metric_names('up{job="crosslink-producer"} == 0') == {"up"}


# --- promtool -----------------------------------------------------------------------------------

@needs_promtool
def test_promtool_accepts_the_prometheus_configuration_and_its_rule_files():
    checked = promtool("check", "config", PROMETHEUS_YML.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "1 rule files found" in checked.stdout


@needs_promtool
def test_promtool_accepts_the_alert_rules():
    checked = promtool("check", "rules", ALERTS.name)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"{len(alert_rules())} rules found" in checked.stdout


@needs_promtool
def test_the_alert_rules_pass_their_unit_tests():
    tested = promtool("test", "rules", ALERT_TESTS.name)
    assert tested.returncode == 0, tested.stdout + tested.stderr


def test_every_alert_has_a_unit_test():
    tests = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]
    firing = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
              if case.get("exp_alerts")}
    assert firing == {rule["alert"] for rule in alert_rules()}


@needs_promtool
def test_every_dashboard_query_is_promql(tmp_path):
    """promtool parses each query as a recording rule's, Grafana's variables filled in."""
    def filled(expr: str) -> str:
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable this test does not know: {expr}"
        return expr

    rules = [{"record": f"crosslink_dashboard:query{i}", "expr": filled(expr)}
             for i, expr in enumerate(dashboard_queries())]
    path = tmp_path / "dashboard-queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}), encoding="utf-8")
    checked = promtool("check", "rules", str(path))
    assert checked.returncode == 0, checked.stdout + checked.stderr


# --- the names are Crosslink's --------------------------------------------------------------------

@pytest.fixture
def exposition(client, redis_client) -> str:  # noqa: F811 - the producer fixture
    """A real scrape of the producer, with Redis holding what makes its optional gauges appear (a
    link's last run, a worker's beat). Its process registry holds every counter and histogram
    of crosslink.base.metrics too, with their types, even those a worker alone moves."""
    LinkState(redis_client, "alpha").mark_synced(time.time() - 30)
    record_beat(redis_client, "celery@scraped", time.time())
    response = client.get("/metrics")
    assert response.status_code == 200
    return response.text


def exposed_names(text: str, types: tuple[str, ...] = tuple(SUFFIXES)) -> set[str]:
    """The sample names TEXT's families of TYPES expose (those without a sample so far too)."""
    return {family.name + suffix for family in text_string_to_metric_families(text)
            if family.type in types for suffix in SUFFIXES[family.type]}


def test_every_metric_the_rules_and_the_dashboard_name_is_one_crosslink_exposes(exposition):
    exposed = exposed_names(exposition) | PROMETHEUS_OWN
    assert {"crosslink_side_severed", "crosslink_link_planfix_requests_total",
            "crosslink_sync_run_duration_seconds_bucket"} <= exposed
    for source, queries in (("alerts.yml", [rule["expr"] for rule in alert_rules()]),
                            ("the dashboard", dashboard_queries() + variable_queries())):
        named = set().union(*(metric_names(query) for query in queries))
        assert named, f"no metric found in {source}: the scan is broken"
        assert sorted(named - exposed) == [], f"{source} names metrics Crosslink does not expose"


def test_each_alert_reads_only_what_the_producer_alone_serves(exposition):
    """Gauges the producer reads from Redis come once per deployment: an alert on them gives one
    series per link, side or account with no `max by`. A worker's counters come once per replica."""
    gauges = exposed_names(exposition, ("gauge",)) | PROMETHEUS_OWN
    for rule in alert_rules():
        assert metric_names(rule["expr"]) <= gauges, rule["alert"]
        assert not re.search(r"\b(?:max|min|sum|avg)\s*(?:by|without)?\s*\(", rule["expr"]), rule["alert"]


def test_the_monitoring_guide_names_every_alert_and_only_metrics_crosslink_exposes(exposition):
    guide = GUIDE.read_text(encoding="utf-8")
    assert {rule["alert"] for rule in alert_rules()} == set(re.findall(r"^\| `(Crosslink\w+)` \|", guide, re.MULTILINE))
    named = {name for expr in re.findall(r"`([^`]*crosslink_[^`]*)`", guide) for name in metric_names(expr)
             if name.startswith("crosslink_")}
    assert {"crosslink_side_severed", "crosslink_workers_beating"} <= named, "the scan finds no metrics"
    assert sorted(named - exposed_names(exposition)) == []


# --- what compose runs ------------------------------------------------------------------------

def scrape_configs() -> dict[str, dict[str, Any]]:
    loaded = yaml.safe_load(PROMETHEUS_YML.read_text(encoding="utf-8"))
    return {job["job_name"]: job for job in loaded["scrape_configs"]}


def test_the_monitoring_profile_runs_prometheus_and_grafana_on_loopback():
    for name, port in (("prometheus", 9090), ("grafana", 3000)):
        service = services()[name]
        assert service["profiles"] == ["monitoring"], name
        assert [interpolate(str(published)) for published in service["ports"]] == [f"127.0.0.1:{port}:{port}"]


def test_the_profile_mounts_these_files_where_each_service_reads_them():
    prometheus, grafana = services()["prometheus"], services()["grafana"]
    config_file = next(word.split("=", 1)[1] for word in argv(prometheus["command"])
                       if word.startswith("--config.file="))
    assert host_path(prometheus, config_file) == ROOT / "deploy/monitoring/prometheus.yml"
    assert host_path(prometheus, str(Path(config_file).parent / "alerts.yml")) == ALERTS
    assert host_path(grafana, "/etc/grafana/provisioning/datasources/prometheus.yml") == DATASOURCES
    assert host_path(grafana, "/etc/grafana/provisioning/dashboards/crosslink.yml") == DASHBOARD_PROVIDERS
    providers = yaml.safe_load(DASHBOARD_PROVIDERS.read_text(encoding="utf-8"))["providers"]
    assert [host_path(grafana, f"{provider['options']['path']}/crosslink.json") for provider in providers] == [DASHBOARD]
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert host_path(grafana, home) == DASHBOARD
    for volume in ("prometheus-data", "grafana-data"):
        assert volume in compose()["volumes"]


def test_prometheus_scrapes_the_producer_and_the_workers_where_compose_serves_them():
    jobs = scrape_configs()
    producer_words = argv(services()["producer"]["command"])
    producer_port = producer_words[producer_words.index("--port") + 1]
    assert jobs["crosslink-producer"]["static_configs"] == [{"targets": [f"producer:{producer_port}"]}]
    worker = services()["worker"]
    [discovery] = jobs["crosslink-worker"]["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["type"] == "A"
    assert str(discovery["port"]) == str(worker["environment"]["CROSSLINK_WORKER_METRICS_PORT"])
    assert str(discovery["port"]) in [str(port) for port in worker["expose"]]
    # The rules' job label is the producer's job name.
    assert all("crosslink-worker" not in rule["expr"] for rule in alert_rules())
    assert any('job="crosslink-producer"' in rule["expr"] for rule in alert_rules())


def test_grafana_reads_the_prometheus_service_under_the_uid_the_dashboard_names():
    [datasource] = yaml.safe_load(DATASOURCES.read_text(encoding="utf-8"))["datasources"]
    assert datasource["url"] == "http://prometheus:9090" and "prometheus" in services()
    named = {panel["datasource"]["uid"] for panel in dashboard()["panels"] if "datasource" in panel}
    named |= {variable["datasource"]["uid"] for variable in dashboard()["templating"]["list"]}
    assert named == {datasource["uid"]}


def test_docker_compose_accepts_the_monitoring_profile():
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine: `docker compose --profile monitoring config -q` not run")
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S)
    if plugin.returncode != 0:
        pytest.skip("this docker client has no compose plugin: `docker compose --profile monitoring config -q` not run")
    result = subprocess.run([docker, "compose", "--profile", "monitoring", "config", "-q"], cwd=ROOT,
                            capture_output=True, text=True, timeout=DOCKER_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
