"""What every part of the emulated world shares: the account record, errors, and the world's state.

The world is split by resource (accounts, limits, directory, tasks, comments, files, checklists,
scenario events), each a mixin of `World`. They meet here and nowhere else: this module holds the
`Account` they all read and write, `ApiError` they all raise, the parsing helpers and constants
more than one of them uses, and `WorldCore`, the state and the lock behind every mixin. It imports
none of them, so the mixins can each import it without a cycle.
"""

from __future__ import annotations

import collections
import random
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from planfix.emulator import scenarios as scenario_mod

# List endpoints return at most this many items per page.
MAX_PAGE_SIZE = 100
# sourceDataVersion is a string of at most 100 characters (spec).
SOURCE_VERSION_MAX = 100
# A task's fields that hold people and groups ({users, groups}): seeding and task writes read them.
PEOPLE_FIELDS = ("assignees", "participants", "auditors")

# Every fault kind an account can be given, all off: set_faults puts the kinds it is not given back to these.
FAULT_DEFAULTS: dict[str, Any] = {
    "error_500": 0.0,               # share answered 500 code 0 with nothing applied
    "error_500_after_commit": 0.0,  # share applied, then answered 500
    "busy_202": 0.0,                # share of task updates answered 202 and applied busy_delay_s later;
    "busy_delay_s": 0.5,            # the task stays locked till then, later updates queue behind
    "lost_202": 0.0,                # share of task updates answered 202 and never applied, the task
                                    # not locked: Planfix is not known to drop a queued change; the
                                    # sync must still not lose it if it did
    "slow": 0.0,                    # share answered after slow_s
    "slow_s": 1.0,
    "timeout": 0.0,                 # share applied, then held timeout_s so the client gives up
    "timeout_s": 5.0,
    "connection_closed": 0.0,       # share applied, then the connection dropped mid-answer
    "slow_202": 0.0,                # share of task updates answered 202 and applied slow_202_delay_s later;
                                    # the task stays locked till then, later updates queue behind
    "slow_202_delay_s": 5.0,
    "jitter_s": 0.0,                # every answer delayed by a uniform draw from 0 to jitter_s
    "quota_exhausted": False,       # every request answered 403 code 22
    "quota_reset_s": None,          # timeToReset while quota_exhausted (None: to the day's end)
}


class ApiError(Exception):
    """A Planfix error answer: HTTP status plus the `{"result":"fail","code","error"}` body."""

    def __init__(self, status: int, code: int, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"result": "fail", "code": self.code, "error": self.message, **self.extra}


@dataclass
class Token:
    secret: str = field(repr=False)
    user: int
    scopes: frozenset[str] | None  # None: every scope ("all")
    revoked: bool = False

    def allows(self, scope: str | None) -> bool:
        return scope is None or self.scopes is None or scope in self.scopes


@dataclass
class Account:
    name: str
    domain: str
    rate_per_s: float | None = None
    daily_quota: int | None = None
    tokens: dict[str, Token] = field(default_factory=dict, repr=False)
    users: dict[int, dict[str, Any]] = field(default_factory=dict)
    groups: dict[int, dict[str, Any]] = field(default_factory=dict)
    processes: dict[int, dict[str, Any]] = field(default_factory=dict)
    projects: dict[int, dict[str, Any]] = field(default_factory=dict)
    templates: dict[int, dict[str, Any]] = field(default_factory=dict)
    custom_fields: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: dict[int, dict[str, Any]] = field(default_factory=dict)
    comments: dict[int, dict[str, Any]] = field(default_factory=dict)
    files: dict[int, dict[str, Any]] = field(default_factory=dict)
    checklist: dict[int, dict[str, Any]] = field(default_factory=dict)  # item id -> item, all tasks
    scenarios: list[dict[str, Any]] = field(default_factory=list, repr=False)  # headers hold secrets
    faults: dict[str, Any] = field(default_factory=lambda: dict(FAULT_DEFAULTS))
    rng: random.Random = field(default_factory=random.Random)
    request_log: list[dict[str, Any]] = field(default_factory=list)
    fault_hits: collections.Counter = field(default_factory=collections.Counter)  # by kind, from the log
    # Task number -> (the 202 fault kind that locked it, its queued changes in order).
    queued: dict[int, tuple[str, list[Callable[[], Any]]]] = field(default_factory=dict)
    served: collections.deque = field(default_factory=collections.deque)
    quota_day: int = -1
    quota_used: int = 0
    next_task: int = 1
    next_comment: int = 1
    next_file: int = 1
    next_checklist_item: int = 1


