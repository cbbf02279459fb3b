"""The emulator's task checklists: World methods (what people do in the UI) and the REST endpoints,
the latter checked against the official spec (tests/openapi.py)."""

from __future__ import annotations

import time

import pytest

from planfix.emulator.world import ApiError
from tests.openapi import load_spec, validate, validate_request, validate_response

SYNC = {"Authorization": "Bearer tok-partner-sync"}
READONLY = {"Authorization": "Bearer tok-partner-readonly"}
REST = "/partner/rest"
ALL_ITEM_FIELDS = "id,name,isDone,parent,dateTime,assignees"
TASK = 1  # the seeded partner task (tests/conftest.py)


def check(response, method: str, spec_path: str) -> None:
    validate_response(method, spec_path, response.status_code, response.json())


@pytest.fixture
def events(emulator_world):
    """Every scenario event the world raises, as (event, task number, author)."""
    raised: list[tuple[str, int, int]] = []
    emit = emulator_world._emit

    def recording(account, event, task, author, comment_id=None):
        raised.append((event, task["id"], author))
        return emit(account, event, task, author, comment_id)

    emulator_world._emit = recording
    return raised


# -- World: what people and the REST handlers share ---------------------------------------------

def test_items_are_created_listed_read_and_updated(emulator_world):
    world = emulator_world
    first = world.create_checklist_item("partner", TASK, {"name": "Draft"}, author=2)
    second = world.create_checklist_item("partner", TASK, {"name": "Review", "isDone": True,
                                                           "assignees": {"users": [{"id": "user:3"}]}}, author=3)
    child = world.create_checklist_item("partner", TASK, {"name": "Section 1", "parent": {"id": first}}, author=2)
    listed = world.list_checklist("partner", TASK, {"fields": "id,name,isDone,parent"})
    assert listed == [{"id": first, "name": "Draft", "isDone": False},
                      {"id": second, "name": "Review", "isDone": True},
                      {"id": child, "name": "Section 1", "isDone": False, "parent": {"id": first}}]
    assert world.list_checklist("partner", TASK, {}) == [{"id": first}, {"id": second}, {"id": child}]
    assert world.get_checklist_item("partner", TASK, second, "assignees")["assignees"]["users"] == [
        {"id": "user:3", "name": "Olga Dev"}]
    assert world.update_checklist_item("partner", TASK, first, {"name": "Draft v2", "isDone": True}, author=2) == []
    assert world.get_checklist_item("partner", TASK, first, "name,isDone") == {"id": first, "name": "Draft v2",
                                                                              "isDone": True}


def test_paging_and_other_tasks_items_stay_apart(emulator_world):
    world = emulator_world
    other = world.create_task("partner", {"name": "Other", "processId": 1}, author=2)
    ids = [world.create_checklist_item("partner", TASK, {"name": f"step {n}"}, author=2) for n in range(5)]
    world.create_checklist_item("partner", other, {"name": "elsewhere"}, author=2)
    page = world.list_checklist("partner", TASK, {"offset": 2, "pageSize": 2, "fields": "id"})
    assert [item["id"] for item in page] == ids[2:4]
    assert [item["name"] for item in world.list_checklist("partner", other, {"fields": "name"})] == ["elsewhere"]
    with pytest.raises(ApiError) as caught:
        world.get_checklist_item("partner", other, ids[0])
    assert (caught.value.status, caught.value.code) == (400, 600)
    with pytest.raises(ApiError) as caught:
        world.list_checklist("partner", TASK, {"pageSize": 101})
    assert caught.value.code == 41


@pytest.mark.parametrize("body, message", [
    ({}, "name is required"),
    ({"name": "  "}, "name is required"),
    ({"name": "x", "isDone": "yes"}, "isDone"),
    ({"name": "x", "parent": {"id": 999}}, "not found"),
    ({"name": "x", "assignees": {"users": [{"id": "user:99"}]}}, "user 99"),
])
def test_a_bad_create_is_a_601_and_creates_nothing(emulator_world, body, message):
    with pytest.raises(ApiError) as caught:
        emulator_world.create_checklist_item("partner", TASK, body, author=2)
    assert (caught.value.status, caught.value.code) == (400, 601)
    assert message in caught.value.message
    assert emulator_world.list_checklist("partner", TASK, {}) == []


