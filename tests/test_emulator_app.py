"""The emulator's HTTP surface in-process: REST shapes, auth, errors, limits, log, faults, UI, files."""

from __future__ import annotations

import asyncio
import time

import pytest
from starlette.requests import Request

from planfix.emulator.app import _json_body
from planfix.emulator.world import ApiError
from tests.test_emulator_world import FakeClock

SYNC = {"Authorization": "Bearer tok-partner-sync"}
READONLY = {"Authorization": "Bearer tok-partner-readonly"}
REST = "/partner/rest"


def post(client, path, body=None, headers=SYNC, **kwargs):
    return client.post(REST + path, json=body if body is not None else {}, headers=headers, **kwargs)


# -- basics -----------------------------------------------------------------------------------

def test_ping_and_trailing_slash_both_work(emulator_app_client):
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).json() == {"result": "success"}
    assert post(emulator_app_client, "/task/", {"name": "slash"}).status_code == 201
    response = post(emulator_app_client, "/task", {"name": "no slash"})
    assert response.status_code == 201 and response.json() == {"result": "success", "id": 3}


def test_fields_are_opt_in(emulator_app_client):
    body = emulator_app_client.get(REST + "/task/1", headers=SYNC).json()
    assert body == {"result": "success", "task": {"id": 1}}
    body = emulator_app_client.get(REST + "/task/1?fields=name,project,nonsense", headers=SYNC).json()
    assert body["task"] == {"id": 1, "name": "Kick-off", "project": {"id": 10, "name": "ACME rollout"}}
    listed = post(emulator_app_client, "/task/list", {"fields": "id,status"}).json()["tasks"]
    assert listed == [{"id": 1, "status": {"id": 1, "name": "New", "color": "#ffffff", "isActive": True}}]


def test_update_answers_failures_inside_200(emulator_app_client):
    response = post(emulator_app_client, "/task/1", {"status": {"id": 77}, "name": "N"})
    assert response.status_code == 200
    assert response.json()["failures"][0]["field"] == "status"
    assert post(emulator_app_client, "/task/1", {"name": "M"}).json() == {"result": "success"}


@pytest.mark.parametrize("method, path, status, code", [
    ("GET", "/task/999", 404, 1000),
    ("POST", "/task/999", 404, 1000),
    ("GET", "/task/abc", 404, 1000),
    ("GET", "/task/7000001", 404, 1000),  # the internal id of task 1 is never accepted
    ("GET", "/comment/999", 404, 5000),
    ("POST", "/task/1/comments/999", 404, 5000),
    ("DELETE", "/comment/999", 404, 5000),
    ("GET", "/file/999", 404, 7000),
    ("GET", "/file/999/download", 404, 7000),
    ("POST", "/task/999/comments/list", 404, 1000),
    ("GET", "/nonsense", 404, 0),
])
def test_not_found_codes(emulator_app_client, method, path, status, code):
    response = emulator_app_client.request(method, REST + path, headers=SYNC,
                                           json={} if method == "POST" else None)
    assert response.status_code == status
    assert response.json()["result"] == "fail" and response.json()["code"] == code


def test_bad_json_missing_and_invalid_params(emulator_app_client):
    response = emulator_app_client.post(REST + "/task/1", content=b"{not json", headers=SYNC)
    assert (response.status_code, response.json()["code"]) == (400, 30)
    response = post(emulator_app_client, "/task/", {"description": "no name"})
    assert (response.status_code, response.json()["code"]) == (400, 40)
    response = post(emulator_app_client, "/task/list", {"pageSize": 500})
    assert (response.status_code, response.json()["code"]) == (400, 41)
    response = emulator_app_client.post(REST + "/file/1/attach/task", headers=SYNC)
    assert (response.status_code, response.json()["code"]) == (400, 40)
    response = emulator_app_client.post(REST + "/file/", headers=SYNC, files={"other": ("a", b"a")})
    assert (response.status_code, response.json()["code"]) == (400, 40)


def test_unknown_account_is_404(emulator_app_client):
    assert emulator_app_client.get("/nobody/rest/ping", headers=SYNC).status_code == 404


# -- auth -------------------------------------------------------------------------------------

