"""The emulator's World driven directly: seeding, task/comment semantics, filters, limits, faults."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from planfix.emulator.world import INTERNAL_ID_OFFSET, ApiError, World
from tests.conftest import EMULATOR_SEED

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "emulator.yaml"


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_world(clock: FakeClock | None = None, **patch) -> World:
    config = copy.deepcopy(EMULATOR_SEED)
    for account, values in patch.items():
        config["accounts"][account].update(values)
    return World.from_config(config, clock=clock)


# -- seeding --------------------------------------------------------------------------------

def test_seed_numbers_continue_after_seeded_tasks_and_internal_id_differs(emulator_world):
    number = emulator_world.create_task("partner", {"name": "Second"}, author=2)
    assert number == 2
    dump = {task["id"]: task for task in emulator_world.dump_tasks("partner")}
    assert dump[1]["name"] == "Kick-off"
    assert dump[1]["assignees"]["users"] == [{"id": "user:2", "name": "Pavel Lead"}]
    assert dump[2]["internalId"] == 2 + INTERNAL_ID_OFFSET != 2
    assert emulator_world.create_task("client", {"name": "First on client"}, author=5) == 1


def test_example_seed_loads_with_two_accounts_and_transitions():
    world = World.from_yaml(EXAMPLE)
    try:
        assert set(world.accounts) == {"partner", "client"}
        client = world.accounts["client"]
        assert any(p["transitions"] for p in client.processes.values())
        for account in world.accounts.values():
            assert len(account.custom_fields) >= 2 and account.projects and account.tasks
            assert all(s["url"].startswith("http://127.0.0.1:8080/hooks/demo/") for s in account.scenarios)
    finally:
        world.close()


@pytest.mark.parametrize("bad, message", [
    ({"accounts": {"x": {"users": []}}}, "at least one user"),
    ({"accounts": {"x": {"users": [{"id": 1, "name": "A"}],
                         "scenarios": [{"event": "task_moved", "url": "http://h"}]}}}, "event"),
    ({"accounts": {"x": {"users": [{"id": 1, "name": "A"}], "processes": [{"id": 1}]}}}, "account 'x'"),
])
def test_bad_seed_is_a_clear_value_error(bad, message):
    with pytest.raises(ValueError, match=message):
        World.from_config(bad)


# -- task semantics ---------------------------------------------------------------------------

def test_update_is_partial_and_bumps_last_update():
    clock = FakeClock()
    world = make_world(clock)
    number = world.create_task("partner", {"name": "A", "description": "d", "project": {"id": 10}}, author=1)
    clock.advance(60)
    assert world.update_task("partner", number, {"name": "B"}, author=1) == []
    task = world.get_task("partner", number, "name,description,project,dateOfLastUpdate,dateTime")
    assert task["name"] == "B" and task["description"] == "d" and task["project"]["id"] == 10
    assert task["dateOfLastUpdate"]["dateTimeUtcSeconds"] != task["dateTime"]["dateTimeUtcSeconds"]
    world.close()


def test_status_outside_process_is_a_failure_and_other_fields_apply(emulator_world):
    failures = emulator_world.update_task("partner", 1, {"status": {"id": 12}, "name": "Renamed"}, author=1)
    assert [f["field"] for f in failures] == ["status"]
    task = emulator_world.get_task("partner", 1, "status,name")
    assert task["status"]["id"] == 1 and task["name"] == "Renamed"


def test_transitions_graph_allows_only_listed_moves(emulator_world):
    number = emulator_world.create_task("client", {"name": "R"}, author=5)
    assert emulator_world.update_task("client", number, {"status": {"id": 13}}, author=5)[0]["field"] == "status"
    assert emulator_world.get_task("client", number, "status")["status"]["id"] == 11
    assert emulator_world.update_task("client", number, {"status": {"id": 12}}, author=5) == []
    assert emulator_world.update_task("client", number, {"status": {"id": 13}}, author=5) == []
    assert emulator_world.get_task("client", number, "status")["status"]["id"] == 13


def test_no_transitions_means_every_move_allowed(emulator_world):
    assert emulator_world.update_task("partner", 1, {"status": {"id": 4}}, author=1) == []
    assert emulator_world.update_task("partner", 1, {"status": {"id": 1}}, author=1) == []


def test_create_with_bad_status_is_400_41_and_creates_nothing(emulator_world):
    with pytest.raises(ApiError) as caught:
        emulator_world.create_task("partner", {"name": "X", "status": {"id": 99}}, author=1)
    assert (caught.value.status, caught.value.code) == (400, 41)
    assert len(emulator_world.dump_tasks("partner")) == 1


def test_create_without_name_is_400_40(emulator_world):
    with pytest.raises(ApiError) as caught:
        emulator_world.create_task("partner", {"description": "no name"}, author=1)
    assert caught.value.code == 40


def test_custom_fields_partial_unknown_silently_dropped_no_enum_check(emulator_world):
    world = emulator_world
    world.update_task("partner", 1, {"customFieldData": [{"field": {"id": 100}, "value": 10},
                                                         {"field": {"id": 101}, "value": "carrier pigeon"}]}, author=1)
    world.update_task("partner", 1, {"customFieldData": [{"field": {"id": 100}, "value": 12},
                                                         {"field": {"id": 555}, "value": "x"}]}, author=1)
    values = {e["field"]["id"]: e["value"] for e in world.get_task("partner", 1, "100,101,555")["customFieldData"]}
    assert values == {100: 12, 101: "carrier pigeon"}


def test_fields_word_customfielddata_is_ignored(emulator_world):
    emulator_world.update_task("partner", 1, {"customFieldData": [{"field": {"id": 100}, "value": 1}]}, author=1)
    assert emulator_world.get_task("partner", 1, "customFieldData") == {"id": 1}


def test_files_replace_the_set(emulator_world):
    first = emulator_world.upload_file("partner", "a.txt", b"a", author=1)
    second = emulator_world.upload_file("partner", "b.txt", b"b", author=1)
    emulator_world.update_task("partner", 1, {"files": [{"id": first}, {"id": second}]}, author=1)
    emulator_world.update_task("partner", 1, {"files": [{"id": second}]}, author=1)
    assert [f["id"] for f in emulator_world.get_task("partner", 1, "files")["files"]] == [second]
    failures = emulator_world.update_task("partner", 1, {"files": [{"id": 999}]}, author=1)
    assert failures[0]["field"] == "files"


def test_dates_accept_string_or_object_and_has_end_date_false_clears(emulator_world):
    emulator_world.update_task("partner", 1, {"endDateTime": "05-03-2024 14:30",
                                              "startDateTime": {"date": "01-03-2024", "time": "09:00"}}, author=1)
    task = emulator_world.get_task("partner", 1, "endDateTime,startDateTime,hasEndDate,hasEndTime")
    assert task["endDateTime"]["datetime"] == "2024-03-05T14:30Z"
    assert task["startDateTime"]["date"] == "01-03-2024" and task["hasEndDate"] and task["hasEndTime"]
    emulator_world.update_task("partner", 1, {"hasEndDate": False}, author=1)
    task = emulator_world.get_task("partner", 1, "endDateTime,hasEndDate,startDateTime")
    assert "endDateTime" not in task and task["hasEndDate"] is False and "startDateTime" in task
    assert emulator_world.update_task("partner", 1, {"endDateTime": "2024/03/05"}, author=1)[0]["field"] == "endDateTime"


def test_source_fields_stored_on_tasks_and_comments(emulator_world):
    number = emulator_world.create_task("partner", {"name": "M", "sourceObjectId": "0b9c1d6e-1111-4b5a-9c1d-000000000001",
                                                    "sourceDataVersion": "crosslink:acme:client:7"}, author=1)
    task = emulator_world.get_task("partner", number, "sourceObjectId,sourceDataVersion")
    assert task["sourceDataVersion"] == "crosslink:acme:client:7"
    comment = emulator_world.add_comment("partner", number, {"description": "c", "sourceDataVersion": "v1"}, author=1)
    assert emulator_world.get_comment("partner", comment, "sourceDataVersion")["sourceDataVersion"] == "v1"
    assert emulator_world.update_task("partner", number, {"sourceDataVersion": "x" * 101}, author=1)


def test_people_and_groups(emulator_world):
    emulator_world.update_task("partner", 1, {"assignees": {"users": [{"id": "user:3"}], "groups": [{"id": 7}]},
                                              "assigner": {"id": "user:2"}}, author=1)
    task = emulator_world.get_task("partner", 1, "assignees,assigner")
    assert task["assignees"] == {"users": [{"id": "user:3", "name": "Olga Dev"}],
                                 "groups": [{"id": 7, "name": "Developers"}]}
    assert task["assigner"] == {"id": "user:2", "name": "Pavel Lead"}
    failures = emulator_world.update_task("partner", 1, {"assignees": {"users": [{"id": "user:99"}]}}, author=1)
    assert failures[0]["field"] == "assignees"


def test_parent_cycle_rejected(emulator_world):
    child = emulator_world.create_task("partner", {"name": "child", "parent": {"id": 1}}, author=1)
    assert emulator_world.update_task("partner", 1, {"parent": {"id": child}}, author=1)[0]["field"] == "parent"


# -- filters ----------------------------------------------------------------------------------

@pytest.fixture
def filled():
    clock = FakeClock(1_710_000_000.0)  # 09-03-2024 16:00 UTC
    world = make_world(clock)
    parent = 1
    world.create_task("partner", {"name": "t2", "status": {"id": 2}, "project": {"id": 11}, "template": {"id": 50},
                                  "assignees": {"users": [{"id": "user:3"}], "groups": [{"id": 7}]},
                                  "assigner": {"id": "user:2"}, "parent": {"id": parent},
                                  "customFieldData": [{"field": {"id": 100}, "value": 500}]}, author=1)
    clock.advance(3600)
    world.create_task("partner", {"name": "t3", "parent": {"id": 2},
                                  "customFieldData": [{"field": {"id": 101}, "value": "mail"}]}, author=1)
    clock.advance(3600)
    world.add_comment("partner", 1, {"description": "late comment"}, author=2)
    yield world, clock
    world.close()


def numbers(world: World, *filters, **body) -> list[int]:
    return [t["id"] for t in world.list_tasks("partner", {"filters": list(filters), **body})]


@pytest.mark.parametrize("flt, expected", [
    ({"type": 57, "operator": "equal", "value": [1, 3]}, [1, 3]),
    ({"type": 57, "operator": "gt", "value": 1}, [2, 3]),
    ({"type": 10, "operator": "equal", "value": 2}, [2]),
    ({"type": 10, "operator": "notequal", "value": 2}, [1, 3]),
    ({"type": 24, "operator": "equal", "value": 1}, [1, 2, 3]),
    ({"type": 5, "operator": "equal", "value": 11}, [2]),
    ({"type": 51, "operator": "equal", "value": 50}, [2]),
    ({"type": 2, "operator": "equal", "value": "group:7"}, [2]),
    ({"type": 97, "operator": "equal", "value": "group:7"}, []),
    ({"type": 97, "operator": "equal", "value": "user:3"}, [2]),
    ({"type": 2, "operator": "equal", "value": "user:2"}, [1]),
    ({"type": 1, "operator": "equal", "value": "user:2"}, [2]),
    ({"type": 73, "operator": "equal", "value": 1}, [2]),
    ({"type": 307, "operator": "equal", "value": 1}, [2, 3]),
    ({"type": 152, "operator": "equal", "value": 100, "field": 100}, [2]),
    ({"type": 153, "operator": "equal", "value": 100, "field": 100}, [1, 3]),
    ({"type": 102, "operator": "gt", "value": 100, "field": 100}, [2]),
    ({"type": 102, "operator": "lt", "value": 100, "field": 100}, []),
    ({"type": 108, "operator": "equal", "value": "mail", "field": 101}, [3]),
])
def test_task_filters(filled, flt, expected):
    world, _ = filled
    assert numbers(world, flt) == expected


def test_date_filters_created_modified_commented(filled):
    world, clock = filled
    since = {"dateType": "otherRange_withTime", "dateFrom": "09-03-2024 16:30", "dateTo": "09-03-2024 23:59"}
    assert numbers(world, {"type": 12, "operator": "equal", "value": since}) == [3]
    assert numbers(world, {"type": 38, "operator": "equal", "value": since}) == [3]
    assert numbers(world, {"type": 79, "operator": "equal", "value": since}) == [1, 3]
    assert numbers(world, {"type": 21, "operator": "equal", "value": since}) == [1]
    assert numbers(world, {"type": 12, "operator": "lt", "value": since}) == [1, 2]
    assert numbers(world, {"type": 12, "operator": "equal", "value": {"dateType": "today"}}) == [1, 2, 3]
    assert numbers(world, {"type": 12, "operator": "equal", "value": {"dateType": "yesterday"}}) == []
    assert numbers(world, {"type": 12, "operator": "equal",
                           "value": {"dateType": "otherDate", "dateValue": "09-03-2024"}}) == [1, 2, 3]


def test_filters_combine_with_and_and_paging(filled):
    world, _ = filled
    assert numbers(world, {"type": 24, "operator": "equal", "value": 1},
                   {"type": 10, "operator": "equal", "value": 1}) == [1, 3]
    assert numbers(world, pageSize=2) == [1, 2]
    assert numbers(world, pageSize=2, offset=2) == [3]


@pytest.mark.parametrize("body", [{"pageSize": 0}, {"pageSize": 101}, {"offset": -1},
                                  {"filters": [{"type": 4242, "operator": "equal", "value": 1}]},
                                  {"filters": [{"type": 12, "operator": "equal", "value": {"dateType": "someday"}}]}])
def test_bad_list_requests_are_400_41(filled, body):
    world, _ = filled
    with pytest.raises(ApiError) as caught:
        world.list_tasks("partner", body)
    assert (caught.value.status, caught.value.code) == (400, 41)


# -- comments ---------------------------------------------------------------------------------

def test_comment_owner_backdating_delete_and_type_lists(emulator_world):
    world = emulator_world
    first = world.add_comment("partner", 1, {"description": "as Pavel", "owner": {"id": "user:2"},
                                             "dateTime": "01-01-2024 10:00"}, author=1)
    second = world.add_comment("partner", 1, {"description": "robot"}, author=1)
    view = world.get_comment("partner", first, "owner,dateTime")
    assert view["owner"]["id"] == "user:2" and view["dateTime"]["date"] == "01-01-2024"
    world.delete_comment("partner", first, author=1)
    assert world.get_comment("partner", first, "isDeleted")["isDeleted"] is True
    ids = lambda tl: [c["id"] for c in world.list_task_comments("partner", 1, {"typeList": tl})]  # noqa: E731
    assert ids("Comments") == [second] and ids("Deleted") == [first] and ids("All") == [first, second]
    desc = world.list_task_comments("partner", 1, {"typeList": "All", "resultOrder": [{"filed": "id", "direction": "Desc"}]})
    assert [c["id"] for c in desc] == [second, first]


def test_comment_ids_are_account_wide(emulator_world):
    other = emulator_world.create_task("partner", {"name": "other"}, author=1)
    a = emulator_world.add_comment("partner", 1, {"description": "a"}, author=1)
    b = emulator_world.add_comment("partner", other, {"description": "b"}, author=1)
    assert b == a + 1


def test_comment_update_checks_task_and_comment_list_filters(emulator_world):
    world = emulator_world
    comment = world.add_comment("partner", 1, {"description": "v1"}, author=2)
    world.update_comment("partner", comment, {"description": "v2", "isPinned": True}, author=2, task_number=1)
    assert world.get_comment("partner", comment, "description,isPinned") == {"id": comment, "description": "v2", "isPinned": True}
    other = world.create_task("partner", {"name": "o"}, author=1)
    with pytest.raises(ApiError) as caught:
        world.update_comment("partner", comment, {"description": "x"}, author=2, task_number=other)
    assert caught.value.code == 5000
    world.add_comment("partner", 1, {"description": "robot"}, author=1)
    by_author = world.list_comments("partner", {"filters": [{"type": 3001, "operator": "equal", "value": "user:2"}]})
    assert [c["id"] for c in by_author] == [comment]
    today = world.list_comments("partner", {"filters": [{"type": 3000, "operator": "equal", "value": {"dateType": "today"}}]})
    assert len(today) == 2


def test_comment_too_large_is_rejected(emulator_world):
    with pytest.raises(ApiError):
        emulator_world.add_comment("partner", 1, {"description": "x" * (64 * 1024 + 1)}, author=1)
    assert emulator_world.list_task_comments("partner", 1, {}) == []


# -- users, processes, custom fields ----------------------------------------------------------

def test_user_list_filters_prefixed_only_active(emulator_world):
    world = emulator_world
    found = world.list_users("partner", {"filters": [{"type": 9003, "operator": "equal", "value": "PAVEL@partner.example"}],
                                         "fields": "id,name,email"})
    assert found == [{"id": 2, "name": "Pavel Lead", "email": "pavel@partner.example"}]
    assert [u["id"] for u in world.list_users("partner", {"filters": [{"type": 9006, "operator": "equal", "value": "olg"}],
                                                          "prefixedId": True})] == ["user:3"]
    world.deactivate_user("partner", 3)
    assert [u["id"] for u in world.list_users("partner", {"onlyActive": True})] == [1, 2]
    assert [u["id"] for u in world.list_users("partner", {"pageSize": 1, "offset": 2})] == [3]


def test_statuses_and_custom_fields_are_opt_in(emulator_world):
    assert emulator_world.statuses("partner", 1, None)[0] == {"id": 1}
    assert emulator_world.statuses("partner", 1, "name")[1] == {"id": 2, "name": "In work"}
    fields = emulator_world.custom_fields("partner", "name,type,enumValues")
    assert fields[1] == {"id": 101, "name": "Channel", "type": 8, "enumValues": ["mail", "phone"]}
    assert emulator_world.processes("partner", "name") == [{"id": 1, "name": "Partner delivery"}]


# -- limits and the request log --------------------------------------------------------------

def test_rate_limit_sliding_window():
    clock = FakeClock()
    world = make_world(clock)
    world.set_limits("partner", rate_per_s=2)
    assert world.admit("partner")[0] is None
    clock.advance(0.5)
    assert world.admit("partner")[0] is None
    clock.advance(0.4)
    rejected, headers = world.admit("partner")
    assert rejected.status == 429 and headers["Retry-After"] == "1"
    clock.advance(0.11)  # the first request is now more than 1.0 s old
    assert world.admit("partner")[0] is None
    world.close()


def test_daily_quota_code_22_resets_next_utc_day():
    clock = FakeClock(86400 * 20000 + 86400 - 100)  # 100 s before a UTC midnight
    world = make_world(clock)
    world.set_limits("partner", daily_quota=2)
    assert world.admit("partner") == (None, {"X-RateLimit-Remaining": "1"})
    assert world.admit("partner")[1]["X-RateLimit-Remaining"] == "0"
    rejected, _ = world.admit("partner")
    assert (rejected.status, rejected.code, rejected.extra["timeToReset"]) == (403, 22, 100)
    clock.advance(101)
    assert world.admit("partner")[0] is None
    world.close()


def test_quota_exhausted_fault_flag(emulator_world):
    emulator_world.set_faults("partner", quota_exhausted=True)
    assert emulator_world.admit("partner")[0].code == 22
    assert emulator_world.admit("client")[0] is None


def _brute_max(times: list[float], window: float) -> int:
    return max((sum(1 for u in times if t <= u < t + window) for t in times), default=0)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), max_size=30),
       st.sampled_from([0.5, 1.0, 2.0]))
def test_max_requests_in_window_matches_brute_force(times, window):
    world = make_world()
    for moment in times:
        world.log_request("partner", t=moment, method="GET", path="/ping", status=200, user=1, over_limit=False)
    assert world.max_requests_in_window("partner", window) == _brute_max(times, window)
    world.close()


def test_faults_are_reproducible_and_validated():
    draws = []
    for _ in range(2):
        world = make_world()
        world.set_faults("partner", error_500=0.3, slow=0.3, seed=7)
        draws.append([world.draw_fault("partner", task_update=False) for _ in range(40)])
        world.close()
    assert draws[0] == draws[1]
    assert {"error_500", "slow", None} == set(draws[0])
    with pytest.raises(ValueError, match="unknown fault"):
        make_world().set_faults("partner", error_404=1)


def test_tokens_and_users_toggle(emulator_world):
    world = emulator_world
    assert world.authenticate("partner", "tok-partner-sync", "task_update") == 1
    world.revoke_token("partner", "tok-partner-sync")
    with pytest.raises(ApiError) as caught:
        world.authenticate("partner", "tok-partner-sync", None)
    assert caught.value.code == 1
    world.restore_token("partner", "tok-partner-sync")
    world.deactivate_user("partner", 1)
    with pytest.raises(ApiError) as caught:
        world.authenticate("partner", "tok-partner-sync", None)
    assert (caught.value.status, caught.value.code) == (403, 16)
    world.activate_user("partner", 1)
    assert world.authenticate("partner", "tok-partner-sync", None) == 1
    with pytest.raises(ApiError) as caught:
        world.authenticate("partner", "tok-partner-readonly", "task_update")
    assert (caught.value.status, caught.value.code) == (405, 5)
    assert "tok-partner" not in repr(world.accounts["partner"])


@settings(max_examples=80, deadline=None)
@given(st.integers(min_value=0, max_value=4 * 86400), st.integers(min_value=0, max_value=4 * 86400),
       st.integers(min_value=0, max_value=3 * 1440))
def test_date_operators_partition_the_timeline(offset, moment_offset, span_minutes):
    """equal and notequal are complements; gt, equal and lt never overlap and cover every instant."""
    from datetime import datetime, timezone

    from planfix.emulator.timepoints import date_matches

    base = 1_710_000_000 - 1_710_000_000 % 60
    start = datetime.fromtimestamp(base + offset - offset % 60, tz=timezone.utc)
    end = datetime.fromtimestamp(start.timestamp() + span_minutes * 60, tz=timezone.utc)
    value = {"dateType": "otherRange_withTime", "dateFrom": start.strftime("%d-%m-%Y %H:%M"),
             "dateTo": end.strftime("%d-%m-%Y %H:%M")}
    moment = base + moment_offset
    hits = {op: date_matches(moment, op, value, now=base) for op in ("equal", "notequal", "gt", "lt")}
    assert hits["equal"] != hits["notequal"]
    assert sum((hits["gt"], hits["equal"], hits["lt"])) == 1
    assert date_matches(None, "equal", value, now=base) is False


def test_new_fault_kinds_are_drawn_where_they_can_happen():
    """slow_202 is a queued task update, so only updates draw it; connection_closed hits any request."""
    world = make_world()
    world.set_faults("partner", slow_202=1.0, connection_closed=1.0, seed=1)
    assert world.draw_fault("partner", task_update=True) == "slow_202"
    assert world.draw_fault("partner", task_update=False) == "connection_closed"
    world.set_faults("partner", jitter_s=0.2, seed=1)
    draws = [world.draw_jitter("partner") for _ in range(50)]
    assert all(0 <= value <= 0.2 for value in draws) and len(set(draws)) > 40
    world.set_faults("partner")
    assert world.draw_jitter("partner") == 0.0 and world.draw_fault("partner", task_update=True) is None
