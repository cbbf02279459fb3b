"""Everything the client sends, and every answer it parses, checked against the official spec.

The client runs every method against the emulator over loopback, and the emulator's app is
wrapped to record each exchange as it crossed the socket (what the client's own HTTP transport
put on the wire). Then, per exchange: the path must be one the spec defines (trailing
slashes as written), every query parameter must be declared for that operation, a JSON body
must validate against the operation's request schema, an upload must be multipart with the
`file` field, and the answer must validate against the schema the spec gives for its status.
Skips (via tests/openapi.py) when the spec file is absent.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qsl

import pytest

from planfix.client import PlanfixClient
from planfix.emulator.server import EmulatorServer
from planfix.emulator.world import World
from planfix.errors import PlanfixError
from tests import openapi
from tests.test_client import SEED, TOKEN

REST_PREFIX = "/partner/rest"

# Every operation the client uses; the test fails if one goes unexercised or is not in the spec.
CLIENT_OPERATIONS = {
    ("GET", "/ping"), ("GET", "/task/{id}"), ("POST", "/task/"), ("POST", "/task/{id}"),
    ("POST", "/task/list"), ("POST", "/task/{id}/comments/list"), ("POST", "/task/{id}/comments/"),
    ("POST", "/task/{id}/comments/{commentId}"), ("GET", "/comment/{id}"), ("DELETE", "/comment/{id}"),
    ("POST", "/comment/list"), ("GET", "/process/task"), ("GET", "/process/task/{id}/statuses"),
    ("POST", "/user/list"), ("GET", "/customfield/task"), ("POST", "/file/"), ("GET", "/file/{id}"),
    ("POST", "/file/{id}/attach/task"), ("GET", "/task/{id}/files"),
}


def check(schema: dict[str, Any] | None, instance: Any) -> None:
    """openapi.validate (the spec with all its fixes), for operations that give a schema."""
    if schema is not None:
        openapi.validate(schema, instance)


def spec_template(method: str, path: str) -> str | None:
    """The spec path that PATH instantiates, preferring literal segments over parameters."""
    best: tuple[int, str] | None = None
    for template, operations in openapi.load_spec()["paths"].items():
        if method.lower() not in operations:
            continue
        pattern = "^" + re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, path):
            literal = len(re.sub(r"\{[^}]+\}", "", template))
            if best is None or literal > best[0]:
                best = (literal, template)
    return best[1] if best else None


class Wire:
    """ASGI middleware around the emulator: every exchange as the server received and answered it."""

    def __init__(self, app: Any, exchanges: list[dict[str, Any]]) -> None:
        self.app = app
        self.exchanges = exchanges

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        content, body, status = bytearray(), bytearray(), [0]

        async def received() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "http.request":
                content.extend(message.get("body", b""))
            return message

        async def sent(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            elif message["type"] == "http.response.body":
                body.extend(message.get("body", b""))
            await send(message)

        await self.app(scope, received, sent)
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        self.exchanges.append({
            "method": scope["method"], "path": scope["path"],
            "query": dict(parse_qsl(scope["query_string"].decode(), keep_blank_values=True)),
            "content_type": headers.get("content-type", ""), "content": bytes(content),
            "status": status[0], "body": bytes(body),
        })


@pytest.fixture
def recorded() -> Iterator[tuple[PlanfixClient, list[dict[str, Any]]]]:
    openapi.load_spec()  # skip early when the spec is absent
    exchanges: list[dict[str, Any]] = []
    world = World.from_config(SEED)
    with EmulatorServer(world, wrap=lambda app: Wire(app, exchanges)) as server:
        with PlanfixClient(server.base_url("partner"), TOKEN, account="partner",
                           source_id="4f1c2b1e-5a2d-4a8e-9a51-2f1b6c0d7e90") as client:
            yield client, exchanges
    world.close()


def exercise(client: PlanfixClient) -> None:
    """Call every client method at least once, plus a few failures."""
    client.ping()
    number = client.create_task({
        "name": "Conformance", "description": "<p>body</p>", "processId": 1, "status": {"id": 1},
        "project": {"id": 10}, "assigner": {"id": "user:1"},
        "assignees": {"users": [{"id": "user:2"}]}, "startDateTime": {"date": "01-01-2025", "time": "09:00"},
        "endDateTime": {"date": "02-01-2025", "time": "18:00"},
        "customFieldData": [{"field": {"id": 100}, "value": 5}, {"field": {"id": 101}, "value": "mail"}],
        "sourceObjectId": "0e3c5b9e-1c1f-4a47-8a0f-6f5d1f4d8a11", "sourceDataVersion": "v1",
    })
    client.get_task(number, fields=("id", "name", "status", "assignees", "assigner", "project",
                                     "startDateTime", "endDateTime", "sourceObjectId", 100, 101))
    client.update_task(number, {"status": {"id": 2}, "priority": "Urgent", "hasEndDate": False})
    client.update_task(number, {"status": {"id": 4}})  # forbidden: failures entry
    list(client.list_tasks(filters=[{"type": 10, "operator": "equal", "value": 2},
                                    {"type": 5, "operator": "equal", "value": 10}],
                           fields="id,name,status", page_size=1))
    comment = client.create_comment(number, {"description": "first", "owner": {"id": "user:2"},
                                             "isPinned": False, "sourceDataVersion": "c1"})
    client.update_comment(number, comment, {"description": "edited"})
    client.get_comment(comment)
    list(client.list_task_comments(number, type_list="All", order=[("id", "Asc"), ("dateTime", "Desc")]))
    list(client.list_comments(filters=[{"type": 3001, "operator": "equal", "value": "user:1"}]))
    client.delete_comment(comment)
    client.list_processes()
    client.list_statuses(1)
    client.list_users(filters=[{"type": 9003, "operator": "equal", "value": "sync@partner.example"}])
    client.list_custom_fields()
    file_id = client.upload_file("conformance.txt", b"spec")
    client.attach_file_to_task(file_id, number)
    client.list_task_files(number)
    client.download_file(file_id)
    for failing in (lambda: client.get_task(999, fields="id"), lambda: client.get_comment(999),
                    lambda: client.update_task(999, {"name": "x"})):
        with pytest.raises(PlanfixError):
            failing()


def test_every_request_and_answer_fits_the_spec(recorded):
    client, exchanges = recorded
    exercise(client)
    used = set()
    unchecked_statuses = []
    custom_values: list[Any] = []  # every customFieldData value validated, requests and answers
    user_ids: list[Any] = []
    for exchange in exchanges:
        path = exchange["path"]
        if not path.startswith(REST_PREFIX):
            continue  # the presigned download URL is not part of the REST API
        method, rest_path = exchange["method"], path[len(REST_PREFIX):]
        template = spec_template(method, rest_path)
        assert template is not None, f"{method} {rest_path} is not in the spec"
        used.add((method, template))
        operation = openapi.operation(method, template)
        declared = {p["name"] for p in operation.get("parameters", []) if p.get("in") == "query"}
        assert set(exchange["query"]) <= declared, (method, template, exchange["query"])
        if exchange["content"]:
            if "multipart/form-data" in exchange["content_type"]:
                assert "multipart/form-data" in operation["requestBody"]["content"]
                assert b'name="file"' in exchange["content"]
            else:
                body = json.loads(exchange["content"])
                check(openapi.request_schema(method, template), body)
                custom_values += [entry["value"] for entry in body.get("customFieldData", [])]
        status = exchange["status"]
        if str(status) not in operation["responses"]:
            unchecked_statuses.append((method, template, status))
            continue
        answer = json.loads(exchange["body"]) if exchange["body"] else None
        if answer is not None:
            check(openapi.response_schema(method, template, status), answer)
            custom_values += [entry["value"] for entry in (answer.get("task") or {}).get("customFieldData", [])]
            user_ids += [user["id"] for user in answer.get("users", [])]
    assert used == CLIENT_OPERATIONS, CLIENT_OPERATIONS ^ used
    # Success answers are always checked; only error statuses the spec leaves out are skipped.
    assert all(status >= 400 for _, _, status in unchecked_statuses), unchecked_statuses
    # The bodies above really carried what the spec mistypes, so validating them meant something.
    assert 5 in custom_values and "mail" in custom_values, custom_values
    assert user_ids and all(re.fullmatch(r"user:\d+", str(user_id)) for user_id in user_ids), user_ids


def test_a_request_that_breaks_the_schema_would_be_caught():
    """The check above can fail: a wrong shape for a create is rejected by the validator."""
    import jsonschema

    openapi.load_spec()
    with pytest.raises(jsonschema.ValidationError):
        check(openapi.request_schema("POST", "/task/"), {"name": "x", "status": 4})
    with pytest.raises(jsonschema.ValidationError):
        check(openapi.request_schema("POST", "/comment/list"), {"filters": [{"type": 3999}]})
    check(openapi.request_schema("POST", "/comment/list"),
          {"filters": [{"type": 3001, "operator": "equal", "value": "user:1"}]})
    # The custom value and user id fixes in tests/openapi.py widen the spec no further than needed.
    task = openapi.request_schema("POST", "/task/")
    for value in (5, 2.5, "mail", True, [1, 2], {"id": "user:3"}):
        check(task, {"name": "x", "customFieldData": [{"field": {"id": 100}, "value": value}]})
    with pytest.raises(jsonschema.ValidationError):
        check(task, {"name": "x", "customFieldData": [{"field": {"id": 100}, "value": None}]})
    users = openapi.response_schema("POST", "/user/list", 200)
    check(users, {"result": "success", "users": [{"id": 3}, {"id": "user:3"}]})
    for bad in ("contact:3", "user:", "3", 2.5):
        with pytest.raises(jsonschema.ValidationError):
            check(users, {"result": "success", "users": [{"id": bad}]})
    assert spec_template("POST", "/task/list") == "/task/list"
    assert spec_template("POST", "/task/") == "/task/"
    assert spec_template("POST", "/task/7") == "/task/{id}"
    assert spec_template("POST", "/task") is None  # the create path keeps its trailing slash