def test_auth_errors_and_no_token_in_bodies(emulator_app_client, emulator_world):
    bad = emulator_app_client.get(REST + "/ping", headers={"Authorization": "Bearer tok-wrong-secret"})
    assert (bad.status_code, bad.json()["code"]) == (401, 1) and "tok-wrong-secret" not in bad.text
    assert emulator_app_client.get(REST + "/ping?access_token=tok-partner-sync").status_code == 200
    # access_token is for GET only
    assert emulator_app_client.post(REST + "/task/list?access_token=tok-partner-sync", json={}).status_code == 401
    emulator_world.revoke_token("partner", "tok-partner-sync")
    revoked = emulator_app_client.get(REST + "/ping", headers=SYNC)
    assert revoked.status_code == 401 and "tok-partner-sync" not in revoked.text
    emulator_world.restore_token("partner", "tok-partner-sync")
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 200
    emulator_world.deactivate_user("partner", 1)
    inactive = emulator_app_client.get(REST + "/ping", headers=SYNC)
    assert (inactive.status_code, inactive.json()["code"]) == (403, 16)


@pytest.mark.parametrize("method, path, allowed", [
    ("GET", "/task/1", True),
    ("POST", "/task/list", True),
    ("POST", "/task/1/comments/list", True),
    ("POST", "/task/", False),
    ("POST", "/task/1", False),
    ("POST", "/task/1/comments/", False),
    ("DELETE", "/comment/1", False),
    ("POST", "/user/list", False),
    ("POST", "/file/", False),
])
def test_scopes(emulator_app_client, method, path, allowed):
    response = emulator_app_client.request(method, REST + path, headers=READONLY,
                                           json={"name": "x", "description": "y"} if method == "POST" else None)
    if allowed:
        assert response.status_code == 200
    else:
        assert (response.status_code, response.json()["code"]) == (405, 5)


# -- limits and the request log ---------------------------------------------------------------

def test_rate_limit_429_retry_after_and_log(emulator_app_client, emulator_world):
    clock = FakeClock()
    emulator_world.clock = clock
    emulator_world.set_limits("partner", rate_per_s=1)
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 200
    clock.advance(0.3)
    over = emulator_app_client.get(REST + "/ping", headers=SYNC)
    assert over.status_code == 429 and over.headers["Retry-After"] == "1"
    assert over.json() == {"result": "fail", "code": 0, "error": "Request rate limit exceeded"}
    clock.advance(0.8)
    assert emulator_app_client.get(REST + "/task/1", headers=SYNC).status_code == 200
    log = emulator_world.requests("partner")
    assert [(e["path"], e["status"], e["over_limit"], e["user"]) for e in log] == [
        ("/ping", 200, False, 1), ("/ping", 429, True, None), ("/task/1", 200, False, 1)]
    assert len(emulator_world.violations("partner")) == 1
    assert emulator_world.max_requests_in_window("partner") == 2
    over_http = emulator_app_client.get("/_emulator/partner/requests").json()
    assert over_http["violations"] == 1 and over_http["max_requests_in_window"] == 2
    assert emulator_world.requests("client") == []


def test_quota_403_22_with_time_to_reset_and_remaining_header(emulator_app_client, emulator_world):
    emulator_world.set_limits("partner", daily_quota=2)
    first = emulator_app_client.get(REST + "/ping", headers=SYNC)
    assert first.headers["X-RateLimit-Remaining"] == "1"
    emulator_app_client.get(REST + "/ping", headers=SYNC)
    spent = emulator_app_client.get(REST + "/ping", headers=SYNC)
    assert spent.status_code == 403
    assert spent.json()["code"] == 22 and 0 < spent.json()["timeToReset"] <= 86400


def test_rejected_and_unauthenticated_requests_are_logged(emulator_app_client, emulator_world):
    emulator_app_client.get(REST + "/ping")
    emulator_app_client.post(REST + "/task/1", content=b"][", headers=SYNC)
    assert [e["status"] for e in emulator_world.requests("partner")] == [401, 400]


# -- faults -----------------------------------------------------------------------------------

def test_error_500_applies_nothing(emulator_app_client, emulator_world):
    emulator_world.set_faults("partner", error_500=1.0)
    response = post(emulator_app_client, "/task/", {"name": "lost"})
    assert (response.status_code, response.json()["code"]) == (500, 0)
    emulator_world.set_faults("partner")
    assert [t["id"] for t in emulator_world.dump_tasks("partner")] == [1]


