"""Secrets never reach a log line: by value once registered, and by pattern always."""

from __future__ import annotations

import io
import json
import logging
import time

import pytest

from crosslink.base.logs import JsonFormatter, TextFormatter, configure, redact, register_secret


def test_registered_secret_is_masked_everywhere():
    register_secret("tok-very-secret-123")
    assert "tok-very-secret-123" not in redact("token tok-very-secret-123 in a message")


def test_credentials_are_masked_by_pattern():
    text = redact("Authorization: Bearer abc.def-123 and Basic dXNlcjpwYXNz ?access_token=zzz&x=1")
    assert "abc.def-123" not in text and "dXNlcjpwYXNz" not in text and "zzz" not in text


@pytest.fixture
def captured():
    stream = io.StringIO()
    root = logging.getLogger()
    before, level = list(root.handlers), root.level
    configure("INFO", json_lines=True, stream=stream)
    yield stream
    root.handlers[:] = before
    root.setLevel(level)


def test_json_lines_carry_context_and_hide_secrets_in_exceptions(captured):
    register_secret("s3cret-webhook-value")
    stream = captured
    log = logging.getLogger("crosslink.test")
    try:
        raise RuntimeError("failed with s3cret-webhook-value")
    except RuntimeError:
        log.exception("oops %s", "s3cret-webhook-value", extra={"link": "acme", "task": 5})
    line = json.loads(stream.getvalue().strip().splitlines()[-1])
    assert line["link"] == "acme" and line["task"] == 5 and line["level"] == "error"
    assert "s3cret-webhook-value" not in stream.getvalue()
    assert "RuntimeError" in line["exc"]


def test_context_providers_fill_what_a_line_does_not_say_and_never_break_logging(captured):
    from crosslink.base import logs

    def running_job():
        return {"job": "job-42", "link": "from-provider", "password": "not a context field"}

    def broken():
        raise RuntimeError("a provider with a bug")

    logs.add_context(broken)
    logs.add_context(running_job)
    try:
        log = logging.getLogger("crosslink.test")
        log.info("deep inside a run", extra={"link": "acme"})
    finally:
        logs._context_providers[:] = [p for p in logs._context_providers if p not in (broken, running_job)]
    line = json.loads(captured.getvalue().strip().splitlines()[-1])
    assert line["job"] == "job-42"
    assert line["link"] == "acme"  # what the code said wins over the provider
    assert "password" not in line


def test_every_line_says_when_in_utc_to_the_millisecond(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Vladivostok")   # a machine far from UTC
    time.tzset()
    record = logging.LogRecord("crosslink.test", logging.INFO, __file__, 1, "hello", None, None)
    record.created = 1796619000.25                 # 2026-12-07T04:50:00.250 UTC
    try:
        assert json.loads(JsonFormatter().format(record))["ts"] == "2026-12-07T04:50:00.250+00:00"
        assert TextFormatter().format(record).startswith("2026-12-07T04:50:00.250+00:00 INFO")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
