"""The lenient body parser and the webhook schema: what Planfix's raw substitution really sends."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from marshmallow import ValidationError

from producers.payload import PayloadError, parse_body
from schemas.webhook import WebhookEventSchema

schema = WebhookEventSchema()


def load(raw: bytes, content_type: str | None = "application/json") -> dict:
    return schema.load(parse_body(raw, content_type))


def test_clean_json():
    event = load(b'{"event": "comment_added", "task": 42, "comment": 7, "account": "partner"}')
    assert event == {"event": "comment_added", "task": 42, "comment": 7, "account": "partner"}


def test_numbers_as_strings_and_blank_lists():
    event = load(b'{"event": "task_changed", "task": "42", "comment": "", "assignees": "[]"}')
    assert event["task"] == 42 and event["comment"] is None


def test_missing_event_defaults_to_task_changed():
    assert load(b'{"task": 5}')["event"] == "task_changed"


def test_broken_json_from_raw_substitution_is_repaired():
    # A task name with quotes, substituted without escaping, breaks the JSON.
    raw = '{"event": "task_changed", "task": "77", "name": "Fix "the" bug, ёлки 🎄"}'.encode()
    event = load(raw)
    assert event["task"] == 77 and event["event"] == "task_changed"


def test_form_body():
    event = load(b"event=comment_added&task=12&comment=99", "application/x-www-form-urlencoded")
    assert (event["task"], event["comment"], event["event"]) == (12, 99, "comment_added")


def test_form_body_without_content_type():
    assert load(b"task=12&event=task_created", None)["event"] == "task_created"


def test_html_and_emoji_in_other_fields_are_ignored():
    body = {"task": 3, "description": "<p><b>Привет</b> 👋</p>" * 100}
    assert load(json.dumps(body).encode())["task"] == 3


@pytest.mark.parametrize("raw, problem", [
    (b"", "empty"),
    (b"   ", "empty"),
    (b"[1, 2]", "list"),
    (b"hello world", "neither"),
])
def test_unreadable_bodies(raw, problem):
    with pytest.raises(PayloadError, match=problem):
        parse_body(raw, "application/json")


@pytest.mark.parametrize("body", [
    {"event": "task_changed"},                    # no task number
    {"task": "{{Задача.Номер}}"},                 # variable not substituted
    {"task": 0},
    {"task": -5},
    {"task": "12abc"},
    {"task": 10**13},
    {"task": 5, "event": "task_exploded"},
])
def test_unusable_events_are_rejected_with_a_reason(body):
    with pytest.raises(ValidationError) as info:
        load(json.dumps(body).encode())
    assert info.value.messages


def test_internal_id_is_not_mistaken_for_the_number():
    # Only `task` is read; an internal id under another key does not become the task number.
    event = load(b'{"task": 15, "internal": 7000015}')
    assert event["task"] == 15


@settings(max_examples=1500, deadline=None)
@given(st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(str.encode),
    st.dictionaries(st.sampled_from(["task", "event", "comment", "account", "x"]),
                    st.one_of(st.integers(), st.text(max_size=20), st.none(), st.lists(st.integers(), max_size=3)),
                    max_size=5).map(lambda d: json.dumps(d).encode()),
), st.sampled_from(["application/json", "application/x-www-form-urlencoded", None, "text/plain"]))
def test_fuzz_parser_never_raises_anything_but_its_own_errors(raw, content_type):
    try:
        event = load(raw, content_type)
    except (PayloadError, ValidationError):
        return
    assert isinstance(event["task"], int) and 1 <= event["task"] <= 10**12
    assert event["event"] in ("task_created", "task_changed", "comment_added", "comment_changed", "test")


@pytest.mark.parametrize("task", ["1_2", "١٢٣", "１２", "1.5", 1.5, True, " 12 3"])
def test_only_plain_whole_numbers_are_task_numbers(task):
    with pytest.raises(ValidationError):
        schema.load({"task": task})


def test_repair_takes_the_templates_own_field_not_free_text_after_it():
    raw = '{"event": "task_changed", "task": "15", "name": "see "task": 99"}'.encode()
    assert load(raw)["task"] == 15
