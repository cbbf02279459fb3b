"""The emulator over real loopback HTTP: EmulatorServer, EmulatorControl and the CLI's serve()."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from planfix.emulator.control import EmulatorControl
from planfix.emulator.server import EmulatorServer

SYNC = {"Authorization": "Bearer tok-partner-sync"}
EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "emulator.yaml"


def test_server_serves_rest_and_control_over_loopback(emulator_server, emulator_world):
    assert emulator_server.base_url("partner") == f"{emulator_server.url}/partner/rest"
    assert emulator_server.url.startswith("http://127.0.0.1:")
    with httpx.Client(base_url=emulator_server.base_url("partner"), headers=SYNC, timeout=5) as http:
        assert http.get("/ping").json() == {"result": "success"}
        number = http.post("/task/", json={"name": "over the wire"}).json()["id"]
    with EmulatorControl(emulator_server.url) as control:
        control.ui_update_task("partner", 2, number, {"name": "edited by hand"})
        comment = control.ui_add_comment("partner", 2, number, {"description": "hi"})
        control.ui_edit_comment("partner", 2, comment, {"description": "hi!"})
        control.ui_delete_comment("partner", 2, comment)
        tasks = {t["id"]: t for t in control.tasks("partner")}
        assert tasks[number]["name"] == "edited by hand" and tasks[number]["comments"][0]["isDeleted"]
        assert control.ui_create_task("client", 5, {"name": "client side"}) == 1
        log = control.requests("partner")
        assert [e["path"] for e in log["requests"]] == ["/ping", "/task/"] and log["violations"] == 0
        control.set_faults("partner", error_500=1.0)
        assert control.faults("partner")["error_500"] == 1.0
        control.set_faults("partner")
        control.revoke_token("partner", "tok-partner-sync")
        assert httpx.get(emulator_server.base_url("partner") + "/ping", headers=SYNC).status_code == 401
        control.restore_token("partner", "tok-partner-sync")
        control.deactivate_user("partner", 1)
        assert httpx.get(emulator_server.base_url("partner") + "/ping", headers=SYNC).status_code == 403
        control.activate_user("partner", 1)
        control.set_limits("partner", rate_per_s=1)
        codes = [httpx.get(emulator_server.base_url("partner") + "/ping", headers=SYNC).status_code for _ in range(3)]
        assert codes[0] == 200 and 429 in codes
        assert control.requests("partner")["violations"] >= 1
        assert control.deliveries("partner") == [] and control.wait_deliveries_idle("partner", 1)
        with pytest.raises(RuntimeError, match="404"):
            control.tasks("nobody")


def test_timeout_fault_makes_the_client_time_out_but_the_write_lands(emulator_server, emulator_world):
    emulator_world.set_faults("partner", timeout=1.0, timeout_s=1.5)
    with httpx.Client(base_url=emulator_server.base_url("partner"), headers=SYNC, timeout=0.3) as http:
        with pytest.raises(httpx.TimeoutException):
            http.post("/task/", json={"name": "created anyway"})
    assert [t["name"] for t in emulator_world.dump_tasks("partner")][-1] == "created anyway"


def test_context_manager_stops_and_frees_the_port(emulator_world):
    with EmulatorServer(emulator_world) as server:
        port = server.port
        assert httpx.get(server.url + "/partner/rest/ping", headers=SYNC).status_code == 200
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    with pytest.raises(RuntimeError, match="not started"):
        _ = EmulatorServer(emulator_world).url


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_serve_runs_the_example_seed():
    port = _free_port()
    process = subprocess.Popen([sys.executable, "-c",
                                "import sys; from planfix.emulator.server import serve; "
                                "serve(sys.argv[1], '127.0.0.1', int(sys.argv[2]))", str(EXAMPLE), str(port)])
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/client/rest/task/1?fields=name,status",
                                     headers={"Authorization": "Bearer demo-client-sync"})
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "serve() never accepted connections"
                time.sleep(0.1)
        assert response.json()["task"]["status"]["name"] == "Accepted"
        assert response.headers["X-RateLimit-Remaining"] == "19999"
    finally:
        process.terminate()
        process.wait(10)