def parse_fields(text: str | None) -> tuple[set[str], list[int]]:
    """System field names and numeric custom-field ids from a `fields` string.

    The literal word customFieldData is dropped, as Planfix ignores it (API-NOTES.md section 2).
    """
    names: set[str] = set()
    custom: list[int] = []
    for part in (text or "").split(","):
        part = part.strip()
        if not part or part == "customFieldData":
            continue
        if part.isdigit():
            custom.append(int(part))
        else:
            names.add(part)
    return names, custom


def as_int(value: Any, what: str) -> int:
    """An id as an int, from a bare value or an {"id": ...} reference; WHAT names it in the error."""
    if isinstance(value, bool):
        raise ValueError(f"{what} must be an integer")
    if isinstance(value, dict):
        value = value.get("id")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be an integer, got {value!r}") from None


def page_bounds(body: dict[str, Any]) -> tuple[int, int]:
    """(offset, pageSize) of a list request; out-of-range values are a 400 code 41, as in Planfix."""
    try:
        offset = int(body.get("offset", 0))
        size = int(body.get("pageSize", MAX_PAGE_SIZE))
    except (TypeError, ValueError):
        raise ApiError(400, 41, "offset and pageSize must be integers") from None
    if offset < 0:
        raise ApiError(400, 41, "offset must not be negative")
    if not 1 <= size <= MAX_PAGE_SIZE:
        raise ApiError(400, 41, f"pageSize must be between 1 and {MAX_PAGE_SIZE}")
    return offset, size


class WorldCore:
    """The state every resource mixin works on: the accounts, the one lock, the clock, timers.

    The lock is a `threading.RLock` over the whole world (see the package docstring for why). The
    mixins reach each other's helpers through `self` (a task write asks the directory for people
    and the events part to fire scenarios); only `World` puts them all together.
    """

    def __init__(self, *, time_scale: float = 1.0, clock: Callable[[], float] = time.time,
                 seed: int = 0, delivery_timeout_s: float = scenario_mod.DEFAULT_DELIVERY_TIMEOUT_S) -> None:
        self.lock = threading.RLock()
        self.clock = clock
        self.time_scale = float(time_scale)
        self.seed = seed
        self.delivery_timeout_s = float(delivery_timeout_s)
        self.accounts: dict[str, Account] = {}
        self.dispatcher = scenario_mod.Dispatcher(self.time_scale)
        self._url_secret = secrets.token_bytes(16)
        self._timers: list[threading.Timer] = []

    def account(self, name: str) -> Account:
        try:
            return self.accounts[name]
        except KeyError:
            raise ApiError(404, 0, f"Unknown account {name}") from None

    def now(self) -> float:
        return self.clock()

    def close(self) -> None:
        """Stop scenario delivery threads and pending delayed (202) updates."""
        for timer in self._timers:
            timer.cancel()
        self.dispatcher.close()

    def schedule(self, delay_s: float, action: Callable[[], Any]) -> None:
        """Run ACTION later on a timer thread."""
        timer = threading.Timer(delay_s, action)
        timer.daemon = True
        self._timers.append(timer)
        timer.start()

    @staticmethod
    def _guard(failures: list[dict[str, str]], key: str, action: Callable[[], None]) -> None:
        """Run one field's change; a bad value becomes that field's `failures` entry, the rest goes on."""
        try:
            action()
        except (ValueError, TypeError, KeyError) as exc:
            failures.append({"field": key, "error": str(exc) or "Field change failed"})

    @staticmethod
    def _set_source(target: dict[str, Any], key: str, value: Any) -> None:
        """sourceObjectId / sourceDataVersion, which tasks and comments both carry."""
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{key} must be a string")
        if key == "sourceDataVersion" and value and len(value) > SOURCE_VERSION_MAX:
            raise ValueError(f"sourceDataVersion is longer than {SOURCE_VERSION_MAX} characters")
        target[key] = value

    @staticmethod
    def _pick(item: dict[str, Any], fields: str | None) -> dict[str, Any]:
        """The id plus the opt-in `fields` of a flat view (processes, statuses, users, files)."""
        names, _ = parse_fields(fields)
        return {"id": item["id"], **{name: item[name] for name in sorted(names) if name in item and name != "id"}}
