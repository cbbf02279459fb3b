"""The emulator's HTTP face: Planfix REST under /{account}/rest/..., the control API under /_emulator.

Every REST request goes through one gate in a fixed order (rate limit, daily quota, token, scope,
body, faults) and is written to the account's request log whatever its outcome, so tests can
prove the sync's limiter kept to 1 req/s. The control API ("the web UI", faults, logs) skips the
gate entirely: people acting in the browser cost no API quota, and faults must never hit the test
harness itself.

`?silent=true` is accepted on every write and changes nothing here: scenarios still fire on silent
changes. Planfix documents only that silent changes skip the log and notifications [verify]; firing
is the safer assumption for the sync, whose loop prevention must not depend on it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from dataclasses import dataclass
from typing import Any, Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route

from planfix.emulator.world import ApiError, World
from planfix.emulator.written import queued, took, write_record

USER_HEADER = "X-Emulator-User"


class ConnectionDropped(Exception):
    """Raised by the connection_closed fault after the answer's head went out: the server then
    closes the connection, and the client sees an answer cut short (a broken connection)."""


class _QuietDroppedConnections(logging.Filter):
    """uvicorn logs an app exception after the answer started with its traceback; a dropped
    connection the fault asked for is no error of the emulator's."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], ConnectionDropped))


_QUIET = _QuietDroppedConnections()


class DroppedAfterHead(Response):
    """The connection_closed fault: the real answer's status and headers (its Content-Length
    included) go out, then the connection is closed before the body. The write was applied;
    the client cannot know it (planfix.http.ConnectionBroken: maybe applied)."""

    def __init__(self, answered: Response) -> None:
        self.answered = answered
        self.status_code = answered.status_code
        self.background = None
        self.body = answered.body
        self.raw_headers = list(answered.raw_headers)

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001 - ASGI's signature
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        raise ConnectionDropped("the connection_closed fault dropped this answer after its head")


@dataclass
class Call:
    """What a REST handler gets: the world, the account, the acting user and the parsed request."""

    world: World
    account: str
    user: int
    params: dict[str, str]
    query: dict[str, str]
    body: Any
    request: Request
    silent: bool
    # What a write did, for the request log (planfix.emulator.written); None for a read.
    written: dict[str, Any] | None = None


Handler = Callable[[Call], Awaitable[Response] | Response]


def _ok(payload: dict[str, Any] | None = None, status: int = 200) -> JSONResponse:
    return JSONResponse({"result": "success", **(payload or {})}, status_code=status)