def test_error_500_after_commit_applies_then_fails(emulator_app_client, emulator_world):
    emulator_world.set_faults("partner", error_500_after_commit=1.0)
    response = post(emulator_app_client, "/task/", {"name": "duplicate risk"})
    assert response.status_code == 500
    assert [t["name"] for t in emulator_world.dump_tasks("partner")] == ["Kick-off", "duplicate risk"]


def test_busy_202_applies_later(emulator_app_client, emulator_world):
    emulator_world.set_faults("partner", busy_202=1.0, busy_delay_s=0.1)
    response = post(emulator_app_client, "/task/1", {"name": "queued"})
    assert response.status_code == 202
    assert emulator_world.get_task("partner", 1, "name")["name"] == "Kick-off"
    deadline = time.monotonic() + 3
    while emulator_world.get_task("partner", 1, "name")["name"] != "queued" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator_world.get_task("partner", 1, "name")["name"] == "queued"
    # only task updates are ever answered 202
    assert post(emulator_app_client, "/task/list", {}).status_code == 200


def test_an_update_to_a_task_locked_by_a_queued_change_lands_after_it(emulator_app_client, emulator_world):
    """The chaos suite lost a status move to the earlier model, whose later update overtook the
    queued one: the queued middle step of a status path landed last and pulled the task back."""
    emulator_world.set_faults("partner", busy_202=1.0, busy_delay_s=0.3)
    assert post(emulator_app_client, "/task/1", {"name": "first"}).status_code == 202
    emulator_world.set_faults("partner")
    assert post(emulator_app_client, "/task/1", {"name": "second"}).status_code == 202
    assert emulator_world.locked("partner", 1) == "busy_202"
    deadline = time.monotonic() + 3
    while emulator_world.locked("partner", 1) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator_world.get_task("partner", 1, "name")["name"] == "second"
    assert post(emulator_app_client, "/task/1", {"name": "third"}).status_code == 200


def test_lost_202_never_applies_and_locks_nothing(emulator_app_client, emulator_world):
    emulator_world.set_faults("partner", lost_202=1.0)
    assert post(emulator_app_client, "/task/1", {"name": "dropped"}).status_code == 202
    assert not emulator_world.locked("partner", 1)
    emulator_world.set_faults("partner")
    time.sleep(0.2)
    assert emulator_world.get_task("partner", 1, "name")["name"] == "Kick-off"
    assert post(emulator_app_client, "/task/1", {"name": "next"}).status_code == 200


@pytest.mark.parametrize("kind", ["busy_202", "slow_202", "lost_202"])
def test_a_202_on_a_missing_task_is_404(emulator_app_client, emulator_world, kind):
    emulator_world.set_faults("partner", **{kind: 1.0})
    assert post(emulator_app_client, "/task/404", {"name": "x"}).status_code == 404


def test_slow_and_timeout_hold_the_answer(emulator_app_client, emulator_world):
    emulator_world.set_faults("partner", slow=1.0, slow_s=0.3)
    started = time.monotonic()
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 200
    assert time.monotonic() - started >= 0.3
    emulator_world.set_faults("partner", timeout=1.0, timeout_s=0.3)
    started = time.monotonic()
    post(emulator_app_client, "/task/1/comments/", {"description": "applied before the hold"})
    assert time.monotonic() - started >= 0.3
    assert emulator_world.list_task_comments("partner", 1, {})[0]["id"] == 1


def test_faults_over_http_and_never_on_control_api(emulator_app_client, emulator_world):
    response = emulator_app_client.post("/_emulator/partner/faults", json={"error_500": 1.0})
    assert response.json()["faults"]["error_500"] == 1.0
    assert emulator_app_client.get("/_emulator/partner/faults").json()["faults"]["error_500"] == 1.0
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 500
    ui = emulator_app_client.post("/_emulator/partner/ui/task", json={"name": "by hand"},
                                  headers={"X-Emulator-User": "2"})
    assert ui.status_code == 200 and ui.json()["id"] == 2
    assert emulator_app_client.post("/_emulator/partner/faults", json={"bogus": 1}).status_code == 400
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 500  # unchanged by the bad call


# -- the web UI and control endpoints ---------------------------------------------------------

