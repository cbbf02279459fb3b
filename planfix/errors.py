"""Typed Planfix failures and write outcomes, so callers decide by type instead of parsing text.

A sync job has exactly three ways to react to a failed call, and each class here names one:
- transient (5xx, timeouts, broken connections): try again later; a write that may already have
  been committed says so (`maybe_applied`), so the caller checks before it writes again;
- rate limited (Planfix's 1 req/s, its daily quota, or our own limiter): wait the time given,
  which is not a failure and must not burn a retry attempt;
- permanent (bad token, missing scope, no access, not found, invalid request): retrying cannot
  help; auth/scope/access problems mean the link itself is broken (`severs_link`).

Successful writes are not exceptions but outcomes: Applied, Queued (HTTP 202: Planfix applies the
change later, read it back) and PartiallyApplied (HTTP 200 with per-field `failures`).

`classify` turns one HTTP answer into one of these. It is a pure function: the client does the
I/O, this module decides. Messages are built from the operation template (e.g. "POST /task/{id}"),
the status, the Planfix code and Planfix's own error text; the caller scrubs its token from that
text, so no message ever carries a credential.
"""

from __future__ import annotations

import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

# Planfix's documented pause when code 22 arrives without timeToReset (the one public client
# that handles it waits 120 s; API-NOTES section 1).
DEFAULT_QUOTA_PAUSE_MS = 120_000
# An HTTP 429 without Retry-After: the documented limit is 1 request per second.
DEFAULT_RATE_PAUSE_MS = 1_000
# Planfix error text is quoted into our messages; beyond this it is noise in a log line.
MAX_ERROR_TEXT = 300

# Planfix error codes (REST_API_Коды_ошибок, API-NOTES section 1).
CODE_DAILY_LIMIT = 22
AUTH_CODES = frozenset({1, 2, 16})  # unknown token, token inactive, user inactive
SCOPE_CODES = frozenset({5})
ACCESS_CODES = frozenset({6, 10, 11, 20, 21})  # no access, blocked, frozen, unpaid, free plan
# "Object not found" codes: the first code of each object family (task 1000, contact 2000,
# project 3000, employee 4000, comment 5000, file 7000, directory 8000). Only 1000, 5000 and
# 7000 are shown as "not found" in the spec's examples; the others follow the pattern [verify].
NOT_FOUND_CODES = frozenset({1000, 2000, 3000, 4000, 5000, 7000, 8000})

FAIL_RESULTS = frozenset({"fail", "failure", "error"})


class PlanfixError(Exception):
    """Any failed Planfix call. `kind` is "transient" | "rate_limited" | "permanent"."""

    kind = "permanent"

    def __init__(self, message: str, *, http_status: int | None = None, code: int | None = None,
                 operation: str | None = None):
        super().__init__(message)
        self.message = message
        self.http_status = http_status
        self.code = code
        self.operation = operation

    @property
    def severs_link(self) -> bool:
        """True when the credentials or permissions behind a link no longer work."""
        return False

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.message!r}, http_status={self.http_status}, "
                f"code={self.code}, operation={self.operation!r})")


class TransientError(PlanfixError):
    """Worth retrying later. `maybe_applied` is true for a write whose effect is unknown."""

    kind = "transient"

    def __init__(self, message: str, *, http_status: int | None = None, code: int | None = None,
                 operation: str | None = None, maybe_applied: bool = False):
        super().__init__(message, http_status=http_status, code=code, operation=operation)
        self.maybe_applied = maybe_applied


class RateLimited(PlanfixError):
    """Wait `retry_after_ms` before the next call. `scope`: "rate" | "daily_quota" | "limiter"."""

    kind = "rate_limited"

    def __init__(self, message: str, *, retry_after_ms: int, scope: str,
                 http_status: int | None = None, code: int | None = None,
                 operation: str | None = None):
        super().__init__(message, http_status=http_status, code=code, operation=operation)
        self.retry_after_ms = max(0, int(retry_after_ms))
        self.scope = scope


class PermanentError(PlanfixError):
    """Retrying the same request cannot succeed."""

    kind = "permanent"


class AuthError(PermanentError):
    """The token is unknown or inactive, or its user is deactivated."""

    @property
    def severs_link(self) -> bool:
        return True


class ScopeDenied(PermanentError):
    """The token lacks the scope this endpoint needs."""

    @property
    def severs_link(self) -> bool:
        return True


class AccessDenied(PermanentError):
    """The token's user may not see or change this object, or the account is blocked."""

    @property
    def severs_link(self) -> bool:
        return True


class NotFound(PermanentError):
    """The task, comment or file does not exist (or not for this token's user)."""


class InvalidRequest(PermanentError):
    """Planfix rejected the request itself: bad JSON, missing or invalid parameter."""


# ----------------------------------------------------------------------------------------------
# Write outcomes


@dataclass(frozen=True)
class FieldFailure:
    """One field Planfix refused inside an otherwise accepted update."""

    field: str
    error: str


@dataclass(frozen=True)
class Applied:
    """Planfix applied the whole write."""

    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Queued:
    """HTTP 202: the task was busy; Planfix applies the change later. Read it back to know."""

    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PartiallyApplied:
    """HTTP 200 with `failures`: every field not listed was applied."""

    data: dict[str, Any]
    failures: tuple[FieldFailure, ...]


