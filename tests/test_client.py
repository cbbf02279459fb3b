"""The Planfix REST client.

Two parts:
- the pure classification of answers into typed errors and write outcomes (planfix.errors),
  exhaustively and with hypothesis;
- every client method and every failure class against the emulator, in-process (Starlette's
  TestClient injected as `http`) and over loopback (EmulatorServer), with the emulator's
  request log as the witness of what was sent (exactly one POST for a failed create).
"""

from __future__ import annotations

import base64
import inspect
import logging
import time
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st
from starlette.testclient import TestClient

from planfix import client as client_module
from planfix.client import PlanfixClient
from planfix.emulator.app import create_app
from planfix.emulator.world import World
from planfix.errors import (
    DEFAULT_QUOTA_PAUSE_MS,
    AccessDenied,
    Applied,
    AuthError,
    FieldFailure,
    InvalidRequest,
    NotFound,
    PartiallyApplied,
    PermanentError,
    PlanfixError,
    Queued,
    RateLimited,
    ScopeDenied,
    TransientError,
    classify,
    parse_failures,
    retry_after_ms,
    write_outcome,
)
from planfix.limiter import AccountLimiter

OP = "POST /task/{id}"


def fail(code: int | None, error: str = "boom", **extra) -> dict:
    body = {"result": "fail", "error": error, **extra}
    if code is not None:
        body["code"] = code
    return body


# ==============================================================================================
# Classification (pure)


@pytest.mark.parametrize(
    ("status", "body", "expected", "severs"),
    [
        (401, fail(1, "Access denied, unknown token"), AuthError, True),
        (401, fail(2), AuthError, True),
        (403, fail(16, "user inactive"), AuthError, True),
        (401, None, AuthError, True),
        (405, fail(5, "Scope denied, method not allowed"), ScopeDenied, True),
        (405, None, ScopeDenied, True),
        (403, fail(6, "Access denied for task by id - 10"), AccessDenied, True),
        (403, fail(10), AccessDenied, True),
        (403, fail(11), AccessDenied, True),
        (403, fail(20), AccessDenied, True),
        (403, fail(21), AccessDenied, True),
        (403, None, AccessDenied, True),
        (404, fail(1000, "Task for update not found by id 1"), NotFound, False),
        (400, fail(1000, "Task not found"), NotFound, False),
        # The spec answers a missing task on a comment list with HTTP 500 code 1000.
        (500, fail(1000, "Task not found by id 10"), NotFound, False),
        (400, fail(5000, "Comment not found by id 115"), NotFound, False),
        (400, fail(7000, "File not found by id 13"), NotFound, False),
        (404, None, NotFound, False),
        (400, fail(30, "bad json"), InvalidRequest, False),
        (400, fail(40, "missing"), InvalidRequest, False),
        (400, fail(41, "Status not find by id 2"), InvalidRequest, False),
        (400, fail(7001, "upload"), InvalidRequest, False),
        (422, None, InvalidRequest, False),
        # A logical failure inside a 2xx body is an error too.
        (200, fail(41, "invalid"), InvalidRequest, False),
        (200, {"result": "failure", "message": "nope"}, InvalidRequest, False),
        (200, {"Result": "fail", "Code": 6, "Error": "no"}, AccessDenied, True),
    ],
)
def test_answers_map_to_typed_errors(status, body, expected, severs):
    error = classify(status, body, operation=OP, is_write=True)
    assert type(error) is expected
    assert isinstance(error, PermanentError) and error.kind == "permanent"
    assert error.severs_link is severs
    assert error.http_status == status
    assert error.operation == OP
    assert OP in str(error)


@pytest.mark.parametrize("status", [500, 502, 503, 504])
@pytest.mark.parametrize("is_write", [True, False])
def test_server_errors_are_transient_and_maybe_applied_only_for_writes(status, is_write):
    error = classify(status, fail(0, "Rest API error"), operation=OP, is_write=is_write)
    assert isinstance(error, TransientError) and error.kind == "transient"
    assert error.maybe_applied is is_write
    assert not error.severs_link