def test_ui_actions_cost_no_quota_and_act_as_the_user(emulator_app_client, emulator_world):
    emulator_world.set_limits("partner", rate_per_s=1, daily_quota=1)
    ui = lambda method, path, body=None: emulator_app_client.request(  # noqa: E731
        method, "/_emulator/partner/ui" + path, json=body, headers={"X-Emulator-User": "2"})
    number = ui("POST", "/task", {"name": "Typed in the browser", "assignees": {"users": [{"id": "user:3"}]}}).json()["id"]
    assert ui("POST", f"/task/{number}", {"status": {"id": 2}}).json() == {"result": "success"}
    comment = ui("POST", f"/task/{number}/comments", {"description": "hello"}).json()["id"]
    assert ui("POST", f"/comment/{comment}", {"description": "hello again"}).status_code == 200
    assert ui("DELETE", f"/comment/{comment}").status_code == 200
    assert emulator_world.requests("partner") == []
    dump = emulator_app_client.get("/_emulator/partner/tasks").json()["tasks"]
    task = next(t for t in dump if t["id"] == number)
    assert task["assigner"]["id"] == "user:2" and task["status"]["id"] == 2
    assert task["comments"][0]["owner"]["id"] == "user:2" and task["comments"][0]["isDeleted"] is True
    assert emulator_app_client.post("/_emulator/partner/ui/task", json={"name": "x"}).status_code == 400


def test_control_tokens_users_limits(emulator_app_client):
    control = "/_emulator/partner"
    emulator_app_client.post(control + "/tokens/revoke", json={"token": "tok-partner-sync"})
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 401
    emulator_app_client.post(control + "/tokens/restore", json={"token": "tok-partner-sync"})
    emulator_app_client.post(control + "/users/1/deactivate")
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 403
    emulator_app_client.post(control + "/users/1/activate")
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 200
    emulator_app_client.post(control + "/limits", json={"daily_quota": 4})  # 3 served so far today
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 200
    assert emulator_app_client.get(REST + "/ping", headers=SYNC).json()["code"] == 22
    assert emulator_app_client.post(control + "/tokens/revoke", json={"token": "nope"}).status_code == 400


# -- comments, files --------------------------------------------------------------------------

def test_comment_lifecycle_over_rest(emulator_app_client):
    created = post(emulator_app_client, "/task/1/comments/", {"description": "<p>hi</p>", "owner": {"id": "user:2"}})
    assert created.status_code == 201
    comment = created.json()["id"]
    assert post(emulator_app_client, f"/task/1/comments/{comment}", {"isHidden": True}).json() == {"result": "success"}
    got = emulator_app_client.get(REST + f"/comment/{comment}?fields=description,owner,isHidden,task", headers=SYNC).json()
    assert got["comment"] == {"id": comment, "description": "<p>hi</p>", "isHidden": True, "task": {"id": 1},
                              "owner": {"id": "user:2", "name": "Pavel Lead"}}
    assert emulator_app_client.delete(REST + f"/comment/{comment}", headers=SYNC).status_code == 200
    assert emulator_app_client.get(REST + f"/comment/{comment}?fields=isDeleted", headers=SYNC).json()["comment"]["isDeleted"]
    assert post(emulator_app_client, "/task/1/comments/list", {"typeList": "Comments"}).json()["comments"] == []
    assert post(emulator_app_client, "/comment/list", {"typeList": "Deleted"}).json()["comments"] == [{"id": comment}]


def test_files_upload_download_attach(emulator_app_client, emulator_world):
    content = "Отчёт".encode() * 500  # 5000 bytes -> 5 KB
    upload = emulator_app_client.post(REST + "/file/", headers=SYNC, files={"file": ("отчёт.txt", content)})
    assert upload.status_code == 200
    file_id = upload.json()["id"]
    info = emulator_app_client.get(REST + f"/file/{file_id}?fields=id,name,size,downloadUrl", headers=SYNC).json()["file"]
    assert info["name"] == "отчёт.txt" and info["size"] == 5
    assert emulator_app_client.get(info["downloadUrl"]).content == content  # no auth needed
    redirect = emulator_app_client.get(REST + f"/file/{file_id}/download", headers=SYNC, follow_redirects=False)
    assert redirect.status_code == 302 and emulator_app_client.get(redirect.headers["location"]).content == content
    assert emulator_app_client.get(info["downloadUrl"].replace("signature=", "signature=0")).status_code == 403
    emulator_world.clock = lambda: time.time() + 3600  # the link has expired
    assert emulator_app_client.get(info["downloadUrl"]).status_code == 403
    emulator_world.clock = time.time
    assert emulator_app_client.post(REST + f"/file/{file_id}/attach/task?id=1", headers=SYNC).json() == {"result": "success"}
    files = emulator_app_client.get(REST + "/task/1/files", headers=SYNC).json()["files"]
    assert files == [{"id": file_id, "name": "отчёт.txt", "size": 5}]
    assert emulator_app_client.post(REST + f"/file/{file_id}/attach/task?id=77", headers=SYNC).json()["code"] == 1000