WriteOutcome = Applied | Queued | PartiallyApplied


def parse_failures(raw: Any) -> tuple[FieldFailure, ...]:
    """Planfix's `failures`, leniently.

    The schema says an array of {field, error}; the spec's own example is a single object;
    a mapping of field -> error is accepted too. Anything else becomes one failure on "?" so it
    is never silently dropped.
    """
    if raw is None or raw == [] or raw == {}:
        return ()
    items: list[Any]
    if isinstance(raw, Mapping):
        if "field" in raw or "error" in raw:
            items = [raw]
        else:
            items = [{"field": key, "error": value} for key, value in raw.items()]
    elif isinstance(raw, list):
        items = raw
    else:
        items = [{"field": "?", "error": raw}]
    failures = []
    for item in items:
        if isinstance(item, Mapping):
            failures.append(FieldFailure(str(item.get("field", "?")), str(item.get("error", ""))))
        else:
            failures.append(FieldFailure("?", str(item)))
    return tuple(failures)


def write_outcome(http_status: int, payload: Mapping[str, Any]) -> WriteOutcome:
    """The outcome of an update that was not an error answer."""
    data = dict(payload)
    if http_status == 202:
        return Queued(data)
    failures = parse_failures(payload.get("failures"))
    if failures:
        return PartiallyApplied(data, failures)
    return Applied(data)


# ----------------------------------------------------------------------------------------------
# Classification


def _lenient(payload: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        for key in (name, name.capitalize()):
            if key in payload:
                return payload[key]
    return None


def envelope_error(payload: Any) -> tuple[int | None, str] | None:
    """(code, text) when the body is a Planfix failure envelope, else None.

    Planfix spells it {"result":"fail","code":N,"error":"..."}; the docs also write
    Result/Code/Error and one client sees {"result":"failure","message":"..."}.
    """
    if not isinstance(payload, Mapping):
        return None
    result = _lenient(payload, "result")
    if not (isinstance(result, str) and result.strip().lower() in FAIL_RESULTS):
        return None
    return _code(payload), str(_lenient(payload, "error", "message") or "")


def _code(payload: Mapping[str, Any]) -> int | None:
    raw = _lenient(payload, "code")
    try:
        return int(raw) if raw is not None else None
    except (TypeError, ValueError):
        return None


def retry_after_ms(header: str | None, default_ms: int = DEFAULT_RATE_PAUSE_MS,
                   now: float | None = None) -> int:
    """A Retry-After header (seconds or an HTTP date) in milliseconds."""
    if not header:
        return default_ms
    header = header.strip()
    try:
        return max(0, int(float(header) * 1000))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(header).timestamp()
    except (TypeError, ValueError, IndexError):
        return default_ms
    return max(0, int((when - (time.time() if now is None else now)) * 1000))


def quota_pause_ms(payload: Mapping[str, Any]) -> int:
    raw = _lenient(payload, "timeToReset")
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        return DEFAULT_QUOTA_PAUSE_MS
    return max(0, int(seconds * 1000))


def classify(http_status: int, payload: Any, *, operation: str, is_write: bool,
             retry_after: str | None = None) -> PlanfixError | None:
    """The error one HTTP answer means, or None when it is a success.

    Assumptions (API-NOTES section 1): the Planfix code decides before the HTTP status, because
    Planfix puts codes under odd statuses (code 1000 under 500 on comment lists, code 22 under
    403 or inside a 2xx body). Without a known code the status decides. A 5xx on a write may
    have been committed before it failed, so it is `maybe_applied`.
    """
    body = payload if isinstance(payload, Mapping) else {}
    failed = envelope_error(payload)
    code = failed[0] if failed else _code(body)
    text = failed[1] if failed else ""
    if failed is None and 200 <= http_status < 300 and code != CODE_DAILY_LIMIT:
        return None
    if failed is None and http_status < 300 and code == CODE_DAILY_LIMIT:
        text = str(_lenient(body, "error", "message") or "")
    text = text[:MAX_ERROR_TEXT]
    where = f"{operation}: HTTP {http_status}" + (f" code {code}" if code is not None else "")
    message = f"{where}: {text}" if text else where
    common = {"http_status": http_status, "code": code, "operation": operation}

    if code == CODE_DAILY_LIMIT:
        return RateLimited(message, retry_after_ms=quota_pause_ms(body), scope="daily_quota",
                           **common)
    if http_status == 429:
        return RateLimited(message, retry_after_ms=retry_after_ms(retry_after), scope="rate",
                           **common)
    if code in AUTH_CODES:
        return AuthError(message, **common)
    if code in SCOPE_CODES:
        return ScopeDenied(message, **common)
    if code in ACCESS_CODES:
        return AccessDenied(message, **common)
    if code in NOT_FOUND_CODES:
        return NotFound(message, **common)
    if http_status == 401:
        return AuthError(message, **common)
    if http_status == 405:
        return ScopeDenied(message, **common)
    if http_status == 403:
        return AccessDenied(message, **common)
    if http_status == 404:
        return NotFound(message, **common)
    if http_status >= 500 or http_status == 408:
        return TransientError(message, maybe_applied=is_write, **common)
    # A 4xx, or a failure envelope inside a 2xx (Planfix does that for some logical failures).
    return InvalidRequest(message, **common)
