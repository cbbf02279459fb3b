"""Each boundary faked in one place: a private Redis for the session, the Planfix emulator
in-process and on loopback.

Redis is a real redis-server of our own on a free port (never the machine's 6379), flushed
before each test that asks for it.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis
import sqlalchemy as sa

from crosslink.lab.embedded_redis import EmbeddedRedis


@pytest.fixture(scope="session")
def redis_server() -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis().start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """The private server's URL, emptied for this test."""
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.fixture
def redis_client(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        yield client
    finally:
        client.close()


# --- emulator fixtures ---

from planfix.emulator.app import create_app  # noqa: E402
from planfix.emulator.server import EmulatorServer  # noqa: E402
from planfix.emulator.world import World  # noqa: E402

EMULATOR_SEED = {
    "time_scale": 0.001,
    "accounts": {
        "partner": {
            "limits": {"rate_per_s": None, "daily_quota": None},
            "tokens": [
                {"token": "tok-partner-sync", "user": 1, "scopes": "all"},
                {"token": "tok-partner-readonly", "user": 2, "scopes": ["task_readonly", "comment_readonly"]},
            ],
            "users": [
                {"id": 1, "name": "Crosslink Robot", "email": "sync@partner.example", "role": "Robot"},
                {"id": 2, "name": "Pavel Lead", "email": "pavel@partner.example"},
                {"id": 3, "name": "Olga Dev", "email": "olga@partner.example"},
            ],
            "groups": [{"id": 7, "name": "Developers"}],
            "processes": [{
                "id": 1, "name": "Partner delivery",
                "statuses": [{"id": 1, "name": "New"}, {"id": 2, "name": "In work"},
                             {"id": 3, "name": "Review"}, {"id": 4, "name": "Closed"}],
            }],
            "projects": [{"id": 10, "name": "ACME rollout"}, {"id": 11, "name": "Internal"}],
            "templates": [{"id": 50, "name": "Client request", "processId": 1}],
            "custom_fields": [{"id": 100, "name": "Budget", "type": 1},
                              {"id": 101, "name": "Channel", "type": 8, "enumValues": ["mail", "phone"]}],
            "tasks": [{"id": 1, "name": "Kick-off", "processId": 1, "status": 1, "project": 10,
                       "assignees": ["user:2"]}],
        },
        "client": {
            "limits": {"rate_per_s": None, "daily_quota": None},
            "tokens": [{"token": "tok-client-sync", "user": 1, "scopes": "all"}],
            "users": [
                {"id": 1, "name": "Sync Bot", "email": "sync@client.example", "role": "Robot"},
                {"id": 5, "name": "Irina Manager", "email": "irina@client.example"},
            ],
            "processes": [{
                "id": 3, "name": "Client requests",
                "statuses": [{"id": 11, "name": "Submitted"}, {"id": 12, "name": "Accepted"},
                             {"id": 13, "name": "Done"}],
                "transitions": {11: [12], 12: [13]},
            }],
            "projects": [{"id": 20, "name": "Vendor work"}],
            "custom_fields": [{"id": 200, "name": "Cost", "type": 1}],
        },
    },
}


@pytest.fixture
def emulator_world():
    """A fresh two-account World (partner, client), limits off, delays scaled by 0.001."""
    import copy

    world = World.from_config(copy.deepcopy(EMULATOR_SEED))
    try:
        yield world
    finally:
        world.close()


@pytest.fixture
def emulator_app_client(emulator_world):
    """Starlette TestClient on the emulator app for emulator_world."""
    from starlette.testclient import TestClient

    with TestClient(create_app(emulator_world)) as client:
        yield client


@pytest.fixture
def emulator_server(emulator_world):
    """emulator_world served on loopback (a free port), stopped after the test."""
    with EmulatorServer(emulator_world) as server:
        yield server


# The machine's PostgreSQL server (trust auth): tests that need one make a database of their own.
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/"


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database of the test's own, dropped after it; skipped where no server answers."""
    name = f"crosslink_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES + "postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        pytest.skip(f"no PostgreSQL at 127.0.0.1:5432 ({type(exc).__name__})")
    try:
        yield POSTGRES + name
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