def test_task_files_include_comment_files_unless_only_description(emulator_app_client, emulator_world):
    on_comment = emulator_world.upload_file("partner", "c.txt", b"c", author=1)
    post(emulator_app_client, "/task/1/comments/", {"description": "see file", "files": [{"id": on_comment}]})
    assert [f["id"] for f in emulator_app_client.get(REST + "/task/1/files", headers=SYNC).json()["files"]] == [on_comment]
    only = emulator_app_client.get(REST + "/task/1/files?onlyFromDescription=true", headers=SYNC).json()["files"]
    assert only == []


def test_processes_statuses_users_customfields(emulator_app_client):
    assert emulator_app_client.get(REST + "/process/task?fields=id,name", headers=SYNC).json()["processes"] == [
        {"id": 1, "name": "Partner delivery"}]
    statuses = emulator_app_client.get(REST + "/process/task/1/statuses?fields=id,name", headers=SYNC).json()["statuses"]
    assert [s["name"] for s in statuses] == ["New", "In work", "Review", "Closed"]
    assert emulator_app_client.get(REST + "/object/1/statuses?fields=name", headers=SYNC).json()["statuses"] == statuses
    users = post(emulator_app_client, "/user/list", {"fields": "id,email", "filters": [
        {"type": 9003, "operator": "equal", "value": "olga@partner.example"}]}).json()["users"]
    assert users == [{"id": 3, "email": "olga@partner.example"}]
    custom = emulator_app_client.get(REST + "/customfield/task?fields=id,name,type", headers=SYNC).json()["customfields"]
    assert custom == [{"id": 100, "name": "Budget", "type": 1}, {"id": 101, "name": "Channel", "type": 8}]


# -- the fault kinds a chaos run counts: each answered fault is in the request log ------------

def test_each_answered_fault_is_named_in_the_request_log(emulator_app_client, emulator_world):
    """The chaos suite counts hits from this field: a fault that met no request must not count."""
    for kind in ("error_500", "error_500_after_commit", "busy_202", "slow_202", "lost_202", "slow"):
        emulator_world.set_faults("partner", **{kind: 1.0}, busy_delay_s=0.01, slow_202_delay_s=0.01, slow_s=0.01)
        post(emulator_app_client, "/task/1", {"name": f"under {kind}"})
        while emulator_world.locked("partner", 1):  # a queued change keeps the task locked
            time.sleep(0.01)
    emulator_world.set_faults("partner", quota_exhausted=True, quota_reset_s=1)
    emulator_app_client.get(REST + "/ping", headers=SYNC)
    emulator_world.set_faults("partner")
    emulator_app_client.get(REST + "/ping", headers=SYNC)
    assert [(entry["status"], entry["fault"]) for entry in emulator_world.requests("partner")] == [
        (500, "error_500"), (500, "error_500_after_commit"), (202, "busy_202"), (202, "slow_202"),
        (202, "lost_202"), (200, "slow"), (403, "quota"), (200, None)]


def test_a_real_daily_quota_and_429_are_logged_as_what_they_are(emulator_app_client, emulator_world):
    clock = FakeClock()
    emulator_world.clock = clock
    emulator_world.set_limits("partner", rate_per_s=1, daily_quota=2)
    emulator_app_client.get(REST + "/ping", headers=SYNC)
    emulator_app_client.get(REST + "/ping", headers=SYNC)  # over the rate: 429
    clock.advance(2)
    emulator_app_client.get(REST + "/ping", headers=SYNC)
    clock.advance(2)
    emulator_app_client.get(REST + "/ping", headers=SYNC)  # the day's quota spent: not a fault
    assert [(entry["status"], entry["fault"]) for entry in emulator_world.requests("partner")] == [
        (200, None), (429, "rate_429"), (200, None), (403, None)]


