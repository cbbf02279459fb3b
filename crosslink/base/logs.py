"""One logging setup for the producer, the workers and the CLI: JSON lines, secrets redacted.

Every secret the process loads (API tokens, webhook secrets) is registered here, and a filter
replaces it wherever it would appear in a record, as a last line of defence behind code that
never logs secrets in the first place. Bearer and Basic credentials are masked by pattern too.

A line's context (link, side, task, event, job) comes from the record's `extra=`, and where the
code that logs cannot know it, from context providers a process registers (`add_context`): a
worker registers one that names the Celery job running now (workers/telemetry.py), so a Planfix
client's warning deep inside a sync run still says which job and which task it belongs to.
"""

from __future__ import annotations

import json
import logging
import re
import sys
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any

REDACTED = "***"
# Secrets shorter than this are not matched by value: too likely to hit ordinary words.
MIN_SECRET_LEN = 6
_CREDENTIAL = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_QUERY_TOKEN = re.compile(r"(?i)(access_token=)[^&\s\"']+")

_secrets: set[str] = set()
_secrets_lock = threading.Lock()
# The same, longest first, rebuilt on each registration: every log line is checked against it
# (twice), so it is not sorted, nor the lock taken, per line.
_by_length: tuple[str, ...] = ()
# Context fields that a JSON line carries when the record has them (`extra=`, or a provider).
CONTEXT_FIELDS = ("link", "side", "task", "event", "job", "account", "comment", "counterpart")

_context_providers: list[Callable[[], Mapping[str, Any]]] = []


def register_secret(value: str | None) -> None:
    global _by_length
    if value and len(value) >= MIN_SECRET_LEN:
        with _secrets_lock:
            _secrets.add(value)
            _by_length = tuple(sorted(_secrets, key=len, reverse=True))


def add_context(provider: Callable[[], Mapping[str, Any]]) -> None:
    """Register PROVIDER: called for every record, what it returns fills context fields the
    record does not set itself (idempotent)."""
    if provider not in _context_providers:
        _context_providers.append(provider)


def redact(text: str) -> str:
    text = _CREDENTIAL.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
    text = _QUERY_TOKEN.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in _by_length:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        record.msg = redact(message)
        record.args = None
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


class ContextFilter(logging.Filter):
    """Fills the record's missing context fields from the registered providers."""

    def filter(self, record: logging.LogRecord) -> bool:
        for provider in _context_providers:
            try:
                fields = provider()
            except Exception:  # noqa: BLE001 - a log line must never fail for want of its context
                continue
            for name, value in fields.items():
                if name in CONTEXT_FIELDS and not hasattr(record, name):
                    setattr(record, name, value)
        return True


def utc_time(record: logging.LogRecord) -> str:
    """When RECORD was made: UTC, ISO 8601, to the millisecond, whatever the machine's zone."""
    return datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": utc_time(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            if hasattr(record, name):
                line[name] = getattr(record, name)
        if record.exc_text:
            line["exc"] = record.exc_text
        return redact(json.dumps(line, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        context = " ".join(
            f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if hasattr(record, name)
        )
        base = f"{utc_time(record)} {record.levelname:<7} {record.getMessage()}"
        if context:
            base += f"  [{context}]"
        if record.exc_text:
            base += "\n" + record.exc_text
        return redact(base)


def configure(level: str = "INFO", json_lines: bool = True, stream: Any = None) -> None:
    """Install one handler on the root logger (idempotent)."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if getattr(handler, "_crosslink", False):
            root.removeHandler(handler)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler._crosslink = True  # type: ignore[attr-defined]
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactingFilter())
    handler.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    root.addHandler(handler)
    root.setLevel(level.upper())
    # httpx logs full URLs at INFO; an access_token query would leak through it.
    logging.getLogger("httpx").setLevel(logging.WARNING)
