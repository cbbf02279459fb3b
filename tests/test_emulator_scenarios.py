"""Scenario deliveries to a real receiver on loopback: substitution, auth, 200-only, retries, pause,
one-at-a-time ordering, conditions. Delays run at time_scale 0.001 (15 min -> 0.9 s) or less."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import socket
import threading
import time
from typing import Any

import pytest
import uvicorn
from hypothesis import given
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from planfix.emulator.scenarios import FAILURE_PAUSE_S, RETRY_DELAYS_S, render
from planfix.emulator.world import World
from tests.conftest import EMULATOR_SEED


class Receiver:
    """A tiny producer stand-in: records every request, answers from a script of statuses."""

    def __init__(self, statuses: list[int] | None = None, delay_s: float = 0.0) -> None:
        self.statuses = list(statuses or [])
        self.delay_s = delay_s
        self.calls: list[dict[str, Any]] = []
        self.active = 0
        self.max_active = 0
        self._lock = threading.Lock()

        async def hook(request: Request) -> Response:
            with self._lock:
                self.active += 1
                self.max_active = max(self.max_active, self.active)
                status = self.statuses.pop(0) if self.statuses else 200
            body = await request.body()
            self.calls.append({"t": time.monotonic(), "method": request.method, "path": request.url.path,
                               "query": str(request.url.query), "headers": dict(request.headers),
                               "body": body.decode("utf-8")})
            await asyncio.sleep(self.delay_s)
            with self._lock:
                self.active -= 1
            return Response("ok", status_code=status)

        app = Starlette(routes=[Route("/{path:path}", hook, methods=["GET", "POST", "PUT", "DELETE"])])
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self.thread = threading.Thread(target=lambda: asyncio.run(self.server.serve(sockets=[sock])), daemon=True)

    def __enter__(self) -> "Receiver":
        self.thread.start()
        while not self.server.started:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(5)

    def bodies(self) -> list[str]:
        return [call["body"] for call in self.calls]


def world_with(scenarios: list[dict[str, Any]], time_scale: float = 0.001, account: str = "partner") -> World:
    config = copy.deepcopy(EMULATOR_SEED)
    config["time_scale"] = time_scale
    config["accounts"][account]["scenarios"] = scenarios
    return World.from_config(config)


def scenario(url: str, event: str = "task_changed", **extra: Any) -> dict[str, Any]:
    return {"name": f"hook {event}", "event": event, "url": url, "method": "POST",
            "body": '{"event": "%s", "task": "{{Задача.Номер}}"}' % event, **extra}


@pytest.fixture
def receiver():
    with Receiver() as running:
        yield running


# -- rendering --------------------------------------------------------------------------------

def test_render_is_plain_text_and_unknown_is_empty():
    variables = {"Задача.Название": 'Say "hi"\n', "Задача.Номер": "5"}
    assert render('{"n": "{{Задача.Название}}", "x": "{{Нет такой}}"}', variables) == '{"n": "Say "hi"\n", "x": ""}'
    assert render("/hook?name={{Задача.Название}}&n={{ Задача.Номер }}", variables, url=True) == \
        "/hook?name=Say%20%22hi%22%0A&n=5"
    assert render("/hook/%%%{{Задача.Номер}}%%%/{{Задача.Название}}", {"Задача.Номер": "a/b", "Задача.Название": "c/d"},
                  url=True) == "/hook/a/b/c%2Fd"


@given(st.text(alphabet=st.characters(blacklist_characters="{}"), max_size=40),
       st.text(max_size=40))
def test_render_substitutes_value_verbatim(prefix, value):
    assert render(prefix + "{{Задача.Название}}" + prefix, {"Задача.Название": value}) == prefix + value + prefix


# -- delivery ---------------------------------------------------------------------------------

def test_every_variable_headers_and_basic_auth(receiver):
    body = ("{{Задача.Номер}}|{{Задача.Идентификатор}}|{{Задача.Название}}|{{Задача.Статус}}|"
            "{{Задача.Статус.Идентификатор}}|{{Задача.Проект}}|{{Задача.Исполнители.Пользователи}}|"
            "{{Системные.Домен аккаунта}}|{{ID добавленного комментария}}|{{Автор изменения}}")
    world = world_with([
        scenario(receiver.url + "/hooks/acme/partner?task={{Задача.Номер}}&who={{Автор изменения}}", "comment_added",
                 body=body, headers={"X-Crosslink-Secret": "s3cret"},
                 basic_auth={"username": "planfix", "password": "pw"}),
    ])
    try:
        world.update_task("partner", 1, {"assignees": {"users": [{"id": "user:2"}, {"id": "user:3"}]}}, author=2)
        comment = world.add_comment("partner", 1, {"description": "x"}, author=2)
        assert world.wait_deliveries_idle(5)
    finally:
        world.close()
    [call] = receiver.calls
    assert call["body"] == (f"1|{1 + 7_000_000}|Kick-off|New|1|ACME rollout|"
                            f'["Pavel Lead","Olga Dev"]|partner.planfix.com|{comment}|Pavel Lead')
    assert call["path"] == "/hooks/acme/partner" and call["query"] == "task=1&who=Pavel%20Lead"
    assert call["headers"]["x-crosslink-secret"] == "s3cret"
    assert call["headers"]["authorization"] == "Basic " + base64.b64encode(b"planfix:pw").decode()
    assert call["headers"]["content-type"] == "application/json"
    delivery = world.deliveries("partner")[0]
    assert delivery["delivered"] and delivery["attempt"] == 1 and delivery["status"] == 200
    assert "s3cret" not in json.dumps(world.deliveries("partner")) and "pw" not in repr(delivery)
    assert "s3cret" not in repr(world.accounts["partner"])


def test_events_created_changed_comment_and_edit_counts_as_changed(receiver):
    world = world_with([scenario(receiver.url, event) for event in ("task_created", "task_changed", "comment_added")])
    try:
        number = world.create_task("partner", {"name": "n"}, author=2)
        world.update_task("partner", number, {"name": "m"}, author=2)
        world.update_task("partner", number, {"name": "m"}, author=2)  # no change: no event
        comment = world.add_comment("partner", number, {"description": "c"}, author=2)
        world.update_comment("partner", comment, {"description": "c2"}, author=2)
        world.delete_comment("partner", comment, author=2)
        assert world.wait_deliveries_idle(5)
    finally:
        world.close()
    events = [json.loads(body)["event"] for body in receiver.bodies()]
    assert events == ["task_created", "task_changed", "comment_added", "task_changed", "task_changed"]


def test_unless_author_and_project_condition(receiver):
    world = world_with([scenario(receiver.url, unless_author="user:1", project=10)])
    try:
        world.update_task("partner", 1, {"name": "by robot"}, author=1)      # skipped: the sync's own write
        world.update_task("partner", 1, {"name": "by Pavel"}, author=2)      # delivered
        other = world.create_task("partner", {"name": "elsewhere", "project": {"id": 11}}, author=2)
        world.update_task("partner", other, {"name": "still elsewhere"}, author=2)  # other project: skipped
        assert world.wait_deliveries_idle(5)
    finally:
        world.close()
    assert [json.loads(body)["task"] for body in receiver.bodies()] == ["1"]


def test_form_content_type_and_get_method(receiver):
    world = world_with([scenario(receiver.url, content_type="application/x-www-form-urlencoded",
                                 body="task={{Задача.Номер}}&event=task_changed"),
                        {**scenario(receiver.url + "/get?task={{Задача.Номер}}"), "method": "GET"}])
    try:
        world.update_task("partner", 1, {"name": "x"}, author=2)
        assert world.wait_deliveries_idle(5)
    finally:
        world.close()
    posted, fetched = receiver.calls
    assert posted["headers"]["content-type"] == "application/x-www-form-urlencoded"
    assert posted["body"] == "task=1&event=task_changed"
    assert fetched["method"] == "GET" and fetched["query"] == "task=1" and fetched["body"] == ""


def test_one_at_a_time_in_order():
    with Receiver(delay_s=0.05) as slow:
        world = world_with([scenario(slow.url)])
        try:
            for index in range(4):
                world.update_task("partner", 1, {"name": f"v{index}"}, author=2)
            assert world.wait_deliveries_idle(5)
        finally:
            world.close()
        assert slow.max_active == 1
        assert [d["seq"] for d in world.deliveries("partner")] == sorted(d["seq"] for d in world.deliveries("partner"))
        assert len(slow.calls) == 4


def test_only_200_counts_and_retry_schedule():
    scale = 0.0001
    with Receiver(statuses=[202, 500, 204, 200]) as flaky:
        world = world_with([scenario(flaky.url)], time_scale=scale)
        try:
            world.update_task("partner", 1, {"name": "x"}, author=2)
            assert world.wait_deliveries_idle(10)
        finally:
            world.close()
        attempts = world.deliveries("partner")
        assert [(d["attempt"], d["status"], d["delivered"]) for d in attempts] == [
            (1, 202, False), (2, 500, False), (3, 204, False), (4, 200, True)]
        gaps = [b["t"] - a["t"] for a, b in zip(flaky.calls, flaky.calls[1:])]
        for gap, delay in zip(gaps, RETRY_DELAYS_S):
            assert delay * scale <= gap < delay * scale + 0.25


def test_gives_up_after_five_attempts():
    with Receiver(statuses=[500] * 10) as broken:
        world = world_with([scenario(broken.url)], time_scale=0.0001)
        try:
            world.update_task("partner", 1, {"name": "x"}, author=2)
            assert world.wait_deliveries_idle(10)
        finally:
            world.close()
        assert len(broken.calls) == 5 == len(world.deliveries("partner"))
        assert not any(d["delivered"] for d in world.deliveries("partner"))


def test_pause_after_failure_holds_every_request_of_the_account():
    scale = 0.001
    with Receiver(statuses=[500]) as receiver:
        world = world_with([scenario(receiver.url)], time_scale=scale)
        try:
            world.update_task("partner", 1, {"name": "first"}, author=2)
            world.update_task("partner", 1, {"name": "second"}, author=2)
            assert world.wait_deliveries_idle(10)
        finally:
            world.close()
        first, second, retry = receiver.calls
        assert second["t"] - first["t"] >= FAILURE_PAUSE_S * scale
        assert second["t"] - first["t"] < RETRY_DELAYS_S[0] * scale  # the pause, not the retry delay
        assert retry["t"] - first["t"] >= RETRY_DELAYS_S[0] * scale
        assert [json.loads(c["body"])["task"] for c in receiver.calls] == ["1", "1", "1"]
        assert [d["attempt"] for d in world.deliveries("partner")] == [1, 1, 2]


def test_timeout_is_a_failure():
    with Receiver(delay_s=0.5) as sluggish:
        world = world_with([scenario(sluggish.url, timeout_s=0.1)], time_scale=0.00001)
        try:
            world.update_task("partner", 1, {"name": "x"}, author=2)
            deadline = time.monotonic() + 5
            while not world.deliveries("partner") and time.monotonic() < deadline:
                time.sleep(0.02)
        finally:
            world.close()
        first = world.deliveries("partner")[0]
        assert first["error"] == "timeout" and first["status"] is None and not first["delivered"]


def test_scenarios_replaced_at_runtime(receiver, emulator_world, emulator_app_client):
    emulator_world.update_task("partner", 1, {"name": "before any scenario"}, author=2)
    response = emulator_app_client.post("/_emulator/partner/scenarios", json={"scenarios": [scenario(receiver.url)]})
    assert response.status_code == 200
    emulator_app_client.post("/_emulator/partner/ui/task/1", json={"name": "after"}, headers={"X-Emulator-User": "2"})
    assert emulator_app_client.post("/_emulator/partner/deliveries/wait?timeout=5").json()["idle"] is True
    assert receiver.bodies() == ['{"event": "task_changed", "task": "1"}']
    assert emulator_app_client.get("/_emulator/partner/deliveries").json()["deliveries"][0]["delivered"]
    bad = emulator_app_client.post("/_emulator/partner/scenarios", json={"scenarios": [{"event": "nope", "url": "x"}]})
    assert bad.status_code == 400


def test_rest_writes_fire_scenarios_even_silent(receiver, emulator_world, emulator_app_client):
    emulator_world.set_scenarios("partner", [scenario(receiver.url)])
    headers = {"Authorization": "Bearer tok-partner-sync"}
    emulator_app_client.post("/partner/rest/task/1?silent=true", json={"name": "quiet"}, headers=headers)
    assert emulator_world.wait_deliveries_idle(5)
    assert len(receiver.calls) == 1