def test_slow_202_applies_only_after_its_delay(emulator_app_client, emulator_world):
    emulator_world.set_faults("partner", slow_202=1.0, slow_202_delay_s=0.6)
    assert post(emulator_app_client, "/task/1", {"name": "queued long"}).status_code == 202
    time.sleep(0.3)
    assert emulator_world.get_task("partner", 1, "name")["name"] == "Kick-off"
    deadline = time.monotonic() + 3
    while emulator_world.get_task("partner", 1, "name")["name"] != "queued long" and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator_world.get_task("partner", 1, "name")["name"] == "queued long"
    assert post(emulator_app_client, "/task/1/comments", {"description": "no 202 here"}).status_code == 201


def test_jitter_delays_every_answer_by_at_most_its_bound(emulator_app_client, emulator_world):
    emulator_world.set_faults("partner", jitter_s=0.05, seed=3)
    started = time.monotonic()
    for _ in range(10):
        assert emulator_app_client.get(REST + "/ping", headers=SYNC).status_code == 200
    took = time.monotonic() - started
    jitters = [entry["jitter_s"] for entry in emulator_world.requests("partner")]
    assert all(0 < value <= 0.05 for value in jitters) and took >= sum(jitters) * 0.9
    assert all(entry["fault"] is None for entry in emulator_world.requests("partner"))


# -- what each write did, in the request log (a chaos run's journal check reads it) -------------

def _writes(world):
    return [(entry["path"], entry["fault"], entry["write"]) for entry in world.requests("partner")]


def test_the_log_says_which_writes_were_applied_whatever_their_answer(emulator_app_client, emulator_world):
    """A 500 after commit applied its write, with the id its answer never carried; a plain 500 and
    a refusal applied nothing; a read is no write."""
    emulator_world.set_faults("partner", error_500_after_commit=1.0)
    post(emulator_app_client, "/task/", {"name": "made", "sourceObjectId": "x"})
    emulator_world.set_faults("partner", error_500=1.0)
    post(emulator_app_client, "/task/", {"name": "never"})
    emulator_world.set_faults("partner")
    post(emulator_app_client, "/task/999/comments/", {"description": "on no task"})
    post(emulator_app_client, "/task/1", {"name": "renamed", "status": {"id": 77}})
    emulator_app_client.get(REST + "/task/1", headers=SYNC)
    logged = _writes(emulator_world)
    assert logged[0] == ("/task/", "error_500_after_commit", {
        "body": {"name": "made", "sourceObjectId": "x"}, "applied": True, "queued": None, "id": 2, "failures": []})
    assert logged[1][2]["applied"] is False and logged[1][2]["id"] is None
    assert logged[2][2]["applied"] is False
    assert (logged[3][2]["applied"], logged[3][2]["failures"]) == (True, ["status"])
    assert logged[4][2] is None
    assert [task["name"] for task in emulator_world.dump_tasks("partner")] == ["renamed", "made"]


def test_a_timed_out_write_is_logged_applied(emulator_app_client, emulator_world):
    emulator_world.set_faults("partner", timeout=1.0, timeout_s=0.05)
    post(emulator_app_client, "/task/1/comments/", {"description": "held"})
    emulator_world.set_faults("partner")
    assert _writes(emulator_world)[0][2] | {"body": None} == {
        "body": None, "applied": True, "queued": None, "id": 1, "failures": []}


def test_a_202_is_logged_applied_only_once_it_lands(emulator_app_client, emulator_world):
    emulator_world.set_faults("partner", lost_202=1.0)
    post(emulator_app_client, "/task/1", {"name": "dropped"})
    emulator_world.set_faults("partner", busy_202=1.0, busy_delay_s=0.2)
    post(emulator_app_client, "/task/1", {"name": "queued"})
    emulator_world.set_faults("partner")
    lost, late = (write for _, _, write in _writes(emulator_world))
    assert (lost["applied"], lost["queued"]) == (False, None)
    assert (late["applied"], late["queued"]) == (False, "busy_202")
    deadline = time.monotonic() + 3
    while not _writes(emulator_world)[1][2]["applied"] and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _writes(emulator_world)[1][2]["applied"] is True
    assert emulator_world.get_task("partner", 1, "name")["name"] == "queued"