def _error(exc: ApiError, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


def _base_url(request: Request) -> str:
    return str(request.base_url).rstrip("/")


# -- REST handlers ----------------------------------------------------------------------------

def ping(call: Call) -> Response:
    return _ok()


def get_task(call: Call) -> Response:
    return _ok({"task": call.world.get_task(call.account, call.params["id"], call.query.get("fields"))})


def create_task(call: Call) -> Response:
    number = call.world.create_task(call.account, call.body, author=call.user)
    return _ok({"id": number}, status=201)


def update_task(call: Call) -> Response:
    failures = call.world.update_task(call.account, call.params["id"], call.body, author=call.user)
    return _ok({"failures": failures} if failures else None)


def list_tasks(call: Call) -> Response:
    return _ok({"tasks": call.world.list_tasks(call.account, call.body)})


def list_task_comments(call: Call) -> Response:
    return _ok({"comments": call.world.list_task_comments(call.account, call.params["id"], call.body)})


def add_comment(call: Call) -> Response:
    comment_id = call.world.add_comment(call.account, call.params["id"], call.body, author=call.user)
    return _ok({"id": comment_id}, status=201)


def update_comment(call: Call) -> Response:
    call.world.update_comment(call.account, call.params["comment"], call.body, author=call.user,
                              task_number=call.params["id"])
    return _ok()


def get_comment(call: Call) -> Response:
    return _ok({"comment": call.world.get_comment(call.account, call.params["id"], call.query.get("fields"))})


def delete_comment(call: Call) -> Response:
    call.world.delete_comment(call.account, call.params["id"], author=call.user)
    return _ok()


def list_comments(call: Call) -> Response:
    return _ok({"comments": call.world.list_comments(call.account, call.body)})


def processes(call: Call) -> Response:
    return _ok({"processes": call.world.processes(call.account, call.query.get("fields"))})


def statuses(call: Call) -> Response:
    return _ok({"statuses": call.world.statuses(call.account, call.params["id"], call.query.get("fields"))})


def list_users(call: Call) -> Response:
    return _ok({"users": call.world.list_users(call.account, call.body)})


def custom_fields(call: Call) -> Response:
    return _ok({"customfields": call.world.custom_fields(call.account, call.query.get("fields"))})


async def upload_file(call: Call) -> Response:
    try:
        form = await call.request.form()
    except Exception:  # noqa: BLE001 - any unparsable upload is the caller's bad request
        raise ApiError(400, 30, "The request body must be multipart/form-data") from None
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise ApiError(400, 40, "Required parameter is missing: file")
    content = await upload.read()
    file_id = call.world.upload_file(call.account, upload.filename or "file", content, author=call.user)
    return _ok({"id": file_id})


def get_file(call: Call) -> Response:
    view = call.world.get_file(call.account, call.params["id"], call.query.get("fields"),
                               _base_url(call.request))
    return _ok({"file": view})


def download_file(call: Call) -> Response:
    view = call.world.get_file(call.account, call.params["id"], "downloadUrl", _base_url(call.request))
    return RedirectResponse(view["downloadUrl"], status_code=302)


def attach_file(call: Call) -> Response:
    number = call.query.get("id")
    if not number:
        raise ApiError(400, 40, "Required parameter is missing: id (task number)")
    call.world.attach_file_to_task(call.account, call.params["id"], number, author=call.user)
    return _ok()


def task_files(call: Call) -> Response:
    only = call.query.get("onlyFromDescription", "false").lower() == "true"
    return _ok({"files": call.world.task_files(call.account, call.params["id"], only)})


def list_checklist(call: Call) -> Response:
    return _ok({"items": call.world.list_checklist(call.account, call.params["id"], call.body)})


def create_checklist_item(call: Call) -> Response:
    item_id = call.world.create_checklist_item(call.account, call.params["id"], call.body, author=call.user)
    return _ok({"id": item_id}, status=201)


def get_checklist_item(call: Call) -> Response:
    return _ok({"item": call.world.get_checklist_item(call.account, call.params["id"], call.params["item"],
                                                      call.query.get("fields"))})


def update_checklist_item(call: Call) -> Response:
    failures = call.world.update_checklist_item(call.account, call.params["id"], call.params["item"],
                                                call.body, author=call.user)
    return _ok({"failures": failures} if failures else None)


def delete_checklist_item(call: Call) -> Response:
    # Live-verified (API-NOTES section 3): Planfix has no way to delete a checklist item.
    raise ApiError(405, 405, "Method not allowed")


# (method, path pattern relative to /rest, scope, handler, body kind). A trailing slash is
# optional everywhere, since the spec writes some create paths with one and clients differ.
ROUTES: list[tuple[str, str, str | None, Handler, str]] = [
    ("GET", r"/ping", None, ping, "none"),
    ("POST", r"/task/list", "task_readonly", list_tasks, "json"),
    ("POST", r"/task", "task_add", create_task, "json"),
    ("GET", r"/task/(?P<id>[^/]+)", "task_readonly", get_task, "none"),
    ("POST", r"/task/(?P<id>[^/]+)", "task_update", update_task, "json"),
    ("GET", r"/task/(?P<id>[^/]+)/files", "task_readonly", task_files, "none"),
    ("POST", r"/task/(?P<id>[^/]+)/comments/list", "comment_readonly", list_task_comments, "json"),
    ("POST", r"/task/(?P<id>[^/]+)/comments", "comment_add", add_comment, "json"),
    ("POST", r"/task/(?P<id>[^/]+)/comments/(?P<comment>[^/]+)", "comment_update", update_comment, "json"),
    ("POST", r"/task/(?P<id>[^/]+)/checklist/list", "task_readonly", list_checklist, "json"),
    ("POST", r"/task/(?P<id>[^/]+)/checklist", "task_update", create_checklist_item, "json"),
    ("GET", r"/task/(?P<id>[^/]+)/checklist/(?P<item>[^/]+)", "task_readonly", get_checklist_item, "none"),
    ("POST", r"/task/(?P<id>[^/]+)/checklist/(?P<item>[^/]+)", "task_update", update_checklist_item, "json"),
    ("DELETE", r"/task/(?P<id>[^/]+)/checklist/(?P<item>[^/]+)", "task_update", delete_checklist_item, "none"),
    ("POST", r"/comment/list", "comment_readonly", list_comments, "json"),
    ("GET", r"/comment/(?P<id>[^/]+)", "comment_readonly", get_comment, "none"),
    ("DELETE", r"/comment/(?P<id>[^/]+)", "comment_delete", delete_comment, "none"),
    ("GET", r"/process/task", "task_readonly", processes, "none"),
    ("GET", r"/process/task/(?P<id>[^/]+)/statuses", "task_readonly", statuses, "none"),
    ("GET", r"/object/(?P<id>[^/]+)/statuses", "task_readonly", statuses, "none"),
    ("POST", r"/user/list", "user_readonly", list_users, "json"),
    ("GET", r"/customfield/task", "task_readonly", custom_fields, "none"),
    ("POST", r"/file", "file_add", upload_file, "raw"),
    ("GET", r"/file/(?P<id>[^/]+)", "file_readonly", get_file, "none"),
    ("GET", r"/file/(?P<id>[^/]+)/download", "file_readonly", download_file, "none"),
    ("POST", r"/file/(?P<id>[^/]+)/attach/task", "task_update", attach_file, "none"),
]
_COMPILED = [(method, re.compile(pattern + r"/?"), scope, handler, body)
             for method, pattern, scope, handler, body in ROUTES]


def _match(method: str, path: str):
    for route_method, pattern, scope, handler, body in _COMPILED:
        found = pattern.fullmatch(path)
        if found and route_method == method:
            return found.groupdict(), scope, handler, body
    return None


def _token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    if request.method == "GET":
        return request.query_params.get("access_token")
    return None


async def _json_body(request: Request) -> Any:
    try:
        raw = await request.body()
    except ClientDisconnect:
        # The sender went away mid-body (a worker killed while sending): the request counted
        # against the rate, as it arrived, and is logged; no one reads the answer.
        raise ApiError(400, 30, "The client closed the connection before the body arrived") from None
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, 30, "Invalid JSON in the request body") from None
    if not isinstance(body, dict):
        raise ApiError(400, 30, "The request body must be a JSON object")
    return body