def test_a_bad_update_field_is_a_failure_and_the_rest_applies(emulator_world):
    world = emulator_world
    item = world.create_checklist_item("partner", TASK, {"name": "Draft"}, author=2)
    failures = world.update_checklist_item("partner", TASK, item, {"name": "", "isDone": True}, author=2)
    assert [f["field"] for f in failures] == ["name"]
    assert world.get_checklist_item("partner", TASK, item, "name,isDone") == {"id": item, "name": "Draft",
                                                                             "isDone": True}
    failures = world.update_checklist_item("partner", TASK, item, {"parent": {"id": item}}, author=2)
    assert [f["field"] for f in failures] == ["parent"]


def test_an_item_cannot_become_its_own_ancestor(emulator_world):
    world = emulator_world
    top = world.create_checklist_item("partner", TASK, {"name": "top"}, author=2)
    child = world.create_checklist_item("partner", TASK, {"name": "child", "parent": {"id": top}}, author=2)
    failures = world.update_checklist_item("partner", TASK, top, {"parent": {"id": child}}, author=2)
    assert [f["field"] for f in failures] == ["parent"]
    assert "parent" not in world.get_checklist_item("partner", TASK, top, "parent")


def test_source_markers_are_not_stored_as_the_spec_has_none(emulator_world):
    world = emulator_world
    item = world.create_checklist_item("partner", TASK, {"name": "x", "sourceObjectId": "abc",
                                                         "sourceDataVersion": "v"}, author=1)
    view = world.get_checklist_item("partner", TASK, item, "id,name,sourceObjectId,sourceDataVersion")
    assert view == {"id": item, "name": "x"}


def test_adding_and_checking_an_item_is_a_task_change_for_scenarios(emulator_world, events):
    world = emulator_world
    item = world.create_checklist_item("partner", TASK, {"name": "x"}, author=2)
    world.update_checklist_item("partner", TASK, item, {"isDone": True}, author=3)
    world.update_checklist_item("partner", TASK, item, {"isDone": True}, author=3)   # no change: no event
    world.update_checklist_item("partner", TASK, item, {"name": ""}, author=3)       # refused: no event
    assert events == [("task_changed", TASK, 2), ("task_changed", TASK, 3)]
    # The task's last-update time moved with the item (a seeded task's is older than any item).
    assert world.account("partner").tasks[TASK]["dateOfLastUpdate"] >= world.account("partner").checklist[item]["dateTime"]


def test_the_dump_carries_checklists_and_card_files_with_digests(emulator_world):
    world = emulator_world
    world.create_checklist_item("partner", TASK, {"name": "x", "isDone": True}, author=2)
    file_id = world.upload_file("partner", "a.txt", b"abc", author=2)
    world.attach_file_to_task("partner", file_id, TASK, author=2)
    task = next(t for t in world.dump_tasks("partner") if t["id"] == TASK)
    assert [(i["name"], i["isDone"]) for i in task["checklist"]] == [("x", True)]
    assert task["files"] == [{"id": file_id, "name": "a.txt", "size": 1,
                              "sha256": "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"}]


# -- REST ------------------------------------------------------------------------------------------

def test_rest_endpoints_answer_in_the_spec_shapes(emulator_app_client, emulator_world):
    load_spec()
    client = emulator_app_client
    body = {"name": "Check documentation", "isDone": False, "assignees": {"users": [{"id": "user:2"}]}}
    validate_request("post", "/task/{id}/checklist", body)
    created = client.post(REST + f"/task/{TASK}/checklist", json=body, headers=SYNC)
    assert created.status_code == 201
    check(created, "post", "/task/{id}/checklist")
    item = created.json()["id"]
    child = client.post(REST + f"/task/{TASK}/checklist/", json={"name": "sub", "parent": {"id": item}},
                        headers=SYNC).json()["id"]
    listed = client.post(REST + f"/task/{TASK}/checklist/list", json={"fields": ALL_ITEM_FIELDS}, headers=SYNC)
    check(listed, "post", "/task/{id}/checklist/list")
    assert [i["id"] for i in listed.json()["items"]] == [item, child]
    assert listed.json()["items"][1]["parent"] == {"id": item}
    got = client.get(REST + f"/task/{TASK}/checklist/{item}?fields={ALL_ITEM_FIELDS}", headers=SYNC)
    check(got, "get", "/task/{id}/checklist/{itemId}")
    assert got.json()["item"]["name"] == "Check documentation"
    validate_request("post", "/task/{id}/checklist/{itemId}", {"isDone": True})
    updated = client.post(REST + f"/task/{TASK}/checklist/{item}", json={"isDone": True}, headers=SYNC)
    assert updated.status_code == 200
    check(updated, "post", "/task/{id}/checklist/{itemId}")
    assert emulator_world.get_checklist_item("partner", TASK, item, "isDone")["isDone"] is True
    partial = client.post(REST + f"/task/{TASK}/checklist/{item}", json={"name": ""}, headers=SYNC)
    check(partial, "post", "/task/{id}/checklist/{itemId}")
    assert [f["field"] for f in partial.json()["failures"]] == ["name"]


