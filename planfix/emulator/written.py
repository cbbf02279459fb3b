"""What a write request did to the world, as the request log keeps it.

A chaos run judges the sync's journal against what its writes really did, and a write's answer
does not say: a 500 after commit, a held answer (timeout) and a connection closed after the head
all follow a write that was applied, a 202 is applied later or never, a plain 500 or a refusal
applies nothing. So each write request's log entry carries a record of its own (`write`): the
request's JSON body, whether the world took it (`applied`; for a 202, set when the queued change
lands), the id it created and the fields it refused. Planfix keeps no such log; it is the
emulator's own control surface, like the fault each entry names.
"""

from __future__ import annotations

import json
from typing import Any, Callable

# Route scopes that only read: a request under any other scope writes.
READ_SUFFIX = "_readonly"


def write_record(scope: str | None, body: Any) -> dict[str, Any] | None:
    """A fresh record for a request under SCOPE with BODY, nothing applied yet; None for a read.
    (A write refused before its body was read, for its token or its scope, logs None as well:
    it applied nothing either.)"""
    if scope is None or scope.endswith(READ_SUFFIX):
        return None
    return {"body": body, "applied": False, "queued": None, "id": None, "failures": []}


def took(record: dict[str, Any] | None, answer: Any) -> None:
    """The handler applied the write and answered ANSWER (its response, before any fault)."""
    if record is None:
        return
    record["applied"] = True
    try:
        payload = json.loads(bytes(answer.body or b"{}"))
    except (ValueError, TypeError, AttributeError):
        return
    if isinstance(payload, dict):
        if payload.get("id") is not None:
            record["id"] = payload["id"]
        record["failures"] = [failure.get("field") for failure in payload.get("failures") or []]


def queued(record: dict[str, Any] | None, kind: str, apply: Callable[[], Any]) -> Callable[[], Any]:
    """APPLY, a change answered 202 (KIND), recording in RECORD whether it landed when it runs."""
    if record is None:
        return apply
    record["queued"] = kind

    def apply_and_record() -> Any:
        failures = apply()
        record["applied"] = True
        record["failures"] = [failure.get("field") for failure in failures or []]
        return failures

    return apply_and_record