async def _run(handler: Handler, call: Call) -> Response:
    result = handler(call)
    if asyncio.iscoroutine(result):
        result = await result
    return result


async def rest(request: Request) -> Response:
    world: World = request.app.state.world
    account = request.path_params["account"]
    path = "/" + request.path_params["path"]
    try:
        world.account(account)
    except ApiError as exc:
        return _error(exc)
    started = world.now()
    user: int | None = None
    fault: str | None = None
    over_limit = False
    headers: dict[str, str] = {}
    written: dict[str, Any] | None = None
    try:
        matched = _match(request.method, path)
        rejection, headers = world.admit(account)
        if rejection is not None:
            over_limit = rejection.status == 429
            raise rejection
        if matched is None:
            raise ApiError(404, 0, f"Unknown method {request.method} {path}")
        params, scope, handler, body_kind = matched
        user = world.authenticate(account, _token(request), scope)
        body = await _json_body(request) if body_kind == "json" else None
        silent = request.query_params.get("silent", "false").lower() == "true"
        written = write_record(scope, body)
        call = Call(world, account, user, params, dict(request.query_params), body, request, silent, written)
        response, fault = await _faulted(world, account, handler, call,
                                         task_update=handler in (update_task, update_checklist_item))
    except _FaultAnswer as answer:
        response, fault = _error(answer.error), answer.fault
    except ApiError as exc:
        response = _error(exc)
        if over_limit:
            fault = "rate_429"
        elif exc.status == 403 and exc.code == 22 and world.faults(account).get("quota_exhausted"):
            fault = "quota"
    for name, value in headers.items():
        response.headers[name] = value
    jitter = world.draw_jitter(account)
    if jitter:
        await asyncio.sleep(jitter)
    world.log_request(account, t=started, method=request.method, path=path, status=response.status_code,
                      user=user, over_limit=over_limit, fault=fault, jitter_s=jitter, write=written)
    return response


class _FaultAnswer(Exception):
    """A fault answered with an error (500s): the error to send and the fault kind to log."""

    def __init__(self, fault: str, error: ApiError) -> None:
        self.fault, self.error = fault, error


