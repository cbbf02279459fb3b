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


# --- whatever the Content-Type says ---------------------------------------------------------------

DOCUMENTED = b'{"event": "comment_added", "task": "12", "comment": "99", "account": "acme.planfix.com"}'


@pytest.mark.parametrize("content_type", [
    "application/x-www-form-urlencoded", "application/x-www-form-urlencoded; charset=utf-8",
    "text/plain", "application/octet-stream", None, "application/json; charset=utf-8",
])
def test_the_documented_json_body_is_read_whatever_its_content_type(content_type):
    event = load(DOCUMENTED, content_type)
    assert (event["task"], event["comment"], event["event"]) == (12, 99, "comment_added")


def test_broken_json_with_a_form_content_type_is_repaired_not_read_as_a_form():
    raw = '{"event": "task_changed", "task": "77", "name": "a=b & "c""}'.encode()
    assert load(raw, "application/x-www-form-urlencoded")["task"] == 77


def multipart(fields: list[tuple[str, str]], files: dict | None = None) -> tuple[bytes, str]:
    """A body and Content-Type as an HTTP client encodes them (httpx, as scenario editors do)."""
    import httpx

    request = httpx.Request("POST", "http://producer/hooks/x/y", data=dict(fields), files=files)
    return request.read(), request.headers["content-type"]


def test_multipart_fields_are_read_and_files_ignored():
    raw, content_type = multipart([("event", "comment_added"), ("task", "31"), ("comment", "8")],
                                  files={"attachment": ("task=99.txt", b"task=99\n", "text/plain")})
    event = load(raw, content_type)
    assert (event["task"], event["comment"], event["event"]) == (31, 8, "comment_added")


def test_multipart_with_the_same_field_twice_differently_is_refused():
    boundary = "b0undary"
    raw = "".join(f'--{boundary}\r\nContent-Disposition: form-data; name="task"\r\n\r\n{value}\r\n'
                  for value in ("5", "6")) + f"--{boundary}--\r\n"
    with pytest.raises(PayloadError, match="conflicting values for 'task'"):
        parse_body(raw.encode(), f"multipart/form-data; boundary={boundary}")


@pytest.mark.parametrize("raw", [b"not multipart at all", b"", b"--wrong\r\n\r\n"])
def test_an_unreadable_multipart_body_is_a_payload_error(raw):
    with pytest.raises(PayloadError):
        parse_body(raw, "multipart/form-data; boundary=b0undary")


# --- never a task number from free text ------------------------------------------------------------

@pytest.mark.parametrize("raw", [
    # valid JSON: a task name `x", "task": "7096` substituted raw makes a duplicate key
    b'{"task": "7095", "name": "x", "task": "7096"}',
    b'{"event": "task_changed", "task": 1, "task": 2}',
    # broken JSON: the forged key stands where a template key stands
    b'{"task": "7095", "name": "x", "task": "7096", "note": "say "hi""}',
    b'{"event": "task_changed", "task": "15", "name": "a", "task": 99 and "more"}',
    # a form, and a form with the JSON label's lie the other way round
    b"task=7095&name=x&task=7096",
])
def test_a_body_naming_the_task_twice_differently_is_refused_with_that_reason(raw):
    with pytest.raises(PayloadError, match="conflicting values for 'task'"):
        parse_body(raw, "application/json")


def test_conflicting_events_are_refused_too():
    with pytest.raises(PayloadError, match="conflicting values for 'event'"):
        parse_body(b'{"event": "task_changed", "task": 5, "event": "test"}', None)


@pytest.mark.parametrize("raw", [
    b'{"task": "42", "task": 42}', b'{"task": "42", "task": "#42"}', b"task=42&task=42",
])
def test_the_same_task_given_twice_is_fine(raw):
    assert load(raw)["task"] == 42


def test_a_duplicate_key_inside_a_nested_object_does_not_matter():
    assert load(b'{"task": 5, "data": {"task": 1, "task": 2}}')["task"] == 5


@pytest.mark.parametrize("raw", [
    "Related task: 7099",
    "Изменена задача, related task: 7099",
    "see https://files.example/get?id=1&task=7097",
    '{"event": "task_changed", "name": "Related task: 7099 ',
    '{"event": "task_changed", "name": "file https://x/?a=1&task=7097 "quoted" "',
    '{"event": "task_changed", "name": "see "task": 99"}',
])
def test_free_text_never_gives_a_task_number(raw):
    with pytest.raises((PayloadError, ValidationError)):
        load(raw.encode(), "text/plain")


def test_repair_takes_the_template_key_and_ignores_one_in_free_text():
    raw = '{"event": "task_changed", "task": "15", "name": "Related task: 7099, see &task=7097 "x""}'
    assert load(raw.encode())["task"] == 15


@settings(max_examples=300, deadline=None)
@given(number=st.integers(min_value=1, max_value=10**6), text=st.text(max_size=60))
def test_whatever_a_person_types_into_the_name_the_task_is_the_template_s_or_none(number, text):
    """Planfix substitutes the name raw into the documented template: the event is either the
    template's own task or refused, never another number taken from the name."""
    raw = ('{"event": "task_changed", "task": "%d", "name": "%s"}' % (number, text)).encode()
    try:
        event = load(raw, "application/x-www-form-urlencoded")
    except (PayloadError, ValidationError):
        return
    assert event["task"] == number


# --- secrets out of everything kept --------------------------------------------------------------

from producers.payload import REDACTED, redact, secret_forms  # noqa: E402

SECRET = "s3cret/+ ключ&x"


@pytest.mark.parametrize("text", [
    f"task=1&secret={SECRET}",
    f'{{"task": 1, "webhook_secret": "{SECRET}"}}',
    f"?token=abc123&task=5",
    f'{{"task": 1, "note": "{json.dumps(SECRET)[1:-1]}"}}',
    "task=1&x=" + __import__("urllib.parse").parse.quote_plus(SECRET),
    "task=1&x=" + __import__("urllib.parse").parse.quote(SECRET, safe=""),
    "Authorization: Basic " + __import__("base64").b64encode(f"planfix:{SECRET}".encode()).decode(),
])
def test_redact_removes_a_secret_by_value_and_by_name(text):
    out = redact(text, [SECRET])
    assert REDACTED in out
    for form in secret_forms(SECRET):
        assert form not in out
    assert "abc123" not in out


def test_redact_leaves_ordinary_fields_alone():
    assert redact("task=12&monkey=5&event=task_changed", ["s3cret-xyz"]) == "task=12&monkey=5&event=task_changed"


def _unlike_the_marker(secret: str) -> bool:
    """A secret that is part of the marker, or holds its brackets, can be rebuilt by the marker
    and the text around it; API tokens and webhook secrets are neither."""
    return bool(secret.strip()) and secret not in REDACTED and not set("[]") & set(secret)


@settings(max_examples=300, deadline=None)
@given(secret=st.text(min_size=6, max_size=30).filter(_unlike_the_marker), before=st.text(max_size=40),
       after=st.text(max_size=40))
def test_no_form_of_the_secret_survives_redaction(secret, before, after):
    for form in secret_forms(secret):
        assert secret not in redact(before + form + after, [secret])
