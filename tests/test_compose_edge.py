"""The compose stack's edge: which Compose it needs, what it publishes, and its HTTPS front door.

What a stack publishes decides what the internet can reach. The producer's port also serves
/metrics and /readyz, Flower's a login, the emulator's a control API that acts as anyone: each
must stay on 127.0.0.1 unless the operator's .env says otherwise, and only the https profile's
Caddy listens on every interface, passing on nothing but the webhook paths.

The file states the Compose release it needs (v2.3.0, the first to read the top-level `name:`).
When that was written, the file passed the JSON schema compose-go v1.1.0 carries (the one Compose
v2.3.0 validates with), and v1.0.9's (Compose v2.2.3) refused only `name`. No Compose that old runs
here, so the statement is kept true another way: every key the file uses must be one Compose
v2.3.0 already knew. A key outside the list below fails this test: look up the Compose release
that brought it, raise the stated minimum in docker-compose.yml's header and the README if it is
newer, then add the key here.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.test_compose import _INTERPOLATION, argv, compose, documented, interpolate, option_value, services

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
README = ROOT / "README.md"
CADDYFILE = ROOT / "deploy" / "caddy" / "Caddyfile"
MINIMUM_COMPOSE = "2.3.0"
# Services meant to face the internet, and the profile that alone starts them.
PUBLIC = {"caddy": "https"}

# Keys Compose v2.3.0 (March 2022) reads. Deliberately not the whole specification: newer keys
# (develop, include, post_start, env_file's `required`, depends_on's `restart` or `required`,
# healthcheck's `start_interval`, build's `additional_contexts`, ...) are left out.
TOP_LEVEL = {"name", "services", "volumes", "networks", "secrets", "configs"}
SERVICE = {
    "build", "cap_add", "cap_drop", "command", "configs", "container_name", "depends_on", "deploy",
    "dns", "entrypoint", "env_file", "environment", "expose", "extra_hosts", "healthcheck",
    "hostname", "image", "init", "labels", "logging", "networks", "ports", "profiles", "read_only",
    "restart", "secrets", "security_opt", "shm_size", "stop_grace_period", "stop_signal", "sysctls",
    "tmpfs", "ulimits", "user", "volumes", "working_dir",
}
HEALTHCHECK = {"test", "interval", "timeout", "retries", "start_period", "disable"}
BUILD = {"context", "dockerfile", "args", "target", "labels", "cache_from", "network", "shm_size"}
CONDITIONS = {"service_started", "service_healthy", "service_completed_successfully"}


def with_env(text: str, env: dict[str, str]) -> str:
    """TEXT as compose would make it with ENV in .env (unset variables take their defaults)."""
    def value(match: re.Match[str]) -> str:
        name = match.group("braced") or match.group("bare")
        if match.group(0) == "$$":
            return "$"
        if env.get(name):
            return env[name]
        return interpolate(match.group(0))

    return _INTERPOLATION.sub(value, text)


def published(mapping: Any, env: dict[str, str] | None = None) -> tuple[str, str, str]:
    """(host address, host port, container port) of one `ports` entry; address "" is every interface."""
    if isinstance(mapping, dict):
        return (mapping.get("host_ip", ""), str(mapping.get("published", "")), str(mapping["target"]))
    parts = with_env(str(mapping), env or {}).split("/")[0].split(":")
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    if len(parts) == 2:
        return "", parts[0], parts[1]
    return "", "", parts[0]


def ports(service: str) -> list[Any]:
    return services()[service].get("ports", [])


# --- the Compose it needs -----------------------------------------------------------------------

def test_the_header_and_the_readme_state_the_same_minimum_compose():
    header = "\n".join(line for line in COMPOSE_FILE.read_text(encoding="utf-8").splitlines()
                       if line.startswith("#"))
    for where, text in (("docker-compose.yml", header), ("README.md", README.read_text(encoding="utf-8"))):
        stated = set(re.findall(r"Docker Compose v(\d+\.\d+\.\d+) or later", text))
        assert stated == {MINIMUM_COMPOSE}, f"{where} states {stated or 'no minimum'}"
        assert "docker compose version" in text, f"{where} does not say how to check it"


def test_the_file_needs_compose_v2_for_its_name():
    assert compose()["name"] == "crosslink", "the top-level name is why v1 is out: update the header"


def test_every_key_is_one_compose_2_3_knows():
    document = compose()
    unknown = [f"top level: {key}" for key in document if key not in TOP_LEVEL and not key.startswith("x-")]
    for name, service in services().items():
        unknown += [f"{name}: {key}" for key in service if key not in SERVICE]
        unknown += [f"{name}.healthcheck: {key}" for key in service.get("healthcheck", {}) if key not in HEALTHCHECK]
        build = service.get("build")
        if isinstance(build, dict):
            unknown += [f"{name}.build: {key}" for key in build if key not in BUILD]
        depends = service.get("depends_on", [])
        for other, rule in (depends.items() if isinstance(depends, dict) else []):
            unknown += [f"{name}.depends_on.{other}: {key}" for key in rule if key != "condition"]
            if rule.get("condition") not in CONDITIONS:
                unknown.append(f"{name}.depends_on.{other}: condition {rule.get('condition')}")
        env_files = service.get("env_file", [])
        for entry in [env_files] if isinstance(env_files, str) else env_files:
            if not isinstance(entry, str):
                unknown.append(f"{name}.env_file: {entry} (the long form needs Compose v2.24)")
    assert not unknown, f"newer than Compose v{MINIMUM_COMPOSE}? {unknown}"


def test_the_key_check_can_fail():
    newer = {"develop", "post_start", "models"}
    assert not newer & SERVICE and "start_interval" not in HEALTHCHECK and "include" not in TOP_LEVEL


# --- what the stack publishes -----------------------------------------------------------------

def test_every_published_port_listens_on_loopback_unless_env_says_otherwise():
    seen = []
    for name, service in services().items():
        if name in PUBLIC:
            continue
        for mapping in service.get("ports", []):
            address, host_port, _ = published(mapping)
            assert address == "127.0.0.1", f"{name} publishes {mapping} beyond this host by default"
            seen.append(name)
    assert {"producer", "flower", "emulator"} <= set(seen), "the scan missed a published service"


def test_the_producers_address_and_port_come_from_env():
    (mapping,) = ports("producer")
    port = option_value(argv(services()["producer"]["command"]), "--port")
    assert published(mapping) == ("127.0.0.1", "8080", port)
    env = {"CROSSLINK_PRODUCER_BIND": "0.0.0.0", "CROSSLINK_PRODUCER_PUBLISH": "9080"}
    assert published(mapping, env) == ("0.0.0.0", "9080", port)
    assert set(env) <= documented()


def test_the_emulators_host_port_comes_from_env_and_stays_on_loopback():
    (mapping,) = ports("emulator")
    port = option_value(argv(services()["emulator"]["command"]), "--port")
    assert published(mapping) == ("127.0.0.1", "8100", port)
    assert published(mapping, {"CROSSLINK_EMULATOR_PUBLISH": "18100"}) == ("127.0.0.1", "18100", port)


def test_a_bare_port_would_count_as_every_interface():
    assert published("8080:8080")[0] == "" and published("${X:-5555}:5555")[0] == ""


# --- the https profile --------------------------------------------------------------------------

def caddy() -> dict[str, Any]:
    return services()["caddy"]


def test_the_public_services_run_only_in_their_profile():
    for name, profile in PUBLIC.items():
        assert services()[name]["profiles"] == [profile]


def test_caddy_answers_on_80_and_443_of_every_interface():
    mappings = {published(mapping) for mapping in ports("caddy")}
    assert {("", "80", "80"), ("", "443", "443")} <= mappings


def test_caddy_reads_the_repositorys_caddyfile_and_keeps_its_certificates():
    image, _, tag = caddy()["image"].partition(":")
    assert (image, tag) == ("caddy", "2"), "pin the major: the Caddyfile is written for Caddy 2"
    mounts = [interpolate(volume).split(":") for volume in caddy()["volumes"]]
    assert ["./deploy/caddy/Caddyfile", "/etc/caddy/Caddyfile", "ro"] in mounts
    assert CADDYFILE.exists()
    assert ["caddy-data", "/data"] in [mount[:2] for mount in mounts], "certificates on a throwaway layer"
    assert "caddy-data" in compose()["volumes"]


def test_the_caddyfile_gets_every_variable_it_reads_from_env():
    read = set(re.findall(r"\{\$([A-Z_][A-Z0-9_]*)", CADDYFILE.read_text(encoding="utf-8")))
    assert read == {"CROSSLINK_DOMAIN", "CROSSLINK_TLS_EMAIL"}
    given = caddy()["environment"]
    assert read <= set(given) and read <= documented()
    for name in read:
        assert re.fullmatch(r"\$\{" + name + r"(:-)?\}", given[name]), f"{name} is passed on as set in .env"


def test_the_caddyfile_proxies_to_the_port_the_producer_listens_on():
    port = option_value(argv(services()["producer"]["command"]), "--port")
    upstreams = re.findall(r"reverse_proxy\s+(\S+)", CADDYFILE.read_text(encoding="utf-8"))
    assert upstreams == [f"producer:{port}"]
    assert caddy()["depends_on"]["producer"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("text", ["8080", "127.0.0.1:8080:8080/udp"])
def test_published_reads_both_short_forms(text):
    assert published(text)[-1] == "8080"
