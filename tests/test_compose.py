"""docker-compose.yml and the demo it runs, checked on a machine without Docker.

A compose file fails late: a misspelt subcommand or option shows up only when the container
starts, a variable missing from .env.example only when an operator wonders what it does, and a
demo copy that drifted from the packaged example only when the demo stops syncing. So every
command a service runs is run here with --help through this venv, every ${VAR} must be documented,
the services that must not be scaled or evicted are checked, every process that opens the journal
is pointed at the postgres service, and the demo files are compared with what they copy.
`docker compose config` runs too where a Docker client exists.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import sqlalchemy as sa
import yaml

from crosslink.base.settings import Settings
from crosslink.lab.stack import integration_token
from schemas.links import lint_file

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
DEMO = ROOT / "deploy" / "demo"
DOCKERFILE = ROOT / "Dockerfile"
PYPROJECT = ROOT / "pyproject.toml"
EXAMPLES = ROOT / "crosslink" / "examples"
# Importing the app and parsing arguments takes well under a second; this only stops a hang.
HELP_TIMEOUT_S = 60
# `docker compose config` only reads files, but a cold Docker client can be slow to start.
DOCKER_TIMEOUT_S = 60

# Compose interpolation: ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}
# and bare $VAR; "$$" is a literal dollar sign.
_INTERPOLATION = re.compile(
    r"\$\$|\$\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|\$(?P<bare>[A-Za-z_][A-Za-z0-9_]*)")
# A documented variable: an assignment in .env.example, set or commented out ("# NAME=").
_DOCUMENTED = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.MULTILINE)
# Where the code reads a variable by its literal name.
_READ_IN_CODE = re.compile(r"""(?:environ|env)(?:\.get\(|\[)\s*["']([A-Z][A-Z0-9_]*)["']""")
CODE_PACKAGES = ("crosslink", "planfix", "producers", "workers", "schemas")


def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def services() -> dict[str, dict[str, Any]]:
    return compose()["services"]


def documented() -> set[str]:
    return set(_DOCUMENTED.findall(ENV_EXAMPLE.read_text(encoding="utf-8")))


def used_variables(text: str) -> set[str]:
    return {match.group("braced") or match.group("bare")
            for match in _INTERPOLATION.finditer(text) if match.group(0) != "$$"}


def interpolate(text: str) -> str:
    """TEXT as compose would make it with no .env: defaults taken, unset variables empty."""
    def value(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        takes_default = (match.group("op") or "").endswith("-")
        return (match.group("arg") or "") if takes_default else ""

    return _INTERPOLATION.sub(value, text)


def argv(command: str | list[str]) -> list[str]:
    if isinstance(command, list):
        return [interpolate(part) for part in command]
    return shlex.split(interpolate(command))


def program_commands() -> list[tuple[str, list[str]]]:
    """(service, argv) for every service command that runs `crosslink` or `celery`."""
    found = []
    for name, service in services().items():
        if "command" in service:
            words = argv(service["command"])
            if words and words[0] in ("crosslink", "celery"):
                found.append((name, words))
    return found


def as_module(words: list[str]) -> list[str]:
    """The venv's equivalent of a container command: crosslink.cli or celery as a module."""
    module = {"crosslink": "crosslink.cli", "celery": "celery"}[words[0]]
    return [sys.executable, "-m", module, *words[1:]]


def run_help(words: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([*as_module(words), "--help"], cwd=ROOT, capture_output=True, text=True,
                          timeout=HELP_TIMEOUT_S)


def option_names(words: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in words if word.startswith("-")]


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository file a bind mount of SERVICE puts at CONTAINER_PATH (no .env set)."""
    for volume in service.get("volumes", []):
        source, target = interpolate(volume).split(":")[:2]
        if source.startswith(".") and container_path.startswith(target.rstrip("/") + "/"):
            return ROOT / source / container_path[len(target.rstrip("/")) + 1:]
        if source.startswith(".") and container_path == target:
            return ROOT / source
    return None


def option_value(words: list[str], option: str) -> str:
    return words[words.index(option) + 1]


# --- every command parses ---------------------------------------------------------------------

COMMANDS = program_commands()


def test_services_run_crosslink_and_celery():
    by_service = dict(COMMANDS)
    for service in ("producer", "worker", "beat", "emulator", "flower"):
        assert by_service[service][:2] == ["crosslink", service]


@pytest.mark.parametrize("service,words", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_command_parses_with_help(service, words):
    result = run_help(words)
    assert result.returncode == 0, f"{service}: {shlex.join(words)} --help\n{result.stdout}{result.stderr}"
    assert "Usage:" in result.stdout


def test_the_help_run_catches_a_misspelt_subcommand_or_option():
    assert run_help(["crosslink", "producr", "--port", "8080"]).returncode != 0
    assert run_help(["crosslink", "producer", "--prot", "8080"]).returncode != 0


def test_options_the_worker_passes_on_to_celery_are_celery_worker_options():
    """`crosslink worker` hands options it does not know to `celery worker` unchecked, so --help
    would pass a misspelt one: each must be the command's own or a celery worker option."""
    from celery.bin.worker import worker as celery_worker

    from crosslink.cli import worker

    known = {opt for param in [*worker.params, *celery_worker.params] for opt in param.opts}
    words = dict(COMMANDS)["worker"]
    assert set(option_names(words[2:])) <= known, option_names(words[2:])
    assert "--concurency" not in known  # the check can fail


def test_flower_options_are_flower_options():
    """Flower takes its options as free arguments, so --help accepts any: name them against its
    option registry."""
    from flower.options import options

    known = {"--" + name.replace("_", "-") for name in options}
    words = dict(COMMANDS)["flower"]
    assert set(option_names(words[words.index("flower") + 1:])) <= known
    assert "--basic-auth" in option_names(words) and "--basic-aut" not in known


# --- configuration ----------------------------------------------------------------------------

def test_every_compose_variable_is_documented_in_env_example():
    used = used_variables(COMPOSE.read_text(encoding="utf-8"))
    assert used, "docker-compose.yml reads no variables: the parser is broken"
    missing = sorted(used - documented())
    assert not missing, f"add to .env.example: {missing}"


def test_every_variable_the_code_reads_is_documented_in_env_example():
    read = {name for package in CODE_PACKAGES for path in (ROOT / package).rglob("*.py")
            for name in _READ_IN_CODE.findall(path.read_text(encoding="utf-8"))}
    assert {"REDIS_URL", "CROSSLINK_LINKS"} <= read, "the scan no longer finds what settings.py reads"
    missing = sorted(read - documented())
    assert not missing, f"add to .env.example: {missing}"


def test_compose_defaults_are_the_codes_defaults():
    """A default written in compose that differs from settings.py would quietly change behaviour
    between `crosslink run` and the containers."""
    environment = compose()["x-settings"]
    from_compose = Settings.from_env({name: interpolate(str(value)) for name, value in environment.items()})
    expected = Settings.from_env({"REDIS_URL": from_compose.redis_url, "CROSSLINK_LINKS": from_compose.links_path})
    assert from_compose == expected


def test_redis_keeps_its_keys_append_only_and_never_evicts():
    redis = services()["redis"]
    words = argv(redis["command"])
    pairs = dict(zip(words, words[1:]))
    assert pairs.get("--appendonly") == "yes"
    assert pairs.get("--maxmemory-policy") == "noeviction"
    assert any(str(volume).endswith(":/data") for volume in redis["volumes"]), "AOF on a throwaway layer"
    assert "redis-cli" in redis["healthcheck"]["test"] and "ping" in redis["healthcheck"]["test"]


def test_worker_scales():
    worker = services()["worker"]
    for key in ("container_name", "ports", "hostname"):
        assert key not in worker, f"worker has {key}: `--scale worker=N` replicas would clash"


def healthcheck(service: str) -> list[str]:
    """The words of SERVICE's health check command (CMD as given; CMD-SHELL as sh would split it)."""
    kind, *words = services()[service]["healthcheck"]["test"]
    assert kind in ("CMD", "CMD-SHELL"), kind
    return argv(words[0]) if kind == "CMD-SHELL" else argv(words)


@pytest.mark.parametrize("service", ["producer", "worker"])
def test_healthchecks_are_crosslink_health_and_parse(service):
    words = healthcheck(service)
    assert words[:3] == ["crosslink", "health", service]
    result = run_help(words)
    assert result.returncode == 0, f"{shlex.join(words)} --help\n{result.stdout}{result.stderr}"


def test_producer_healthcheck_probes_the_port_it_listens_on():
    producer = services()["producer"]
    port = option_value(argv(producer["command"]), "--port")
    assert option_value(healthcheck("producer"), "--url") == f"http://127.0.0.1:{port}"
    assert all(interpolate(mapping).endswith(f":{port}") for mapping in producer["ports"])
    assert option_value(argv(producer["command"]), "--host") == "0.0.0.0"


def test_worker_healthcheck_asks_for_its_own_replicas_heartbeat():
    """Without --worker any replica's beat would do, and a hung replica would look healthy. A
    worker started without -n is the Celery node celery@<hostname>, and Docker sets HOSTNAME."""
    assert "-n" not in argv(services()["worker"]["command"])
    assert option_value(healthcheck("worker"), "--worker") == "celery@$HOSTNAME"


def test_worker_metrics_listen_on_the_container_network_at_the_port_exposed():
    worker = services()["worker"]
    environment = {name: interpolate(str(value)) for name, value in worker["environment"].items()}
    settings = Settings.from_env(environment)
    assert (settings.worker_metrics_host, settings.redis_url) == ("0.0.0.0", "redis://redis:6379/0")
    assert [str(port) for port in worker["expose"]] == [str(settings.worker_metrics_port)]
    assert settings.worker_metrics_port != 0


# --- the journal's database -------------------------------------------------------------------

# Crosslink commands that never open the journal: the emulator is Planfix's stand-in, Flower reads
# the workers' task events only.
NO_JOURNAL = ("emulator", "flower")
JOURNAL_SERVICES = [name for name, words in COMMANDS if words[0] == "crosslink" and words[1] not in NO_JOURNAL]


def environment(service: str) -> dict[str, str]:
    """SERVICE's environment as compose would give it with no .env."""
    return {name: interpolate(str(value)) for name, value in services()[service].get("environment", {}).items()}


def test_postgres_keeps_its_data_on_a_volume_and_stays_off_the_host():
    postgres = services()["postgres"]
    image, _, tag = postgres["image"].partition(":")
    assert image == "postgres" and tag.split(".")[0].isdigit(), "pin the major: its data directory is per major"
    mounts = [interpolate(volume).split(":")[:2] for volume in postgres["volumes"]]
    assert ["postgres-data", "/var/lib/postgresql/data"] in mounts
    assert "postgres-data" in compose()["volumes"]
    assert "ports" not in postgres, "the journal's database is for the compose network only"


def test_postgres_is_healthy_only_once_its_database_takes_connections():
    words, database = healthcheck("postgres"), environment("postgres")
    assert words[0] == "pg_isready"
    options = dict(zip(words[1:], words[2:]))
    assert options.get("-h") == "127.0.0.1", "over TCP: the image's init server listens on the socket alone"
    assert (options.get("-U"), options.get("-d")) == (database["POSTGRES_USER"], database["POSTGRES_DB"])


def test_postgres_password_comes_from_env_with_a_local_default():
    raw = services()["postgres"]["environment"]["POSTGRES_PASSWORD"]
    assert used_variables(raw) == {"CROSSLINK_POSTGRES_PASSWORD"}
    assert interpolate(raw), "without .env the local stack still needs a password"


def test_the_journal_is_opened_by_the_crosslink_services():
    assert {"producer", "worker", "beat"} <= set(JOURNAL_SERVICES)


@pytest.mark.parametrize("service", JOURNAL_SERVICES)
def test_each_crosslink_process_opens_the_journal_in_the_postgres_service(service):
    url = sa.engine.make_url(Settings.from_env(environment(service)).journal_url)
    database = environment("postgres")
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "postgres", 5432)
    assert (url.username, url.database) == (database["POSTGRES_USER"], database["POSTGRES_DB"])
    assert url.password == database["POSTGRES_PASSWORD"], "the password must survive the URL (no quoting needed)"
    assert services()[service]["depends_on"]["postgres"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("service", ["redis", "postgres", "flower", "emulator"])
def test_services_that_never_open_the_journal_are_not_given_its_password(service):
    assert "CROSSLINK_JOURNAL_URL" not in environment(service)


def test_the_image_installs_the_journals_database_driver():
    """The Dockerfile installs the package with its dependencies (no extras), so the driver the
    URL names must be one of them; creating an engine imports it without connecting."""
    dependencies = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["project"]["dependencies"]
    assert any(re.match(r"psycopg(\[|>|=|$)", requirement) for requirement in dependencies), dependencies
    dockerfile = DOCKERFILE.read_text(encoding="utf-8")
    assert "pip wheel --no-cache-dir --wheel-dir /wheels ." in dockerfile
    assert re.search(r"pip install .*--find-links /wheels crosslink\b", dockerfile)
    engine = sa.create_engine(Settings.from_env(environment("worker")).journal_url)
    assert engine.dialect.driver == "psycopg"
    engine.dispose()


# --- the demo ---------------------------------------------------------------------------------

def load(path: Path) -> dict[str, Any]:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def demo_env() -> dict[str, str]:
    lines = (DEMO / "demo.env").read_text(encoding="utf-8").splitlines()
    return dict(line.split("=", 1) for line in lines if line.strip() and not line.startswith("#"))


def test_demo_seed_is_the_packaged_seed_with_scenarios_calling_the_producer_service():
    port = option_value(argv(services()["producer"]["command"]), "--port")
    example, demo = load(EXAMPLES / "emulator.yaml"), load(DEMO / "emulator.yaml")
    for account in demo["accounts"].values():
        for scenario in account["scenarios"]:
            url = urlsplit(scenario["url"])
            assert url.netloc == f"producer:{port}", scenario["url"]
            scenario["url"] = url._replace(netloc="127.0.0.1:8080").geturl()
    assert demo == example


def test_demo_links_are_the_packaged_links_pointing_at_the_emulator_service():
    emulator = services()["emulator"]
    port = option_value(argv(emulator["command"]), "--port")
    example, demo = load(EXAMPLES / "links.yaml"), load(DEMO / "links.yaml")
    for link in demo["links"]:
        for side in link["sides"].values():
            url = urlsplit(side["base_url"])
            assert url.netloc == f"emulator:{port}", side["base_url"]
            side["base_url"] = url._replace(netloc="127.0.0.1:8100").geturl()
    assert demo == example
    assert lint_file(DEMO / "links.yaml") == []


def test_demo_files_are_the_ones_compose_mounts():
    every = services()
    links = host_path(every["producer"], interpolate(every["producer"]["environment"]["CROSSLINK_LINKS"]))
    assert links == DEMO / "links.yaml"
    seed = host_path(every["emulator"], option_value(argv(every["emulator"]["command"]), "--config"))
    assert seed is not None and seed.resolve() == (DEMO / "emulator.yaml").resolve()
    for name in ("producer", "worker"):
        assert [ROOT / interpolate(path) for path in every[name]["env_file"]] == [DEMO / "demo.env"]


def test_demo_env_holds_the_seeds_tokens_and_secrets():
    """The producer must accept what the seed's scenarios send, and the workers act as the robot."""
    env, seed = demo_env(), load(DEMO / "emulator.yaml")
    names = set()
    for link in load(DEMO / "links.yaml")["links"]:
        for side_name, side in link["sides"].items():
            account = side["account"]
            names |= {side["token_env"], side["webhook_secret_env"]}
            assert env[side["token_env"]] == integration_token(seed, account, side["integration_user"])
            for scenario in seed["accounts"][account]["scenarios"]:
                assert urlsplit(scenario["url"]).path == f"/hooks/{link['name']}/{side_name}"
                sent = (scenario.get("headers") or {}).get("X-Crosslink-Secret") \
                    or (scenario.get("basic_auth") or {}).get("password")
                assert sent == env[side["webhook_secret_env"]], scenario["name"]
    assert set(env) == names, "demo.env holds only the demo link's tokens and secrets"


# --- Docker itself, where there is one ----------------------------------------------------------

@pytest.mark.parametrize("profile", [[], ["--profile", "demo"], ["--profile", "https"]],
                         ids=["default", "demo", "https"])
def test_docker_compose_accepts_the_file(profile):
    docker = shutil.which("docker")
    if docker is None:
        pytest.skip("no docker client on this machine: `docker compose config -q` not run")
    plugin = subprocess.run([docker, "compose", "version"], capture_output=True, text=True,
                            timeout=DOCKER_TIMEOUT_S)
    if plugin.returncode != 0:
        pytest.skip("this docker client has no compose plugin: `docker compose config -q` not run")
    result = subprocess.run([docker, "compose", *profile, "config", "-q"], cwd=ROOT, capture_output=True,
                            text=True, timeout=DOCKER_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