async def _faulted(world: World, account: str, handler: Handler, call: Call, *,
                   task_update: bool) -> tuple[Response, str | None]:
    """Run HANDLER under this request's drawn fault, if any (world.FAULT_DEFAULTS says what each
    does); the answer and the fault kind it carries (None: none)."""
    fault = world.draw_fault(account, task_update=task_update)
    faults = world.faults(account)
    if task_update:
        # A task whose queued (202) change is not applied yet is still locked: a later update to
        # it is queued behind that change, not applied before it (which would let the older
        # change overwrite the newer one when it lands).
        fault = world.locked(account, call.params["id"]) or fault
    if fault == "error_500":
        raise _FaultAnswer(fault, ApiError(500, 0, "Internal server error"))
    if fault in ("busy_202", "slow_202", "lost_202"):
        # Planfix queues an update to a locked task and applies it later (API-NOTES.md section 3),
        # after the changes queued before it. A checklist item lives in its task, so it is locked
        # with it and queued the same way.
        number, body, user = call.params["id"], call.body, call.user
        if handler is update_checklist_item:
            item = call.params["item"]
            world.get_checklist_item(account, number, item, "id")  # an error now, not a silent loss later
            apply = lambda: world.update_checklist_item(account, number, item, body, author=user)  # noqa: E731
        else:
            world.get_task(account, number, "id")  # a 404 now rather than a silent loss later
            apply = lambda: world.update_task(account, number, body, author=user)  # noqa: E731
        if fault == "lost_202":
            return Response(status_code=202), fault
        delay_s = float(faults["slow_202_delay_s" if fault == "slow_202" else "busy_delay_s"])
        landed = queued(call.written, fault, apply)
        world.queue_update(account, number, lambda: _apply_later(landed), delay_s, fault)
        return Response(status_code=202), fault
    response = await _run(handler, call)
    took(call.written, response)  # applied, whatever the fault then makes of its answer
    if fault == "error_500_after_commit":
        raise _FaultAnswer(fault, ApiError(500, 0, "Internal server error"))
    if fault == "timeout":
        await asyncio.sleep(float(faults["timeout_s"]))
    elif fault == "slow":
        await asyncio.sleep(float(faults["slow_s"]))
    elif fault == "connection_closed":
        return DroppedAfterHead(response), fault
    return response, fault


def _apply_later(apply: Callable[[], Any]) -> None:
    try:
        apply()
    except ApiError:
        pass  # the task vanished meanwhile; Planfix would drop the queued change as well


# -- control API ------------------------------------------------------------------------------

def _control(handler: Callable[[Request, World, str], Awaitable[Any]]):
    async def endpoint(request: Request) -> Response:
        world: World = request.app.state.world
        account = request.path_params["account"]
        try:
            world.account(account)
            result = await handler(request, world, account)
        except ApiError as exc:
            return _error(exc)
        except (ValueError, TypeError, KeyError) as exc:
            return JSONResponse({"result": "fail", "error": str(exc)}, status_code=400)
        if isinstance(result, Response):
            return result
        return JSONResponse({"result": "success", **(result or {})})
    return endpoint


async def _body(request: Request) -> Any:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except ValueError:
        raise ValueError("invalid JSON body") from None


def _ui_user(request: Request, world: World, account: str) -> int:
    value = request.headers.get(USER_HEADER)
    if not value or not value.removeprefix("user:").isdigit():
        raise ValueError(f"header {USER_HEADER}: N (the acting user's id) is required")
    user = int(value.removeprefix("user:"))
    if user not in world.account(account).users:
        raise ValueError(f"no user {user} in account {account}")
    return user


async def ui_create_task(request: Request, world: World, account: str) -> Any:
    number = world.create_task(account, await _body(request), author=_ui_user(request, world, account))
    return {"id": number}


async def ui_update_task(request: Request, world: World, account: str) -> Any:
    failures = world.update_task(account, request.path_params["id"], await _body(request),
                                 author=_ui_user(request, world, account))
    return {"failures": failures} if failures else {}


async def ui_add_comment(request: Request, world: World, account: str) -> Any:
    comment_id = world.add_comment(account, request.path_params["id"], await _body(request),
                                   author=_ui_user(request, world, account))
    return {"id": comment_id}


async def ui_edit_comment(request: Request, world: World, account: str) -> Any:
    world.update_comment(account, request.path_params["id"], await _body(request),
                         author=_ui_user(request, world, account))
    return {}


async def ui_delete_comment(request: Request, world: World, account: str) -> Any:
    world.delete_comment(account, request.path_params["id"], author=_ui_user(request, world, account))
    return {}


async def ui_add_checklist_item(request: Request, world: World, account: str) -> Any:
    item_id = world.create_checklist_item(account, request.path_params["id"], await _body(request),
                                          author=_ui_user(request, world, account))
    return {"id": item_id}


async def ui_update_checklist_item(request: Request, world: World, account: str) -> Any:
    failures = world.update_checklist_item(account, request.path_params["id"], request.path_params["item"],
                                           await _body(request), author=_ui_user(request, world, account))
    return {"failures": failures} if failures else {}