@pytest.fixture
def served(emulator_world):
    """The emulator behind a real uvicorn server: what a broken connection looks like depends on it."""
    from planfix.emulator.server import EmulatorServer

    with EmulatorServer(emulator_world) as server:
        yield server


def test_connection_closed_applies_the_write_and_breaks_the_answer_over_real_http(served, emulator_world):
    from planfix.client import PlanfixClient
    from planfix.errors import TransientError
    from planfix.http import ConnectionBroken, Http

    emulator_world.set_faults("partner", connection_closed=1.0)
    with Http(timeout=2) as http, pytest.raises(ConnectionBroken):
        http.request("POST", served.base_url("partner") + "/task/", json={"name": "first"},
                     headers={"Authorization": "Bearer tok-partner-sync"})
    with PlanfixClient(served.base_url("partner"), "tok-partner-sync", account="partner", timeout=2) as client:
        with pytest.raises(TransientError) as raised:
            client.create_task({"name": "second"})
    assert raised.value.maybe_applied
    assert [task["name"] for task in emulator_world.dump_tasks("partner")] == ["Kick-off", "first", "second"]
    assert [entry["fault"] for entry in emulator_world.requests("partner")] == ["connection_closed"] * 2
    emulator_world.set_faults("partner")
    with PlanfixClient(served.base_url("partner"), "tok-partner-sync", account="partner", timeout=2) as client:
        assert client.ping()["result"] == "success"  # the server lives on


def test_a_timeout_longer_than_the_clients_read_timeout_is_maybe_applied(served, emulator_world):
    from planfix.client import PlanfixClient
    from planfix.errors import TransientError

    emulator_world.set_faults("partner", timeout=1.0, timeout_s=1.0)
    with PlanfixClient(served.base_url("partner"), "tok-partner-sync", account="partner", timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(TransientError) as raised:
            client.create_comment(1, {"description": "applied, never answered in time"})
        assert time.monotonic() - started < 0.9
    assert raised.value.maybe_applied
    assert emulator_world.list_task_comments("partner", 1, {"fields": "description"})[0]["description"] \
        == "applied, never answered in time"
    deadline = time.monotonic() + 3
    while not emulator_world.requests("partner") and time.monotonic() < deadline:
        time.sleep(0.05)  # logged when the held answer goes out
    assert [entry["fault"] for entry in emulator_world.requests("partner")] == ["timeout"]


def test_a_task_with_a_queued_change_stays_locked_and_later_changes_queue_behind_it(emulator_app_client, emulator_world):
    """A 202 says the task is locked: an update meanwhile must not overtake the queued one (it
    once did, and the older queued change then overwrote the newer one)."""
    emulator_world.set_faults("partner", slow_202=1.0, slow_202_delay_s=0.4)
    assert post(emulator_app_client, "/task/1", {"name": "first"}).status_code == 202
    emulator_world.set_faults("partner")  # no fault drawn any more: the lock alone queues it
    assert post(emulator_app_client, "/task/1", {"name": "second"}).status_code == 202
    assert post(emulator_app_client, "/task/2", {"name": "other task"}).status_code in (200, 404)
    assert emulator_world.get_task("partner", 1, "name")["name"] == "Kick-off"
    deadline = time.monotonic() + 3
    while emulator_world.locked("partner", 1) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert emulator_world.get_task("partner", 1, "name")["name"] == "second"
    assert [entry["fault"] for entry in emulator_world.requests("partner")][:2] == ["slow_202", "slow_202"]
    assert post(emulator_app_client, "/task/1", {"name": "third"}).status_code == 200  # unlocked


def test_a_sender_gone_mid_body_gets_a_logged_refusal_not_a_server_error():
    """A worker killed while sending leaves a request without its body: the emulator answers it
    (no one reads the answer) as any bad request, rather than failing inside the ASGI app."""
    async def gone():
        return {"type": "http.disconnect"}

    request = Request({"type": "http", "method": "POST", "path": "/rest/task/", "headers": []}, gone)
    with pytest.raises(ApiError) as refused:
        asyncio.run(_json_body(request))
    assert refused.value.status == 400 and "closed the connection" in str(refused.value)
