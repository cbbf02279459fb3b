"""`crosslink run --config links.yaml` starts a producer and a worker that sync real accounts
(here: the emulator over loopback), configured only through the environment and the file."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from crosslink.lab.embedded_redis import EmbeddedRedis, free_port
from crosslink.lab.stack import integration_token
from planfix.emulator.server import EmulatorServer
from planfix.emulator.world import World
from producers.scenarios import BASIC_USER, SECRET_HEADER, scenarios_for_side
from tests.e2e.conftest import eventually, seeds

pytestmark = pytest.mark.e2e


class RunCommand:
    """`crosslink run` as an operator starts it, on the emulator, with fresh random tokens and
    secrets (so any of them found in the output is a leak, not a coincidence)."""

    def __init__(self, tmp_path, log_level: str = "INFO"):
        emulator_seed, self.links = seeds()
        for account in emulator_seed["accounts"].values():
            for token in account["tokens"]:
                token["token"] = "tok-" + secrets.token_urlsafe(16)
        self.seed = emulator_seed
        self.world = World.from_config(emulator_seed)
        self.env = dict(os.environ)
        self.port = free_port()
        self.tmp_path = tmp_path
        self.log_level = log_level
        self.output = ""

    @property
    def sides(self):
        return self.links["links"][0]["sides"]

    def secrets(self) -> list[str]:
        return [self.env[side[key]] for side in self.sides.values() for key in ("token_env", "webhook_secret_env")]

    def run(self, story) -> str:
        """Start the services, play STORY(self), stop them; the whole output of every process."""
        with EmulatorServer(self.world) as emulator, EmbeddedRedis() as redis_server:
            for side_name, side in self.sides.items():
                side["base_url"] = emulator.base_url(side["account"])
                self.env[side["token_env"]] = integration_token(self.seed, side["account"], side["integration_user"])
                self.env[side["webhook_secret_env"]] = secrets.token_urlsafe(16)
                self.world.set_scenarios(side["account"], scenarios_for_side(
                    f"http://127.0.0.1:{self.port}", "demo", side_name, side["webhook_auth"],
                    self.env[side["webhook_secret_env"]], side["integration_user"]))
            path = self.tmp_path / "links.yaml"
            path.write_text(yaml.safe_dump(self.links), encoding="utf-8")
            self.env.update(REDIS_URL=redis_server.url, CROSSLINK_PRODUCER_PORT=str(self.port),
                            CROSSLINK_RATE_PER_S="20", CROSSLINK_TIME_SCALE="0.01",
                            CROSSLINK_LOG_LEVEL=self.log_level)
            service = subprocess.Popen([sys.executable, "-m", "crosslink.cli", "run", "--config", str(path),
                                        "-c", "1"], env=self.env, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                       cwd=self.tmp_path)  # beat keeps its file there
            try:
                eventually(lambda: _alive(self.port), timeout=30, what="the producer to answer")
                story(self)
            finally:
                os.killpg(service.pid, signal.SIGTERM)
                try:
                    self.output, _ = service.communicate(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(service.pid, signal.SIGKILL)
                    self.output, _ = service.communicate()
        self.world.close()
        return self.output

    def mirrored(self, side: str, number: int) -> bool:
        other = "partner" if side == "client" else "client"
        return any((t.get("sourceDataVersion") or "") == f"crosslink:demo:{side}:{number}"
                   for t in self.world.dump_tasks(other))

    def hook(self, side: str, body: bytes, headers: dict[str, str]) -> int:
        return httpx.post(f"http://127.0.0.1:{self.port}/hooks/demo/{side}", content=body,
                          headers=headers, timeout=10).status_code


def test_run_starts_producer_and_worker_that_sync(tmp_path):
    command = RunCommand(tmp_path)

    def story(run: RunCommand) -> None:
        number = run.world.create_task("client", {"name": "Via crosslink run", "processId": 3,
                                                  "project": {"id": 20}}, author=6)
        eventually(lambda: run.mirrored("client", number), timeout=60, what="the mirror")

    output = command.run(story)
    assert all(secret not in output for secret in command.secrets())


def test_a_failing_run_logs_no_token_or_secret_anywhere(tmp_path):
    """Everything a failing run prints, at DEBUG, from every process: Planfix answering 500,
    a token revoked (the link side severed), webhooks with wrong secrets, broken bodies. Not
    one token or webhook secret may appear, in any form a log or a traceback would show it."""
    command = RunCommand(tmp_path, log_level="DEBUG")

    def story(run: RunCommand) -> None:
        partner = run.sides["partner"]
        wrong = {"Content-Type": "application/json", SECRET_HEADER: run.env[partner["webhook_secret_env"]] + "x"}
        assert run.hook("partner", b'{"task": 1}', wrong) == 401
        assert run.hook("client", b'{"task": 1}', {"Authorization": "Basic " + base64.b64encode(
            f"{BASIC_USER}:{run.env[partner['webhook_secret_env']]}".encode()).decode()}) == 401
        right = {"Content-Type": "application/json", SECRET_HEADER: run.env[partner["webhook_secret_env"]]}
        assert run.hook("partner", b'<html>not a scenario body</html>', right) == 200
        run.world.set_faults("client", error_500=1.0)
        number = run.world.create_task("partner", {"name": "Fails, then severs", "processId": 1,
                                                   "project": {"id": 10}}, author=2)
        eventually(lambda: any(entry["status"] == 500 for entry in run.world.requests("client")),
                   timeout=60, what="Planfix answering 500")
        run.world.revoke_token("client", run.env[run.sides["client"]["token_env"]])
        run.world.set_faults("client")
        eventually(lambda: any(entry["status"] == 401 for entry in run.world.requests("client")),
                   timeout=60, what="the revoked token refused")
        assert not run.mirrored("partner", number)
        time.sleep(1.0)  # the severing is logged after the refusal

    output = command.run(story)
    # The run did fail, loudly: the test would pass vacuously on a silent one.
    for sign in ("authentication failed", "webhook rejected", "HTTP 500", "severed"):
        assert sign in output, f"{sign!r} not in the output"
    for secret in command.secrets():
        for form in (secret, base64.b64encode(secret.encode()).decode(), repr(secret)[1:-1]):
            assert form not in output, "a token or secret reached the output"


def _alive(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        time.sleep(0.2)
        return False
