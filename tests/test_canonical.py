"""The canonical task view: what is fetched, how values normalise, what is in scope."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.links import FieldRule, Scope, load_links
from workers.canonical import BASE_FIELDS, canonical_task, in_scope, normalise_value, task_fields

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
LINK = load_links(EXAMPLE).links[0]

RAW = {
    "id": 5, "name": "Kick-off", "description": "<p>Plan</p>", "priority": "Urgent",
    "status": {"id": 3, "name": "Review"}, "processId": 1,
    "assignees": {"users": [{"id": "user:7", "name": "Olga"}, {"id": "user:2", "name": "Pavel"},
                            {"id": "contact:4", "name": "Vendor"}], "groups": [{"id": 1}]},
    "participants": {"users": [{"id": "user:9"}]},
    "startDateTime": {"date": "01-02-2024", "time": "10:30", "datetime": "2024-02-01T10:30Z"},
    "hasStartDate": True, "hasEndDate": False,
    "parent": {"id": 4}, "project": {"id": 10, "name": "ACME"}, "template": {"id": 50},
    "customFieldData": [
        {"field": {"id": 100, "name": "Budget", "type": 1}, "value": 1500.0, "stringValue": "1500"},
        {"field": {"id": 101, "name": "Channel", "type": 8}, "value": "mail"},
        {"field": {"id": 999, "name": "Unmapped", "type": 0}, "value": "ignored"},
    ],
}


def link_with_scope(side: str, scope: Scope):
    sides = dict(LINK.sides)
    sides[side] = replace(sides[side], scope=scope)
    return replace(LINK, sides=sides)


def test_task_fields_ask_for_what_the_link_maps():
    partner = task_fields(LINK, "partner")
    assert set(BASE_FIELDS) <= set(partner)
    assert {"name", "description", "priority", "startDateTime", "endDateTime", "hasStartDate", "100", "101"} <= set(partner)
    assert "200" not in partner and "participants" not in partner and "customFieldData" not in partner
    client = task_fields(LINK, "client")
    assert {"200", "201"} <= set(client)
    assert len(client) == len(set(client))
    assert "202" in client  # the example's assignee note field is read to compare it
    assert "cf:202" in canonical_task({}, LINK, "client")
    silent = replace(LINK, sides={**LINK.sides, "client": replace(LINK.sides["client"], assignee_note_field=None)})
    assert "202" not in task_fields(silent, "client")
    assert "cf:202" not in canonical_task({}, silent, "client")


def test_task_fields_leave_out_unsynced_fields_and_add_scope_needs():
    fields = dict(LINK.fields.rules, description=FieldRule(direction="none"))
    link = replace(LINK, fields=replace(LINK.fields, rules=fields))
    assert "description" not in task_fields(link, "partner")
    assert "participants" in task_fields(link_with_scope("partner", Scope("participant", "user:9")), "partner")
    assert "77" in task_fields(link_with_scope("partner", Scope("tag", "sync", 77)), "partner")


def test_canonical_view_of_a_full_task():
    view = canonical_task(RAW, LINK, "partner")
    assert view == {
        "name": "Kick-off", "description": "<p>Plan</p>", "priority": "Urgent",
        "start_date": "01-02-2024 10:30", "end_date": None, "status": 3,
        "assignees": ["contact:4", "user:2", "user:7"], "parent": 4, "cf:100": 1500, "cf:101": "mail", "cf:102": None,
    }
    assert json.loads(json.dumps(view)) == view


def test_canonical_view_of_a_sparse_task():
    view = canonical_task({"id": 1}, LINK, "client")
    assert view == {"name": "", "description": "", "priority": "NotUrgent", "start_date": None,
                    "end_date": None, "status": None, "assignees": [], "parent": None,
                    "cf:200": None, "cf:201": None, "cf:202": None}


def test_dates_without_time_and_cleared_dates():
    view = canonical_task({"startDateTime": {"date": "05-05-2025"}, "endDateTime": {"date": "06-05-2025", "time": "09:00"},
                           "hasEndDate": False}, LINK, "partner")
    assert view["start_date"] == "05-05-2025 00:00" and view["end_date"] is None


@pytest.mark.parametrize("raw, expected", [
    (None, None), ("", None), ([], None), ("x", "x"), (3, 3), (2.0, 2), (2.5, 2.5), (True, True),
    ({"id": 7, "name": "Entry"}, {"id": 7}), ({"date": "01-01-2024", "datetime": "x"}, {"date": "01-01-2024"}),
    (["a", "", "b"], ["a", "b"]), ([{"id": "user:3", "name": "A"}], [{"id": "user:3"}]),
])
def test_normalise_value(raw, expected):
    assert normalise_value(raw) == expected


json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                      st.text(max_size=5))
json_value = st.recursive(json_leaf, lambda inner: st.lists(inner, max_size=3)
                          | st.dictionaries(st.sampled_from(["id", "date", "time", "name", "x"]), inner, max_size=3),
                          max_leaves=8)


@settings(max_examples=200, deadline=None)
@given(json_value)
def test_normalise_is_idempotent_and_json_stable(value):
    once = normalise_value(value)
    assert normalise_value(once) == once
    assert json.loads(json.dumps(once)) == once


@settings(max_examples=100, deadline=None)
@given(name=st.text(max_size=10), status=st.integers(1, 20), people=st.lists(st.integers(1, 30), max_size=5),
       budget=json_value)
def test_canonical_view_survives_a_json_round_trip(name, status, people, budget):
    raw = {"name": name, "status": {"id": status}, "assignees": {"users": [{"id": f"user:{n}"} for n in people]},
           "customFieldData": [{"field": {"id": 100}, "value": budget}]}
    view = canonical_task(raw, LINK, "partner")
    assert json.loads(json.dumps(view)) == view
    assert view["assignees"] == sorted(set(view["assignees"]))
    assert canonical_task(raw, LINK, "partner") == view


@pytest.mark.parametrize("scope, task, expected", [
    (Scope("project", 10), {"project": {"id": 10}}, True),
    (Scope("project", 10), {"project": {"id": 11}}, False),
    (Scope("project", 10), {}, False),
    (Scope("template", 50), {"template": {"id": 50}}, True),
    (Scope("template", 50), {"template": {"id": 51}}, False),
    (Scope("participant", "user:9"), {"participants": {"users": [{"id": "user:9"}]}}, True),
    (Scope("participant", "user:9"), {"assignees": {"users": [{"id": "user:9"}]}}, True),
    (Scope("participant", "user:9"), {"participants": {"users": [{"id": "user:8"}]}}, False),
    (Scope("custom_field", "yes", 77), {"customFieldData": [{"field": {"id": 77}, "value": "yes"}]}, True),
    (Scope("custom_field", 1, 77), {"customFieldData": [{"field": {"id": 77}, "value": 1.0}]}, True),
    (Scope("custom_field", 3, 77), {"customFieldData": [{"field": {"id": 77}, "value": {"id": 3, "name": "X"}}]}, True),
    (Scope("custom_field", "yes", 77), {"customFieldData": [{"field": {"id": 77}, "value": "no"}]}, False),
    (Scope("custom_field", "yes", 77), {}, False),
    (Scope("tag", "#sync", 77), {"customFieldData": [{"field": {"id": 77}, "value": "a #sync b"}]}, True),
    (Scope("tag", "#sync", 77), {"customFieldData": [{"field": {"id": 77}, "value": ["#sync", "x"]}]}, True),
    (Scope("tag", "#sync", 77), {"customFieldData": [{"field": {"id": 77}, "value": ["x"]}]}, False),
    (Scope("tag", "#sync", 77), {"customFieldData": [{"field": {"id": 78}, "value": "#sync"}]}, False),
])
def test_in_scope(scope, task, expected):
    assert in_scope(link_with_scope("partner", scope), "partner", task) is expected


def test_a_paired_task_left_the_link_when_out_of_scope_and_a_mirror_only_where_mirrors_belong():
    from dataclasses import replace

    from workers.canonical import left_scope

    link = load_links(EXAMPLE).links[0]
    inside, outside = {"project": {"id": 20}}, {"project": None}
    assert not left_scope(link, "client", inside, is_mirror=False)
    assert left_scope(link, "client", outside, is_mirror=False)
    # The example makes mirrors in the scope's project: one moved out of it left.
    assert link.sides["client"].create.project == 20 and left_scope(link, "client", outside, is_mirror=True)
    # Mirrors made elsewhere by design did not leave by being elsewhere.
    elsewhere = replace(link, sides={**link.sides, "client": replace(
        link.sides["client"], create=replace(link.sides["client"].create, project=None))})
    assert not left_scope(elsewhere, "client", outside, is_mirror=True)