def test_rest_errors_answer_in_the_spec_shapes(emulator_app_client):
    client = emulator_app_client
    missing = client.get(REST + f"/task/{TASK}/checklist/999", headers=SYNC)
    assert (missing.status_code, missing.json()["code"]) == (400, 600)
    check(missing, "get", "/task/{id}/checklist/{itemId}")
    no_name = client.post(REST + f"/task/{TASK}/checklist", json={"isDone": True}, headers=SYNC)
    assert (no_name.status_code, no_name.json()["code"]) == (400, 601)
    check(no_name, "post", "/task/{id}/checklist")
    unknown = client.post(REST + f"/task/{TASK}/checklist/999", json={"isDone": True}, headers=SYNC)
    assert (unknown.status_code, unknown.json()["code"]) == (400, 600)
    check(unknown, "post", "/task/{id}/checklist/{itemId}")
    check(client.post(REST + f"/task/{TASK}/checklist/list", json={}), "post", "/task/{id}/checklist/list")  # 401
    # The read-only token may list, not write: scope denied is a 405 code 5.
    assert client.post(REST + f"/task/{TASK}/checklist/list", json={}, headers=READONLY).status_code == 200
    denied = client.post(REST + f"/task/{TASK}/checklist", json={"name": "x"}, headers=READONLY)
    assert (denied.status_code, denied.json()["code"]) == (405, 5)
    check(denied, "post", "/task/{id}/checklist")


def test_items_cannot_be_deleted(emulator_app_client, emulator_world):
    item = emulator_world.create_checklist_item("partner", TASK, {"name": "stays"}, author=2)
    answer = emulator_app_client.delete(REST + f"/task/{TASK}/checklist/{item}", headers=SYNC)
    assert answer.status_code == 405
    validate({"$ref": "#/components/schemas/ApiResponseError"}, answer.json())
    assert emulator_world.get_checklist_item("partner", TASK, item, "name")["name"] == "stays"


def test_a_busy_task_queues_an_item_update_and_applies_it_later(emulator_app_client, emulator_world):
    world = emulator_world
    item = world.create_checklist_item("partner", TASK, {"name": "x"}, author=2)
    world.set_faults("partner", busy_202=1.0, busy_delay_s=0.05)
    answer = emulator_app_client.post(REST + f"/task/{TASK}/checklist/{item}", json={"isDone": True}, headers=SYNC)
    assert answer.status_code == 202
    world.set_faults("partner")
    assert world.get_checklist_item("partner", TASK, item, "isDone")["isDone"] is False
    deadline = time.monotonic() + 5
    while not world.get_checklist_item("partner", TASK, item, "isDone")["isDone"]:
        assert time.monotonic() < deadline, "the queued update was never applied"
        time.sleep(0.01)


def test_the_ui_control_routes_act_as_the_named_person(emulator_app_client, emulator_world, events):
    world, client = emulator_world, emulator_app_client
    created = client.post(f"/_emulator/partner/ui/task/{TASK}/checklist", json={"name": "by Pavel"},
                          headers={"X-Emulator-User": "2"})
    item = created.json()["id"]
    client.post(f"/_emulator/partner/ui/task/{TASK}/checklist/{item}", json={"isDone": True},
                headers={"X-Emulator-User": "user:3"})
    assert world.get_checklist_item("partner", TASK, item, "isDone")["isDone"] is True
    assert events == [("task_changed", TASK, 2), ("task_changed", TASK, 3)]
    refused = client.post(f"/_emulator/partner/ui/task/{TASK}/checklist", json={"name": "x"})
    assert refused.status_code == 400