def test_code_22_is_the_daily_quota_whatever_the_status():
    for status in (403, 200, 400):
        error = classify(status, fail(22, "limit", timeToReset=3600), operation=OP, is_write=False)
        assert isinstance(error, RateLimited) and error.kind == "rate_limited"
        assert error.scope == "daily_quota" and error.retry_after_ms == 3_600_000
    bare = classify(403, fail(22), operation=OP, is_write=False)
    assert bare.retry_after_ms == DEFAULT_QUOTA_PAUSE_MS
    # Even without a "fail" result, a code 22 in a 2xx body is not a success.
    inside = classify(200, {"code": 22, "error": "limit"}, operation=OP, is_write=False)
    assert isinstance(inside, RateLimited) and inside.scope == "daily_quota"


def test_429_is_the_rate_limit_with_retry_after():
    error = classify(429, fail(0, "Request rate limit exceeded"), operation=OP, is_write=True,
                     retry_after="2")
    assert isinstance(error, RateLimited) and error.scope == "rate" and error.retry_after_ms == 2000
    default = classify(429, None, operation=OP, is_write=True)
    assert default.retry_after_ms == 1000


def test_retry_after_accepts_seconds_fractions_and_http_dates():
    assert retry_after_ms("1.5") == 1500
    assert retry_after_ms(None) == 1000
    assert retry_after_ms("garbage", default_ms=7) == 7
    assert retry_after_ms("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10_000
    assert retry_after_ms("-3") == 0


@pytest.mark.parametrize("status", [200, 201, 202])
def test_successes_are_not_errors(status):
    assert classify(status, {"result": "success", "id": 5}, operation=OP, is_write=True) is None
    assert classify(status, None, operation=OP, is_write=True) is None
    assert classify(status, {"failures": [{"field": "status", "error": "x"}]}, operation=OP,
                    is_write=True) is None


@given(status=st.integers(min_value=100, max_value=599),
       code=st.one_of(st.none(), st.integers(min_value=-5, max_value=9999)),
       text=st.text(max_size=400), is_write=st.booleans())
def test_every_answer_gets_exactly_one_sensible_class(status, code, text, is_write):
    error = classify(status, fail(code, text), operation=OP, is_write=is_write)
    assert isinstance(error, PlanfixError)
    assert error.kind in ("transient", "rate_limited", "permanent")
    assert len(str(error)) < len(OP) + 400  # Planfix's text is capped
    if code == 22:
        assert isinstance(error, RateLimited)
    elif status >= 500 and code not in (1, 2, 16, 5, 6, 10, 11, 20, 21, 1000, 2000, 3000, 4000,
                                        5000, 7000, 8000):
        assert isinstance(error, TransientError) and error.maybe_applied is is_write
    if isinstance(error, TransientError) and not is_write:
        assert not error.maybe_applied


def test_failures_parse_leniently():
    listed = parse_failures([{"field": "status", "error": "not allowed"}, {"field": "x"}])
    assert listed == (FieldFailure("status", "not allowed"), FieldFailure("x", ""))
    # The spec's own example: one object instead of an array.
    assert parse_failures({"field": "counterparty", "error": "bad"}) == (FieldFailure("counterparty", "bad"),)
    assert parse_failures({"status": "bad"}) == (FieldFailure("status", "bad"),)
    assert parse_failures("weird") == (FieldFailure("?", "weird"),)
    assert parse_failures(None) == () and parse_failures([]) == () and parse_failures({}) == ()


def test_write_outcomes():
    assert write_outcome(200, {"result": "success"}) == Applied({"result": "success"})
    assert write_outcome(200, {"result": "success", "failures": []}) == Applied({"result": "success", "failures": []})
    assert isinstance(write_outcome(202, {}), Queued)
    partial = write_outcome(200, {"failures": {"field": "status", "error": "no"}})
    assert isinstance(partial, PartiallyApplied)
    assert partial.failures == (FieldFailure("status", "no"),)


# ==============================================================================================
# Against the emulator

TOKEN = "tok-partner-sync-5d41402abc4b2a76"
READONLY_TOKEN = "tok-partner-readonly-7d793037a076"
HELPER_TOKEN = "tok-partner-helper-aab3238922bcc"
ALL_TOKENS = (TOKEN, READONLY_TOKEN, HELPER_TOKEN)
SEED = {
    "accounts": {
        "partner": {
            "limits": {"rate_per_s": 0, "daily_quota": 0},
            "tokens": [
                {"token": TOKEN, "user": 1, "scopes": "all"},
                {"token": READONLY_TOKEN, "user": 1, "scopes": ["task_readonly"]},
                {"token": HELPER_TOKEN, "user": 3, "scopes": "all"},
            ],
            "users": [
                {"id": 1, "name": "Crosslink Robot", "email": "sync@partner.example", "role": "Robot"},
                {"id": 2, "name": "Pavel Lead", "email": "pavel@partner.example"},
                {"id": 3, "name": "Helga Helper", "email": "helga@partner.example"},
            ],
            "processes": [{
                "id": 1, "name": "Partner delivery",
                "statuses": [{"id": 1, "name": "New"}, {"id": 2, "name": "In work"},
                             {"id": 3, "name": "Review"}, {"id": 4, "name": "Closed"}],
                "transitions": {1: [2], 2: [3], 3: [2, 4]},
            }],
            "projects": [{"id": 10, "name": "ACME rollout"}],
            "custom_fields": [{"id": 100, "name": "Budget", "type": 1},
                              {"id": 101, "name": "Channel", "type": 8, "enumValues": ["mail", "phone"]}],
            "tasks": [
                {"id": 1, "name": "Kick-off", "processId": 1, "status": 1, "project": 10,
                 "assignees": ["user:2"]},
                {"id": 2, "name": "Second", "processId": 1, "status": 2, "project": 10},
            ],
        }
    }
}
BASE = "http://testserver/partner/rest"
# Client retries in tests back off for milliseconds, not the production quarter second.
FAST_BACKOFF_S = 0.001


@pytest.fixture
def world() -> Iterator[World]:
    world = World.from_config(SEED)
    yield world
    world.close()


@pytest.fixture
def http(world) -> Iterator[TestClient]:
    with TestClient(create_app(world)) as client:
        yield client


def make_client(http, token: str = TOKEN, **kwargs) -> PlanfixClient:
    client = PlanfixClient(kwargs.pop("base_url", BASE), token, account="partner", http=http, **kwargs)
    client.retry_base_s = FAST_BACKOFF_S
    return client


@pytest.fixture
def planfix(http) -> PlanfixClient:
    return make_client(http)


def logged(world, method: str | None = None, path: str | None = None) -> list[dict]:
    return [entry for entry in world.requests("partner")
            if (method is None or entry["method"] == method) and (path is None or entry["path"] == path)]


def assert_no_secret(text: str) -> None:
    for token in ALL_TOKENS:
        assert token not in text
        assert base64.b64encode(token.encode()).decode() not in text


# -- every method ------------------------------------------------------------------------------


def test_ping_and_repr_hide_the_token(planfix):
    assert planfix.ping()["result"] == "success"
    assert_no_secret(repr(planfix))
    assert "partner" in repr(planfix)


def test_get_task_asks_only_for_the_fields_it_names(planfix):
    task = planfix.get_task(1, fields=("id", "name", "status", "assignees"))
    assert task["id"] == 1 and task["name"] == "Kick-off"
    assert task["status"]["id"] == 1
    assert [u["id"] for u in task["assignees"]["users"]] == ["user:2"]
    assert "description" not in task and "project" not in task
    assert set(planfix.get_task(1, fields="id,project")) == {"id", "project"}


def test_create_task_returns_the_number_and_posts_to_the_spec_path(planfix, world):
    number = planfix.create_task({"name": "From the client", "processId": 1, "status": {"id": 1},
                                  "project": {"id": 10}, "assignees": {"users": [{"id": "user:2"}]},
                                  "sourceObjectId": "0e3c5b9e-1c1f-4a47-8a0f-6f5d1f4d8a11",
                                  "sourceDataVersion": "link:partner:1"})
    assert number == 3  # numbers continue after the seeded tasks
    task = planfix.get_task(number, fields="id,name,sourceDataVersion,sourceObjectId")
    assert task["name"] == "From the client" and task["sourceDataVersion"] == "link:partner:1"
    assert [e["path"] for e in logged(world, "POST")] == ["/task/"]


def test_update_task_applied_and_status_moves_through_the_process(planfix):
    outcome = planfix.update_task(1, {"name": "Renamed", "status": {"id": 2}})
    assert isinstance(outcome, Applied)
    task = planfix.get_task(1, fields="id,name,status")
    assert task["name"] == "Renamed" and task["status"]["id"] == 2


def test_forbidden_transition_is_partially_applied(planfix):
    outcome = planfix.update_task(1, {"name": "Jumped", "status": {"id": 4}})  # 1 -> 4 not allowed
    assert isinstance(outcome, PartiallyApplied)
    assert [f.field for f in outcome.failures] == ["status"]
    assert outcome.failures[0].error
    task = planfix.get_task(1, fields="id,name,status")
    assert task["name"] == "Jumped" and task["status"]["id"] == 1


def test_no_write_can_be_silent(planfix):
    # Planfix keeps silent writes out of the task's history, the record people check in a dispute.
    for method in ("update_task", "create_comment", "update_comment", "create_task"):
        assert "silent" not in inspect.signature(getattr(planfix, method)).parameters


def test_busy_task_update_is_queued_then_applied_later(planfix, world):
    world.set_faults("partner", busy_202=1.0, busy_delay_s=0.05)
    outcome = planfix.update_task(1, {"name": "Later"})
    assert isinstance(outcome, Queued)
    world.set_faults("partner")
    assert planfix.get_task(1, fields="id,name")["name"] == "Kick-off"
    deadline = time.monotonic() + 2
    while planfix.get_task(1, fields="id,name")["name"] != "Later":
        assert time.monotonic() < deadline, "the queued change was never applied"
        time.sleep(0.02)


def test_list_tasks_pages_until_a_short_page(planfix, world):
    for index in range(5):
        planfix.create_task({"name": f"Bulk {index}", "processId": 1})
    numbers = [task["id"] for task in planfix.list_tasks(fields="id,name", page_size=3)]
    assert numbers == list(range(1, 8))
    pages = logged(world, "POST", "/task/list")
    assert len(pages) == 3  # 3 + 3 + a short page of 1


def test_list_tasks_sends_filters(planfix):
    planfix.create_task({"name": "Other status", "processId": 1, "status": {"id": 2}})
    in_work = [t["id"] for t in planfix.list_tasks(
        filters=[{"type": 10, "operator": "equal", "value": 2}], fields="id,status")]
    assert in_work == [2, 3]


def test_get_tasks_reads_many_tasks_with_one_request_per_chunk(planfix, world, monkeypatch):
    for index in range(4):
        planfix.create_task({"name": f"Bulk {index}", "processId": 1})
    tasks = planfix.get_tasks([5, 1, 3, 99], fields="id,name")
    assert sorted(tasks) == [1, 3, 5]                     # 99 does not exist: left out
    assert tasks[5]["name"] == "Bulk 2"
    assert len(logged(world, "POST", "/task/list")) == 1
    monkeypatch.setattr(client_module, "TASKS_PER_READ", 2)
    assert sorted(planfix.get_tasks([1, 2, 3, 4, 5], fields="id")) == [1, 2, 3, 4, 5]
    assert len(logged(world, "POST", "/task/list")) == 1 + 3


def test_list_tasks_refuses_an_impossible_page_size(planfix, world):
    with pytest.raises(ValueError):
        list(planfix.list_tasks(page_size=101))
    with pytest.raises(ValueError):
        list(planfix.list_tasks(page_size=0))
    assert logged(world) == []


def test_comments_create_list_update_get_delete(planfix):
    first = planfix.create_comment(1, {"description": "<p>Hello</p>", "sourceDataVersion": "v1"})
    second = planfix.create_comment(1, {"description": "Second", "owner": {"id": "user:2"}})
    assert second > first
    listed = list(planfix.list_task_comments(1, fields="id,description,owner"))
    assert [c["id"] for c in listed] == [first, second]
    assert listed[1]["owner"]["id"] == "user:2"
    newest_first = list(planfix.list_task_comments(1, fields="id", order=("id", "Desc")))
    assert [c["id"] for c in newest_first] == [second, first]
    assert isinstance(planfix.update_comment(1, first, {"description": "Edited"}), Applied)
    comment = planfix.get_comment(first, fields="id,description,sourceDataVersion")
    assert comment["description"] == "Edited" and comment["sourceDataVersion"] == "v1"
    planfix.delete_comment(first)
    assert planfix.get_comment(first, fields="id,isDeleted")["isDeleted"] is True
    assert [c["id"] for c in planfix.list_task_comments(1, fields="id")] == [second]
    assert [c["id"] for c in planfix.list_task_comments(1, fields="id", type_list="All")] == [first, second]


def test_comment_list_pages_and_filters_by_author(planfix, world):
    for index in range(4):
        planfix.create_comment(2, {"description": f"robot {index}"})
    planfix.create_comment(1, {"description": "pavel", "owner": {"id": "user:2"}})
    robot = list(planfix.list_comments(filters=[{"type": 3001, "operator": "equal", "value": "user:1"}],
                                       fields="id,description", page_size=2))
    assert [c["description"] for c in robot] == [f"robot {i}" for i in range(4)]
    assert len(logged(world, "POST", "/comment/list")) == 3  # 2 + 2 + an empty page


def test_processes_statuses_users_and_custom_fields(planfix, world):
    assert planfix.list_processes() == [{"id": 1, "name": "Partner delivery"}]
    statuses = planfix.list_statuses(1, fields="id,name")
    assert [(s["id"], s["name"]) for s in statuses] == [(1, "New"), (2, "In work"), (3, "Review"), (4, "Closed")]
    users = planfix.list_users(fields="id,name,email")
    assert [u["id"] for u in users] == ["user:1", "user:2", "user:3"]
    world.deactivate_user("partner", 2)
    assert [u["id"] for u in planfix.list_users(fields="id")] == ["user:1", "user:3"]
    assert [u["id"] for u in planfix.list_users(only_active=False, fields="id")] == ["user:1", "user:2", "user:3"]
    by_mail = planfix.list_users(filters=[{"type": 9003, "operator": "equal", "value": "helga@partner.example"}],
                                 fields="id,name")
    assert by_mail == [{"id": "user:3", "name": "Helga Helper"}]
    fields = planfix.list_custom_fields()
    assert [(f["id"], f["type"]) for f in fields] == [(100, 1), (101, 8)]
    assert fields[1]["enumValues"] == ["mail", "phone"]


def test_files_upload_attach_list_download(planfix):
    content = bytes(range(256)) * 9  # 2304 bytes -> 3 KB
    file_id = planfix.upload_file("Отчёт.bin", content)
    planfix.attach_file_to_task(file_id, 1)
    files = planfix.list_task_files(1)
    assert [(f["id"], f["name"], f["size"]) for f in files] == [(file_id, "Отчёт.bin", 3)]
    assert planfix.download_file(file_id) == ("Отчёт.bin", content)


def test_download_without_download_url_follows_the_redirect(planfix):
    file_id = planfix.upload_file("a.txt", b"redirected bytes")

    class NoUrl(PlanfixClient):
        def get_file(self, file_id, fields="id,name"):
            return super().get_file(file_id, fields="id,name")

    bare = NoUrl(BASE, TOKEN, account="partner", http=planfix.http)
    assert bare.download_file(file_id) == ("a.txt", b"redirected bytes")


def test_source_id_travels_with_reads(http, world):
    client = make_client(http, source_id="4f1c2b1e-5a2d-4a8e-9a51-2f1b6c0d7e90")
    assert client.get_task(1, fields="id")["id"] == 1
    assert list(client.list_tasks(fields="id"))


# -- failure classes ---------------------------------------------------------------------------


def test_unknown_token_is_an_auth_error_that_severs_the_link(http):
    client = make_client(http, token="tok-nobody-knows-this-one")
    with pytest.raises(AuthError) as caught:
        client.ping()
    assert caught.value.code == 1 and caught.value.http_status == 401
    assert caught.value.severs_link
    assert "tok-nobody-knows-this-one" not in str(caught.value) + repr(caught.value)


def test_revoked_token_and_inactive_user(planfix, http, world):
    world.revoke_token("partner", TOKEN)
    with pytest.raises(AuthError) as revoked:
        planfix.get_task(1, fields="id")
    assert revoked.value.code == 1
    world.restore_token("partner", TOKEN)
    assert planfix.get_task(1, fields="id")["id"] == 1
    world.deactivate_user("partner", 3)
    with pytest.raises(AuthError) as inactive:
        make_client(http, HELPER_TOKEN).ping()
    assert inactive.value.code == 16 and inactive.value.http_status == 403


def test_missing_scope(http, world):
    readonly = make_client(http, READONLY_TOKEN)
    assert readonly.get_task(1, fields="id")["id"] == 1
    with pytest.raises(ScopeDenied) as caught:
        readonly.create_task({"name": "nope"})
    assert caught.value.code == 5 and caught.value.http_status == 405 and caught.value.severs_link
    assert caught.value.operation == "POST /task/"


def test_not_found_task_comment_file(planfix):
    with pytest.raises(NotFound) as task:
        planfix.get_task(999, fields="id")
    assert task.value.code == 1000 and not task.value.severs_link
    with pytest.raises(NotFound) as update:
        planfix.update_task(999, {"name": "x"})
    assert update.value.code == 1000
    with pytest.raises(NotFound) as comment:
        planfix.get_comment(999, fields="id")
    assert 5000 <= comment.value.code < 6000
    with pytest.raises(NotFound) as file:
        planfix.download_file(999)
    assert 7000 <= file.value.code < 8000


def test_invalid_parameter(planfix):
    with pytest.raises(InvalidRequest) as caught:
        list(planfix.list_task_comments(1, fields="id", type_list="Everything"))
    assert caught.value.code == 41 and caught.value.http_status == 400


def test_500_on_a_create_is_maybe_applied_and_not_retried(planfix, world):
    world.set_faults("partner", error_500=1.0)
    with pytest.raises(TransientError) as caught:
        planfix.create_task({"name": "Never twice"})
    assert caught.value.maybe_applied and caught.value.http_status == 500
    assert len(logged(world, "POST", "/task/")) == 1
    with pytest.raises(TransientError) as comment:
        planfix.create_comment(1, {"description": "once"})
    assert comment.value.maybe_applied
    assert len(logged(world, "POST", "/task/1/comments/")) == 1


def test_500_after_commit_on_a_create_is_maybe_applied_and_really_was(planfix, world):
    world.set_faults("partner", error_500_after_commit=1.0)
    with pytest.raises(TransientError) as caught:
        planfix.create_task({"name": "Committed anyway"})
    assert caught.value.maybe_applied
    assert len(logged(world, "POST", "/task/")) == 1
    assert "Committed anyway" in [t["name"] for t in world.dump_tasks("partner")]


def test_reads_are_retried_on_500_until_success(planfix, world):
    world.set_faults("partner", error_500=0.5, seed=7)
    planfix.read_retries = 6
    names = [planfix.get_task(1, fields="id,name")["name"] for _ in range(6)]
    assert names == ["Kick-off"] * 6
    statuses = [e["status"] for e in logged(world, "GET", "/task/1")]
    assert statuses.count(200) == 6 and statuses.count(500) >= 1


def test_reads_give_up_after_the_retry_budget(planfix, world):
    world.set_faults("partner", error_500=1.0)
    planfix.read_retries = 2
    with pytest.raises(TransientError) as caught:
        list(planfix.list_tasks(fields="id"))
    assert not caught.value.maybe_applied
    assert len(logged(world, "POST", "/task/list")) == 3


def test_429_is_rate_limited_with_retry_after(planfix, world):
    world.set_limits("partner", rate_per_s=1)
    planfix.ping()
    with pytest.raises(RateLimited) as caught:
        planfix.ping()
    assert caught.value.scope == "rate" and caught.value.http_status == 429
    assert caught.value.retry_after_ms >= 1000
    assert len(world.violations("partner")) == 1


def test_429_on_a_write_is_raised_even_with_sleep_on_limit(http, world):
    world.set_limits("partner", rate_per_s=1)
    client = make_client(http, sleep_on_limit=True)
    client.ping()
    with pytest.raises(RateLimited):
        client.update_task(1, {"name": "not retried"})
    assert len(logged(world, "POST", "/task/1")) == 1


def test_daily_quota_is_rate_limited_and_pauses_the_limiter(http, world, redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=0)
    client = make_client(http, limiter=limiter)
    world.set_faults("partner", quota_exhausted=True)
    with pytest.raises(RateLimited) as caught:
        client.get_task(1, fields="id")
    assert caught.value.scope == "daily_quota" and caught.value.code == 22
    assert caught.value.http_status == 403
    seconds = time.time()
    to_midnight_ms = ((seconds // 86400 + 1) * 86400 - seconds) * 1000
    assert abs(caught.value.retry_after_ms - to_midnight_ms) < 3000
    # Every process sharing the limiter now waits, without another request to Planfix.
    permit = limiter.acquire("partner")
    assert not permit.go and permit.reason == "daily_quota"
    with pytest.raises(RateLimited) as second:
        client.ping()
    assert second.value.scope == "limiter"
    assert len(logged(world)) == 1


def test_limiter_wait_raises_without_sending(http, world, redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=1.0)
    client = make_client(http, limiter=limiter)
    client.ping()
    with pytest.raises(RateLimited) as caught:
        client.create_task({"name": "wait your turn"})
    assert caught.value.scope == "limiter" and 500 < caught.value.retry_after_ms <= 1050
    assert len(logged(world)) == 1


def test_sleep_on_limit_spaces_requests_by_the_limiter(http, world, redis_client):
    limiter = AccountLimiter(redis_client, rate_per_s=10.0)
    world.set_limits("partner", rate_per_s=10)
    client = make_client(http, limiter=limiter, sleep_on_limit=True)
    for _ in range(5):
        client.ping()
    times = [e["t"] for e in logged(world)]
    assert len(times) == 5 and world.violations("partner") == []
    # The limiter spaces grants 105 ms apart in Redis time; arrival jitter may eat a few ms.
    assert min(b - a for a, b in zip(times, times[1:])) >= 0.09


def test_reads_wait_out_a_429_when_allowed_to_sleep(http, world, redis_client):
    # Our limiter believes in 20/s, Planfix allows 1/s: the 429 pauses the limiter and the
    # read goes through after Retry-After.
    limiter = AccountLimiter(redis_client, rate_per_s=20.0)
    world.set_limits("partner", rate_per_s=1)
    client = make_client(http, limiter=limiter, sleep_on_limit=True)
    client.ping()
    started = time.monotonic()
    assert client.get_task(1, fields="id")["id"] == 1
    assert time.monotonic() - started >= 0.9
    assert [e["status"] for e in logged(world)] == [200, 429, 200]


def test_no_token_in_any_log_record_or_exception(http, world, redis_client, caplog):
    caplog.set_level(logging.DEBUG)
    limiter = AccountLimiter(redis_client, rate_per_s=0)
    client = make_client(http, limiter=limiter)
    errors: list[Exception] = []
    client.ping()
    client.create_task({"name": "logged"})
    world.set_faults("partner", error_500=1.0)
    for call in (lambda: client.get_task(1, fields="id"), lambda: client.create_task({"name": "x"})):
        try:
            call()
        except PlanfixError as exc:
            errors.append(exc)
    world.set_faults("partner", quota_exhausted=True)
    try:
        client.ping()
    except PlanfixError as exc:
        errors.append(exc)
    world.set_faults("partner")
    limiter.reset("partner")
    for bad in (make_client(http, "tok-wrong-but-long-enough"), make_client(http, READONLY_TOKEN)):
        try:
            bad.create_task({"name": "x"})
        except PlanfixError as exc:
            errors.append(exc)
    assert len(errors) == 5
    records = caplog.records
    assert any(r.name == "crosslink.planfix" for r in records)
    text = "\n".join(r.getMessage() + repr(r.__dict__) for r in records)
    text += "\n".join(str(e) + repr(e) for e in errors)
    assert_no_secret(text)
    assert "tok-wrong-but-long-enough" not in text


# -- over loopback -----------------------------------------------------------------------------


@pytest.fixture
def server(world):
    from planfix.emulator.server import EmulatorServer

    with EmulatorServer(world) as running:
        yield running


def test_over_loopback_every_kind_of_call(server, world, caplog):
    caplog.set_level(logging.DEBUG)
    with PlanfixClient(server.base_url("partner"), TOKEN, account="partner") as client:
        assert client.ping()["result"] == "success"
        number = client.create_task({"name": "Over the wire", "processId": 1})
        assert client.get_task(number, fields="id,name")["name"] == "Over the wire"
        assert isinstance(client.update_task(number, {"status": {"id": 2}}), Applied)
        comment = client.create_comment(number, {"description": "wire"})
        assert [c["id"] for c in client.list_task_comments(number, fields="id")] == [comment]
        file_id = client.upload_file("wire.txt", b"bytes over loopback")
        client.attach_file_to_task(file_id, number)
        assert client.download_file(file_id) == ("wire.txt", b"bytes over loopback")
        with pytest.raises(NotFound):
            client.get_task(999, fields="id")
    assert client.http.is_closed  # it owned its HTTP client and closed it
    assert any(r.name == "crosslink.planfix" for r in caplog.records)
    assert_no_secret("\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records))


def test_timeout_on_a_create_is_maybe_applied_and_sent_once(server, world):
    world.set_faults("partner", timeout=1.0, timeout_s=1.0)
    with PlanfixClient(server.base_url("partner"), TOKEN, account="partner", timeout=0.2) as client:
        started = time.monotonic()
        with pytest.raises(TransientError) as caught:
            client.create_task({"name": "Timed out"})
        assert time.monotonic() - started < 0.9
    assert caught.value.maybe_applied
    assert "Timed out" in [t["name"] for t in world.dump_tasks("partner")]
    # The emulator logs a request when it answers, i.e. after holding it for timeout_s.
    deadline = time.monotonic() + 3
    while not logged(world, "POST", "/task/") and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.1)
    assert len(logged(world, "POST", "/task/")) == 1


def test_timeouts_on_reads_are_retried(server, world):
    world.set_faults("partner", timeout=1.0, timeout_s=0.5)
    with PlanfixClient(server.base_url("partner"), TOKEN, account="partner", timeout=0.1,
                       read_retries=1) as client:
        client.retry_base_s = FAST_BACKOFF_S
        with pytest.raises(TransientError) as caught:
            client.get_task(1, fields="id")
    assert not caught.value.maybe_applied


def test_connection_refused_is_transient_and_not_applied():
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with PlanfixClient(f"http://127.0.0.1:{port}/partner/rest", TOKEN, account="partner",
                       read_retries=0) as client:
        with pytest.raises(TransientError) as caught:
            client.create_task({"name": "nowhere"})
    assert caught.value.maybe_applied is False