async def faults(request: Request, world: World, account: str) -> Any:
    if request.method == "POST":
        return {"faults": world.set_faults(account, **(await _body(request)))}
    return {"faults": world.faults(account)}


async def revoke(request: Request, world: World, account: str) -> Any:
    world.revoke_token(account, str((await _body(request)).get("token", "")))
    return {}


async def restore(request: Request, world: World, account: str) -> Any:
    world.restore_token(account, str((await _body(request)).get("token", "")))
    return {}


async def deactivate(request: Request, world: World, account: str) -> Any:
    world.deactivate_user(account, int(request.path_params["id"]))
    return {}


async def activate(request: Request, world: World, account: str) -> Any:
    world.activate_user(account, int(request.path_params["id"]))
    return {}


async def limits(request: Request, world: World, account: str) -> Any:
    body = await _body(request)
    world.set_limits(account, rate_per_s=body.get("rate_per_s"), daily_quota=body.get("daily_quota"))
    return {}


async def requests_log(request: Request, world: World, account: str) -> Any:
    window = float(request.query_params.get("window_s", 1.0))
    return {"requests": world.requests(account), "violations": len(world.violations(account)),
            "max_requests_in_window": world.max_requests_in_window(account, window)}


async def deliveries(request: Request, world: World, account: str) -> Any:
    return {"deliveries": world.deliveries(account)}


async def wait_deliveries(request: Request, world: World, account: str) -> Any:
    timeout = float(request.query_params.get("timeout", 10))
    idle = await asyncio.get_running_loop().run_in_executor(None, world.wait_deliveries_idle, timeout)
    return {"idle": idle}


async def tasks_dump(request: Request, world: World, account: str) -> Any:
    return {"tasks": world.dump_tasks(account)}


async def set_scenarios(request: Request, world: World, account: str) -> Any:
    body = await _body(request)
    world.set_scenarios(account, body["scenarios"] if isinstance(body, dict) else body)
    return {}


async def file_content(request: Request, world: World, account: str) -> Any:
    name, content = world.signed_content(account, request.path_params["id"],
                                         request.query_params.get("expires"),
                                         request.query_params.get("signature", ""))
    return Response(content, media_type="application/octet-stream",
                    headers={"Content-Disposition": f"attachment; filename*=UTF-8''{_quote(name)}"})


def _quote(name: str) -> str:
    from urllib.parse import quote
    return quote(name, safe="")


def create_app(world: World) -> Starlette:
    """The ASGI app serving WORLD; the caller owns the world (and closes it)."""
    prefix = "/_emulator/{account}"
    routes = [
        Route(prefix + "/ui/task", _control(ui_create_task), methods=["POST"]),
        Route(prefix + "/ui/task/{id}", _control(ui_update_task), methods=["POST"]),
        Route(prefix + "/ui/task/{id}/comments", _control(ui_add_comment), methods=["POST"]),
        Route(prefix + "/ui/task/{id}/checklist", _control(ui_add_checklist_item), methods=["POST"]),
        Route(prefix + "/ui/task/{id}/checklist/{item}", _control(ui_update_checklist_item), methods=["POST"]),
        Route(prefix + "/ui/comment/{id}", _control(ui_edit_comment), methods=["POST"]),
        Route(prefix + "/ui/comment/{id}", _control(ui_delete_comment), methods=["DELETE"]),
        Route(prefix + "/faults", _control(faults), methods=["GET", "POST"]),
        Route(prefix + "/limits", _control(limits), methods=["POST"]),
        Route(prefix + "/tokens/revoke", _control(revoke), methods=["POST"]),
        Route(prefix + "/tokens/restore", _control(restore), methods=["POST"]),
        Route(prefix + "/users/{id:int}/deactivate", _control(deactivate), methods=["POST"]),
        Route(prefix + "/users/{id:int}/activate", _control(activate), methods=["POST"]),
        Route(prefix + "/requests", _control(requests_log), methods=["GET"]),
        Route(prefix + "/deliveries", _control(deliveries), methods=["GET"]),
        Route(prefix + "/deliveries/wait", _control(wait_deliveries), methods=["POST"]),
        Route(prefix + "/tasks", _control(tasks_dump), methods=["GET"]),
        Route(prefix + "/scenarios", _control(set_scenarios), methods=["POST"]),
        Route(prefix + "/files/{id:int}/content", _control(file_content), methods=["GET"]),
        Route("/{account}/rest/{path:path}", rest, methods=["GET", "POST", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.world = world
    logging.getLogger("uvicorn.error").addFilter(_QUIET)  # adding the same filter twice keeps one
    return app
