"""The one way Crosslink talks to a Planfix account over REST.

Why a client of our own rather than ad-hoc HTTP calls in the workers:
- every request first asks the account-wide limiter, and tells it when the answer is back (by
  then the request has surely reached Planfix, however late it went out), so all processes
  together stay inside Planfix's 1 request/s, counted as Planfix counts it, by arrival, and
  inside the daily quota;
- every answer becomes either parsed data, a typed write outcome (Applied / Queued /
  PartiallyApplied) or a typed error (planfix.errors), so a worker decides by type;
- reads are retried on transient failures; writes never are, because a create that timed out
  may already exist in Planfix (API-NOTES section 1, "Do not blindly retry creates"): the caller
  gets TransientError(maybe_applied=True) and checks before writing again;
- the token travels only in the Authorization header; it never appears in a log record, an
  exception message or repr();
- every request sent and every wait the limiter names is counted here, once, by account (and
  each request by the link the client serves: `link`), whichever process the client lives in
  (crosslink.base.metrics).

Paths are written exactly as the spec writes them, trailing slashes on creates included.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urljoin

import redis

from crosslink.base import metrics
from planfix.errors import (
    Applied,
    FieldFailure,
    PartiallyApplied,
    PermanentError,
    Queued,
    RateLimited,
    TransientError,
    WriteOutcome,
    classify,
    write_outcome,
)
from planfix.http import ConnectFailed, ConnectionBroken, Http, Response, TimedOut
from planfix.limiter import DEFAULT_LANE, REASON_RATE, AccountLimiter

__all__ = [
    "Applied", "FieldFailure", "PartiallyApplied", "PlanfixClient", "Queued", "WriteOutcome",
    "TASK_SYNC_FIELDS", "COMMENT_FIELDS", "USER_FIELDS", "STATUS_FIELDS", "CUSTOM_FIELD_FIELDS",
    "CHECKLIST_FIELDS",
]

log = logging.getLogger("crosslink.planfix")

# The task fields a sync reads (system names; custom field ids are appended per link).
TASK_SYNC_FIELDS = (
    "id", "name", "description", "status", "processId", "priority", "project", "template",
    "parent", "assigner", "assignees", "participants", "auditors", "startDateTime",
    "endDateTime", "hasStartDate", "hasEndDate", "dateOfLastUpdate", "dateOfLastComment",
    "isDeleted", "files", "sourceObjectId", "sourceDataVersion",
)
COMMENT_FIELDS = (
    "id", "dateTime", "description", "owner", "task", "isDeleted", "isHidden", "isPinned",
    "files", "changeStatus", "sourceObjectId", "sourceDataVersion",
)
USER_FIELDS = ("id", "name", "midname", "lastname", "email", "role", "status")
STATUS_FIELDS = ("id", "name", "color", "isActive", "isAppliedIndividually")
CUSTOM_FIELD_FIELDS = ("id", "name", "type", "enumValues")
FILE_FIELDS = "id,name,size,downloadUrl"
# A checklist item's fields the sync reads (the spec's ChecklistItemResponse has no author and
# no sourceObjectId/sourceDataVersion to ask for).
CHECKLIST_FIELDS = ("id", "name", "isDone", "parent")

# Planfix list endpoints return at most 100 items per page (API-NOTES section 1).
MAX_PAGE_SIZE = 100
# get_tasks asks for fewer tasks than a page holds, so its answer is one short page, one request.
TASKS_PER_READ = MAX_PAGE_SIZE - 1
# Jittered exponential backoff between read retries: first wait ~0.25 s, never above 4 s,
# so three retries fit inside a worker's patience without hammering a sick server.
RETRY_BASE_S = 0.25
RETRY_MAX_S = 4.0
# With sleep_on_limit, waits longer than this are raised instead (e.g. a daily quota that
# resets at midnight): a CLI caller should hear about it rather than hang for hours. It covers
# Planfix's default 120 s pause after code 22.
MAX_LIMIT_SLEEP_S = 180.0
# A connect attempt that takes longer than this means the host is down, whatever the read
# timeout is.
CONNECT_TIMEOUT_S = 5.0
# A read that keeps meeting Planfix's 429 under sleep_on_limit gives up after this many in a
# row: something else is spending the account's budget and the caller should know.
MAX_RATE_LIMITED_RETRIES = 20
# Download links may redirect (storage hosts do); a loop longer than this is broken.
MAX_REDIRECTS = 5


def _field_list(fields: str | Iterable[str | int] | None) -> str | None:
    if fields is None:
        return None
    if isinstance(fields, str):
        return fields
    return ",".join(str(item) for item in fields)


def _people_id(raw: Any, kind: str = "user") -> Any:
    """Planfix people ids as "user:N" (an int or a digit string gains the prefix)."""
    if isinstance(raw, int) or (isinstance(raw, str) and raw.isdigit()):
        return f"{kind}:{raw}"
    return raw


class PlanfixClient:
    """A REST client for one Planfix account.

    `account` keys the shared limiter. `http` may be an injected planfix.http.Http (a pool shared
    by a process's clients) or, in tests, anything with its request() (Starlette's TestClient),
    which keeps its own timeouts; otherwise the client owns one built with `timeout` (connect
    capped at CONNECT_TIMEOUT_S) and `close()` closes it.
    """

    def __init__(self, base_url: str, token: str, *, account: str,
                 limiter: AccountLimiter | None = None, http: Http | None = None,
                 timeout: float = 10.0, read_retries: int = 3, sleep_on_limit: bool = False,
                 max_limit_sleep_s: float = MAX_LIMIT_SLEEP_S, source_id: str | None = None,
                 lane: str = DEFAULT_LANE, link: str = ""):
        if not token:
            raise ValueError("a Planfix API token is required")
        if read_retries < 0:
            raise ValueError("read_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self._token = token
        self.account = account
        # Whose turn this client's requests take in the account's budget (one lane per link:
        # planfix.limiter shares an account's slots between lanes round-robin).
        self.lane = lane
        # The link this client's requests serve, for crosslink_link_planfix_requests ("": none
        # or several). A name from links.yaml, never from a message: it becomes a label value.
        self.link = link
        self.limiter = limiter
        self.read_retries = read_retries
        self.sleep_on_limit = sleep_on_limit
        self.source_id = source_id
        self.retry_base_s = RETRY_BASE_S
        self.max_limit_sleep_s = max_limit_sleep_s
        self._random = random.Random()
        self._owns_http = http is None
        self.http = http if http is not None else Http(timeout=timeout, connect_timeout=CONNECT_TIMEOUT_S)
        # Planfix's approximate remaining daily requests, from X-RateLimit-Remaining.
        self.rate_limit_remaining: int | None = None

    def __repr__(self) -> str:
        return f"PlanfixClient(account={self.account!r}, base_url={self.base_url!r}, token=***)"

    def close(self) -> None:
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> PlanfixClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ==========================================================================================
    # Transport

    def _scrub(self, text: str) -> str:
        return text.replace(self._token, "***") if self._token in text else text

    def _wait_for_limiter(self, operation: str) -> None:
        """Take a slot from the shared limiter, sleeping only when allowed to."""
        if self.limiter is None:
            return
        while True:
            permit = self.limiter.acquire(self.account, self.lane)
            if permit.go:
                return
            wait_s = permit.wait_ms / 1000.0
            metrics.limiter_wait(self.account, permit.reason, wait_s)
            if not self.sleep_on_limit or wait_s > self.max_limit_sleep_s:
                raise RateLimited(
                    f"{operation}: limiter says wait {permit.wait_ms} ms ({permit.reason})",
                    retry_after_ms=permit.wait_ms, scope="limiter", operation=operation)
            log.debug("planfix %s waits %d ms for the limiter (%s)", operation, permit.wait_ms,
                      permit.reason, extra={"account": self.account})
            time.sleep(wait_s)

    def _answered(self, operation: str) -> None:
        """A request the limiter granted has reached Planfix (its answer is in, or the line
        broke after it was sent): the limiter holds the account's next grant back to an
        interval after now (AccountLimiter.answered). A Redis failure here is logged and let
        pass: the request is done and its outcome must reach the caller; the next grant then
        keeps only the limiter's safety margin over arrival jitter."""
        if self.limiter is None:
            return
        try:
            self.limiter.answered(self.account)
        except redis.RedisError as exc:
            log.warning("planfix %s: answer not reported to the limiter (%s)", operation,
                        type(exc).__name__, extra={"account": self.account})

    def _backoff(self, attempt: int) -> float:
        # Full jitter: retries of several workers against one sick account spread out.
        ceiling = min(RETRY_MAX_S, self.retry_base_s * (2 ** attempt))
        return self._random.uniform(ceiling / 2, ceiling)

    def _send(self, method: str, url: str, *, operation: str, is_write: bool,
              params: Mapping[str, Any] | None, json_body: Any, files: Any,
              auth: bool = True, granted: bool = True) -> Response:
        """Send one request as it is. GRANTED: it took a slot of the account's limiter (every
        REST request; not a download from the storage host a link points at), so its answer is
        reported to the limiter (_answered) as soon as it is in."""
        headers = {"Accept": "application/json"}
        if auth:
            headers["Authorization"] = f"Bearer {self._token}"
        # Timeouts are the HTTP client's: ours is built with `timeout`, an injected one keeps
        # its own (a shared pool is configured once, and Starlette's TestClient has none).
        kwargs: dict[str, Any] = {"headers": headers, "params": params, "follow_redirects": False}
        if json_body is not None:
            kwargs["json"] = json_body
        if files is not None:
            kwargs["files"] = files
        started = time.monotonic()
        try:
            response = self.http.request(method, url, **kwargs)
        except ConnectFailed as exc:
            # Nothing reached Planfix: even a write is known not to be applied (and nothing
            # arrived there to count against the rate).
            metrics.planfix_request(self.account, metrics.UNREACHABLE, started, self.link)
            raise TransientError(f"{operation}: {exc}", operation=operation, maybe_applied=False) from None
        except TimedOut as exc:
            if granted:
                self._answered(operation)
            metrics.planfix_request(self.account, metrics.TIMEOUT, started, self.link)
            raise TransientError(f"{operation}: {exc}", operation=operation, maybe_applied=is_write) from None
        except ConnectionBroken as exc:
            if granted:
                self._answered(operation)
            metrics.planfix_request(self.account, metrics.TRANSPORT_ERROR, started, self.link)
            raise TransientError(f"{operation}: {exc}", operation=operation, maybe_applied=is_write) from None
        if granted:
            self._answered(operation)
        metrics.planfix_request(self.account, response.status_code, started, self.link)
        elapsed_ms = (time.monotonic() - started) * 1000
        log.debug("planfix %s -> %d in %.0f ms", operation, response.status_code, elapsed_ms,
                  extra={"account": self.account})
        remaining = response.headers.get("X-RateLimit-Remaining")
        if remaining is not None and remaining.strip().lstrip("-").isdigit():
            self.rate_limit_remaining = int(remaining)
        return response

    def _parse(self, response: Response, *, operation: str, is_write: bool) -> dict[str, Any]:
        status = response.status_code
        payload: Any = None
        if response.content:
            try:
                payload = response.json()
            except ValueError:
                payload = None
                if 200 <= status < 300:
                    raise TransientError(f"{operation}: HTTP {status} with a body that is not JSON",
                                         http_status=status, operation=operation,
                                         maybe_applied=is_write) from None
        error = classify(status, payload, operation=operation, is_write=is_write,
                         retry_after=response.headers.get("Retry-After"))
        if error is not None:
            error.args = (self._scrub(error.message),)
            error.message = error.args[0]
            raise error
        return payload if isinstance(payload, dict) else {}

    def _record_pause(self, error: RateLimited) -> None:
        """Planfix told us to wait: make every process sharing the limiter wait too."""
        if self.limiter is None or error.scope == "limiter":
            return
        reason = REASON_RATE if error.scope == "rate" else "daily_quota"
        self.limiter.block_until(self.account, error.retry_after_ms / 1000.0, reason=reason)

    def _request(self, method: str, path: str, *, operation: str, is_write: bool,
                 params: Mapping[str, Any] | None = None, json_body: Any = None,
                 files: Any = None) -> tuple[int, dict[str, Any]]:
        """One logical call: limiter, send, classify; reads retried, writes sent once."""
        url = self.base_url + path
        attempt = 0
        limited = 0
        while True:
            self._wait_for_limiter(operation)
            try:
                response = self._send(method, url, operation=operation, is_write=is_write,
                                      params=params, json_body=json_body, files=files)
                return response.status_code, self._parse(response, operation=operation,
                                                         is_write=is_write)
            except RateLimited as exc:
                self._record_pause(exc)
                wait_s = exc.retry_after_ms / 1000.0
                limited += 1
                if (is_write or not self.sleep_on_limit or wait_s > self.max_limit_sleep_s
                        or limited > MAX_RATE_LIMITED_RETRIES):
                    log.info("planfix %s rate limited (%s), wait %d ms", operation, exc.scope,
                             exc.retry_after_ms, extra={"account": self.account})
                    raise
                # The limiter now holds the pause; the next _wait_for_limiter sleeps it out.
                if self.limiter is None:
                    time.sleep(wait_s)
            except TransientError as exc:
                if is_write or attempt >= self.read_retries:
                    log.warning("planfix %s failed: %s", operation, exc,
                                extra={"account": self.account})
                    raise
                delay = self._backoff(attempt)
                attempt += 1
                log.info("planfix %s transient failure, retry %d/%d in %.2f s: %s", operation,
                         attempt, self.read_retries, delay, exc, extra={"account": self.account})
                time.sleep(delay)

    def _read(self, method: str, path: str, operation: str, **kwargs: Any) -> dict[str, Any]:
        return self._request(method, path, operation=operation, is_write=False, **kwargs)[1]

    def _write(self, method: str, path: str, operation: str, **kwargs: Any) -> tuple[int, dict[str, Any]]:
        return self._request(method, path, operation=operation, is_write=True, **kwargs)

    def _new_id(self, payload: Mapping[str, Any], operation: str) -> int:
        raw = payload.get("id")
        try:
            return int(raw)
        except (TypeError, ValueError):
            # Something was probably created, but we cannot say what: check before rewriting.
            raise TransientError(f"{operation}: answer carries no id", operation=operation,
                                 maybe_applied=True) from None

    def _pages(self, path: str, operation: str, body: dict[str, Any], key: str,
               page_size: int) -> Iterator[dict[str, Any]]:
        """Offset paging until a short page: Planfix gives no total and no has_more flag."""
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, got {page_size}")
        offset = 0
        while True:
            payload = self._read("POST", path, operation,
                                 json_body={**body, "offset": offset, "pageSize": page_size})
            items = payload.get(key) or []
            yield from items
            if len(items) < page_size:
                return
            offset += len(items)

    def _with_source(self, body: dict[str, Any]) -> dict[str, Any]:
        if self.source_id:
            body["sourceId"] = self.source_id
        return body

    # ==========================================================================================
    # Health

    def ping(self) -> dict[str, Any]:
        """GET /ping: proves the token works (401 code 1 -> AuthError)."""
        return self._read("GET", "/ping", "GET /ping")

    # ==========================================================================================
    # Tasks (addressed by their number, never the internal id)

    def get_task(self, number: int, fields: str | Iterable[str | int] = TASK_SYNC_FIELDS) -> dict[str, Any]:
        params: dict[str, Any] = {"fields": _field_list(fields)}
        if self.source_id:
            params["sourceId"] = self.source_id
        return self._read("GET", f"/task/{int(number)}", "GET /task/{id}", params=params).get("task") or {}

    def create_task(self, body: Mapping[str, Any]) -> int:
        """POST /task/ -> the new task's number. Never retried: see the module docstring."""
        _, payload = self._write("POST", "/task/", "POST /task/", json_body=dict(body))
        return self._new_id(payload, "POST /task/")

    def update_task(self, number: int, body: Mapping[str, Any]) -> WriteOutcome:
        """POST /task/{id}: only the fields sent change (status too: there is no status endpoint).
        Never silent (no write of ours is): Planfix keeps silent changes out of the task's
        history, which is what people on either side check when they disagree."""
        status, payload = self._write("POST", f"/task/{int(number)}", "POST /task/{id}", json_body=dict(body))
        return write_outcome(status, payload)

    def list_tasks(self, filters: Sequence[Mapping[str, Any]] | None = None,
                   fields: str | Iterable[str | int] = TASK_SYNC_FIELDS,
                   page_size: int = MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        body = self._with_source({"fields": _field_list(fields)})
        if filters:
            body["filters"] = [dict(item) for item in filters]
        return self._pages("/task/list", "POST /task/list", body, "tasks", page_size)

    def get_tasks(self, numbers: Iterable[int],
                  fields: str | Iterable[str | int] = TASK_SYNC_FIELDS) -> dict[int, dict[str, Any]]:
        """The tasks NUMBERS, by number, with one POST /task/list per TASKS_PER_READ of them
        (filter 57, "task number", takes a list). A task missing from the answer is missing
        from the result: deleted, or out of the token's sight (GET /task/{id} tells which)."""
        wanted = sorted({int(number) for number in numbers})
        found: dict[int, dict[str, Any]] = {}
        for start in range(0, len(wanted), TASKS_PER_READ):
            chunk = wanted[start:start + TASKS_PER_READ]
            for task in self.list_tasks([{"type": 57, "operator": "equal", "value": chunk}], fields=fields):
                if task.get("id") is not None:
                    found[int(task["id"])] = task
        return found

    # ==========================================================================================
    # Comments

    def list_task_comments(self, number: int, fields: str | Iterable[str] = COMMENT_FIELDS,
                           type_list: str = "Comments",
                           order: tuple[str, str] | Sequence[tuple[str, str]] | None = ("id", "Asc"),
                           page_size: int = MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """POST /task/{id}/comments/list. typeList: Comments | All | New | Deleted."""
        body: dict[str, Any] = {"fields": _field_list(fields), "typeList": type_list}
        if order:
            pairs = [order] if isinstance(order[0], str) else list(order)
            # The schema spells the key "filed", its example "field"; the example is what
            # Planfix is documented to accept (API-NOTES section 3) [verify].
            body["resultOrder"] = [{"field": name, "direction": direction} for name, direction in pairs]
        return self._pages(f"/task/{int(number)}/comments/list", "POST /task/{id}/comments/list",
                           body, "comments", page_size)

    def create_comment(self, number: int, body: Mapping[str, Any]) -> int:
        """POST /task/{id}/comments/ -> the new comment's id. Never retried."""
        operation = "POST /task/{id}/comments/"
        _, payload = self._write("POST", f"/task/{int(number)}/comments/", operation, json_body=dict(body))
        return self._new_id(payload, operation)

    def update_comment(self, number: int, comment_id: int, body: Mapping[str, Any]) -> WriteOutcome:
        status, payload = self._write("POST", f"/task/{int(number)}/comments/{int(comment_id)}",
                                      "POST /task/{id}/comments/{commentId}", json_body=dict(body))
        return write_outcome(status, payload)

    def get_comment(self, comment_id: int, fields: str | Iterable[str] = COMMENT_FIELDS) -> dict[str, Any]:
        return self._read("GET", f"/comment/{int(comment_id)}", "GET /comment/{id}",
                          params={"fields": _field_list(fields)}).get("comment") or {}

    def delete_comment(self, comment_id: int) -> None:
        """DELETE /comment/{id}: Planfix marks it deleted; it stays readable with isDeleted."""
        self._write("DELETE", f"/comment/{int(comment_id)}", "DELETE /comment/{id}")

    def list_comments(self, filters: Sequence[Mapping[str, Any]] | None = None,
                      fields: str | Iterable[str] = COMMENT_FIELDS, type_list: str | None = None,
                      page_size: int = MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """POST /comment/list across all tasks (filters 3000 date, 3001 author)."""
        body = self._with_source({"fields": _field_list(fields)})
        if filters:
            body["filters"] = [dict(item) for item in filters]
        if type_list:
            body["typeList"] = type_list
        return self._pages("/comment/list", "POST /comment/list", body, "comments", page_size)

    # ==========================================================================================
    # Checklists (items belong to a task; Planfix cannot delete them: DELETE answers 405)

    def list_checklist(self, number: int, fields: str | Iterable[str] = CHECKLIST_FIELDS,
                       page_size: int = MAX_PAGE_SIZE) -> Iterator[dict[str, Any]]:
        """POST /task/{id}/checklist/list: every item of task NUMBER, every page."""
        return self._pages(f"/task/{int(number)}/checklist/list", "POST /task/{id}/checklist/list",
                           {"fields": _field_list(fields)}, "items", page_size)

    def get_checklist_item(self, number: int, item_id: int,
                           fields: str | Iterable[str] = CHECKLIST_FIELDS) -> dict[str, Any]:
        return self._read("GET", f"/task/{int(number)}/checklist/{int(item_id)}",
                          "GET /task/{id}/checklist/{itemId}",
                          params={"fields": _field_list(fields)}).get("item") or {}

    def create_checklist_item(self, number: int, body: Mapping[str, Any]) -> int:
        """POST /task/{id}/checklist -> the new item's id. Never retried: see the module docstring."""
        operation = "POST /task/{id}/checklist"
        _, payload = self._write("POST", f"/task/{int(number)}/checklist", operation, json_body=dict(body))
        return self._new_id(payload, operation)

    def update_checklist_item(self, number: int, item_id: int, body: Mapping[str, Any]) -> WriteOutcome:
        """POST /task/{id}/checklist/{itemId}: only the fields sent change (name, isDone, ...)."""
        status, payload = self._write("POST", f"/task/{int(number)}/checklist/{int(item_id)}",
                                      "POST /task/{id}/checklist/{itemId}", json_body=dict(body))
        return write_outcome(status, payload)

    # ==========================================================================================
    # Processes, statuses, people, custom fields

    def list_processes(self) -> list[dict[str, Any]]:
        return self._read("GET", "/process/task", "GET /process/task",
                          params={"fields": "id,name"}).get("processes") or []

    def list_statuses(self, process_id: int, fields: str | Iterable[str] = STATUS_FIELDS) -> list[dict[str, Any]]:
        return self._read("GET", f"/process/task/{int(process_id)}/statuses",
                          "GET /process/task/{id}/statuses",
                          params={"fields": _field_list(fields)}).get("statuses") or []

    def list_users(self, filters: Sequence[Mapping[str, Any]] | None = None, only_active: bool = True,
                   fields: str | Iterable[str] = USER_FIELDS,
                   page_size: int = MAX_PAGE_SIZE) -> list[dict[str, Any]]:
        """POST /user/list with prefixed ids, every page; ids come back as "user:N"."""
        body = self._with_source({"fields": _field_list(fields), "onlyActive": only_active,
                                  "prefixedId": True})
        if filters:
            body["filters"] = [dict(item) for item in filters]
        users = []
        for user in self._pages("/user/list", "POST /user/list", body, "users", page_size):
            if "id" in user:
                user = {**user, "id": _people_id(user["id"])}
            users.append(user)
        return users

    def list_custom_fields(self, fields: str | Iterable[str] = CUSTOM_FIELD_FIELDS) -> list[dict[str, Any]]:
        return self._read("GET", "/customfield/task", "GET /customfield/task",
                          params={"fields": _field_list(fields)}).get("customfields") or []

    # ==========================================================================================
    # Files

    def upload_file(self, name: str, content: bytes) -> int:
        """POST /file/ (multipart field `file`) -> the file id. Never retried."""
        _, payload = self._write("POST", "/file/", "POST /file/",
                                 files={"file": (name, content, "application/octet-stream")})
        return self._new_id(payload, "POST /file/")

    def get_file(self, file_id: int, fields: str = FILE_FIELDS) -> dict[str, Any]:
        return self._read("GET", f"/file/{int(file_id)}", "GET /file/{id}",
                          params={"fields": fields}).get("file") or {}

    def download_file(self, file_id: int) -> tuple[str, bytes]:
        """The file's name and bytes.

        Reads the file's expiring downloadUrl and fetches it WITHOUT our Authorization header
        (a presigned URL needs none, and the token must not travel to a storage host). When no
        downloadUrl is given, follows the 302 of /file/{id}/download the same way.
        """
        info = self.get_file(file_id)
        name = str(info.get("name") or f"file-{file_id}")
        url = info.get("downloadUrl")
        if not url:
            url = self._redirect_target(file_id)
        return name, self._fetch_bytes(str(url), "GET downloadUrl")

    def _redirect_target(self, file_id: int) -> str:
        operation = "GET /file/{id}/download"
        self._wait_for_limiter(operation)
        url = f"{self.base_url}/file/{int(file_id)}/download"
        response = self._send("GET", url, operation=operation, is_write=False, params=None,
                              json_body=None, files=None)
        location = response.headers.get("Location")
        if response.status_code in (301, 302, 303, 307, 308) and location:
            return urljoin(url, location)
        self._parse(response, operation=operation, is_write=False)
        raise TransientError(f"{operation}: HTTP {response.status_code} without a redirect",
                             http_status=response.status_code, operation=operation)

    def _fetch_bytes(self, url: str, operation: str) -> bytes:
        attempt = 0
        redirects = 0
        while True:
            try:
                response = self._send("GET", url, operation=operation, is_write=False, params=None,
                                      json_body=None, files=None, auth=False, granted=False)
                if response.status_code in (301, 302, 303, 307, 308) and response.headers.get("Location"):
                    redirects += 1
                    if redirects > MAX_REDIRECTS:
                        raise PermanentError(f"{operation}: more than {MAX_REDIRECTS} redirects",
                                           operation=operation)
                    url = urljoin(url, response.headers["Location"])
                    continue
                if response.status_code >= 500:
                    raise TransientError(f"{operation}: HTTP {response.status_code}",
                                         http_status=response.status_code, operation=operation)
                if response.status_code >= 400:
                    # An expired or forged link: the file id itself may still be fine.
                    raise TransientError(f"{operation}: HTTP {response.status_code} (link expired?)",
                                         http_status=response.status_code, operation=operation)
                return response.content
            except TransientError:
                if attempt >= self.read_retries:
                    raise
                time.sleep(self._backoff(attempt))
                attempt += 1

    def attach_file_to_task(self, file_id: int, task_number: int) -> None:
        """POST /file/{id}/attach/task?id=<taskNumber> (the spec names both parameters `id`)."""
        self._write("POST", f"/file/{int(file_id)}/attach/task", "POST /file/{id}/attach/task",
                    params={"id": int(task_number)})

    def list_task_files(self, number: int, only_description: bool = False) -> list[dict[str, Any]]:
        """GET /task/{id}/files: the task's files; with ONLY_DESCRIPTION, only the task card's
        (not those attached to its comments)."""
        params = {"onlyFromDescription": "true"} if only_description else None
        return self._read("GET", f"/task/{int(number)}/files", "GET /task/{id}/files",
                          params=params).get("files") or []
