"""`crosslink run --config links.yaml` starts a producer and a worker that sync real accounts
(here: the emulator over loopback), configured only through the environment and the file."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from crosslink.embedded_redis import EmbeddedRedis, free_port
from crosslink.stack import integration_token
from planfix.emulator.server import EmulatorServer
from planfix.emulator.world import World
from producers.scenarios import scenarios_for_side
from tests.e2e.conftest import eventually, seeds

pytestmark = pytest.mark.e2e


def test_run_starts_producer_and_worker_that_sync(tmp_path):
    emulator_seed, links = seeds()
    world = World.from_config(emulator_seed)
    env = {k: v for k, v in os.environ.items()}
    port = free_port()
    with EmulatorServer(world) as emulator, EmbeddedRedis() as redis_server:
        for side_name, side in links["links"][0]["sides"].items():
            side["base_url"] = emulator.base_url(side["account"])
            env[side["token_env"]] = integration_token(emulator_seed, side["account"], side["integration_user"])
            env[side["webhook_secret_env"]] = secrets.token_urlsafe(16)
            world.set_scenarios(side["account"], scenarios_for_side(
                f"http://127.0.0.1:{port}", "demo", side_name, side["webhook_auth"],
                env[side["webhook_secret_env"]], side["integration_user"]))
        path = tmp_path / "links.yaml"
        path.write_text(yaml.safe_dump(links), encoding="utf-8")
        env.update(REDIS_URL=redis_server.url, CROSSLINK_PRODUCER_PORT=str(port),
                   CROSSLINK_RATE_PER_S="20", CROSSLINK_TIME_SCALE="0.01")
        service = subprocess.Popen([sys.executable, "-m", "crosslink.cli", "run", "--config", str(path), "-c", "1"],
                                   env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True, cwd=tmp_path)  # beat keeps its file there
        try:
            eventually(lambda: _alive(port), timeout=30, what="the producer to answer")
            number = world.create_task("client", {"name": "Via crosslink run", "processId": 3,
                                                  "project": {"id": 20}}, author=6)
            eventually(lambda: any((t.get("sourceDataVersion") or "") == f"crosslink:demo:client:{number}"
                                   for t in world.dump_tasks("partner")), timeout=60, what="the mirror")
        finally:
            os.killpg(service.pid, signal.SIGTERM)
            try:
                output, _ = service.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(service.pid, signal.SIGKILL)
                output, _ = service.communicate()
        for side in links["links"][0]["sides"].values():
            assert env[side["token_env"]] not in output and env[side["webhook_secret_env"]] not in output
        world.close()


def _alive(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.2)
        return False
