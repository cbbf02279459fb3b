"""Changed fields against a snapshot, and which way each field flows."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.links import DIRECTIONS, SYSTEM_FIELDS, CustomFieldRule, FieldRule, load_links
from workers.field_diff import (
    ALTERNATIVES,
    QUEUED,
    agreed_with_echoes,
    changed_fields,
    echoes,
    entries_of,
    flows,
    landed_unagreed,
    settled,
    still_to_land,
    with_queued,
    with_sent,
    without_entries,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
LINK = load_links(EXAMPLE).links[0]


def test_no_snapshot_means_everything_changed():
    assert changed_fields(None, {"name": "a", "status": 1}) == {"name", "status"}


def test_changed_fields_compare_values():
    before = {"name": "a", "assignees": ["user:1"], "cf:100": None, "gone": 1}
    after = {"name": "b", "assignees": ("user:1",), "cf:100": None, "new": 2}
    assert changed_fields(before, after) == {"name", "gone", "new"}
    assert changed_fields({"cf:1": None}, {}) == {"cf:1"}


values = st.one_of(st.none(), st.integers(), st.text(max_size=3), st.lists(st.integers(), max_size=3))
views = st.dictionaries(st.sampled_from(["name", "status", "assignees", "cf:1", "cf:2"]), values, max_size=5)


@settings(max_examples=300, deadline=None)
@given(views, views)
def test_changed_fields_properties(a, b):
    assert changed_fields(a, a) == set()
    assert changed_fields(a, b) == changed_fields(b, a)
    assert changed_fields(a, b) == {k for k in set(a) | set(b) if a.get(k, "∅") != b.get(k, "∅")}


@pytest.mark.parametrize("direction, side", list(itertools.product(DIRECTIONS, ("partner", "client"))))
def test_flows_for_every_direction_and_side(direction, side):
    rules = {name: FieldRule(direction=direction) for name in SYSTEM_FIELDS}
    custom = (CustomFieldRule(100, 200, direction=direction),)
    link = replace(LINK, fields=replace(LINK.fields, rules=rules, custom=custom))
    expected = direction == "both" or direction == f"{side}_to_{'client' if side == 'partner' else 'partner'}"
    for field in SYSTEM_FIELDS:
        assert flows(link, field, side) is expected
    own_id = 100 if side == "partner" else 200
    assert flows(link, f"cf:{own_id}", side) is expected
    other_id = 200 if side == "partner" else 100
    assert flows(link, f"cf:{other_id}", side) is False  # the other side's id means nothing here
    assert flows(link, "cf:999", side) is False and flows(link, "cf:x", side) is False


def test_flows_in_the_example():
    assert flows(LINK, "cf:101", "partner") and not flows(LINK, "cf:201", "client")
    assert flows(LINK, "name", "client") and flows(LINK, "status", "client")


# -- echoes of the sync's own writes ---------------------------------------------------------

ECHO_VALUES = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=3),
                        st.lists(st.sampled_from(["user:5", "user:6"]), max_size=2))
ECHO_KEYS = st.sampled_from(["name", "status", "assignees", "cf:200"])


@given(snapshot=st.dictionaries(ECHO_KEYS, ECHO_VALUES), now=st.dictionaries(ECHO_KEYS, ECHO_VALUES),
       expected=st.dictionaries(ECHO_KEYS, ECHO_VALUES))
def test_only_values_no_echo_explains_count_as_changed(snapshot, now, expected):
    agreed = agreed_with_echoes(snapshot, now, expected)
    echoes = {key for key in now if key in expected and expected[key] == now[key]}
    assert changed_fields(agreed, now) == changed_fields(snapshot, now) - echoes
    # Nothing but echoes moves: every other key keeps the snapshot's value.
    assert {key: value for key, value in agreed.items() if key not in echoes} == \
        {key: value for key, value in snapshot.items() if key not in echoes}


def test_echoes_compare_values_as_the_field_diff_does():
    # A float and an integer of the same value are one value; a tuple and a list of the same items too.
    assert agreed_with_echoes({"cf:200": 1}, {"cf:200": 5}, {"cf:200": 5.0}) == {"cf:200": 5}
    assert agreed_with_echoes({"assignees": []}, {"assignees": ("user:5",)}, {"assignees": ["user:5"]}) == \
        {"assignees": ("user:5",)}
    assert agreed_with_echoes({"name": "a"}, {"name": "b"}, {"name": "c"}) == {"name": "a"}


def test_no_snapshot_stays_none_so_a_first_sync_carries_everything():
    assert agreed_with_echoes(None, {"name": "a"}, {"name": "a"}) is None


def test_a_status_paths_middle_step_is_an_echo_too():
    sent = with_sent(with_sent({}, {"status": 12}), {"status": 13})
    assert sent == {"status": 13, ALTERNATIVES + "status": [12]}
    assert agreed_with_echoes({"status": 11}, {"status": 12}, sent) == {"status": 12}
    assert agreed_with_echoes({"status": 11}, {"status": 13}, sent) == {"status": 13}
    assert agreed_with_echoes({"status": 11}, {"status": 14}, sent) == {"status": 11}


@given(steps=st.lists(st.integers(1, 6), min_size=1, max_size=5), now=st.integers(1, 6))
def test_any_value_sent_is_an_echo_and_landing_settles_the_key(steps, now):
    sent: dict = {}
    for step in steps:
        sent = with_sent(sent, {"status": step})
    assert sent["status"] == steps[-1]
    assert (echoes({"status": now}, sent) == {"status": now}) == (now in steps)
    left = settled(sent, {"status": now})
    assert left == ({} if now in steps else sent)


@given(agreed=st.one_of(st.none(), st.dictionaries(ECHO_KEYS, ECHO_VALUES)),
       now=st.dictionaries(ECHO_KEYS, ECHO_VALUES), expected=st.dictionaries(ECHO_KEYS, ECHO_VALUES))
def test_a_write_found_landed_is_an_echo_no_run_agreed_on(agreed, now, expected):
    landed = landed_unagreed(expected, now, agreed)
    assert landed.items() <= echoes(now, expected).items()
    for key in echoes(now, expected):
        # Found landed exactly while the task's snapshot does not hold that value yet.
        assert (key in landed) == bool(changed_fields({key: now[key]}, {key: (agreed or {}).get(key)}))
    # Once a run agreed on what it found (agreed_with_echoes), nothing is found again.
    assert landed_unagreed(expected, now, agreed_with_echoes(agreed or {}, now, expected)) == {}


# -- writes Planfix queued (202), still to land ------------------------------------------------

def test_a_queued_write_is_still_to_land_while_the_task_shows_what_came_before_it():
    queued = with_queued(with_sent({}, {"status": 12}), {"status": 13})
    assert queued == {"status": 13, ALTERNATIVES + "status": [12], QUEUED + "status": 13}
    assert still_to_land(queued, {"status": 12}, {"status": 11}) == {"status": 13}   # our middle step
    assert still_to_land(queued, {"status": 11}, {"status": 11}) == {"status": 13}   # the agreed value
    assert still_to_land(queued, {"status": 13}, {"status": 11}) == {}               # landed
    assert still_to_land(queued, {"status": 14}, {"status": 11}) == {}               # a person's
    # A value only sent (its answer lost, its run killed) may never land: it is not waited for.
    assert still_to_land(with_sent({}, {"status": 13}), {"status": 11}, {"status": 11}) == {}


def test_queued_marks_go_with_their_key():
    queued = with_queued({"name": "a"}, {"status": 13})
    assert entries_of(queued, {"status"}) == {"status": 13, QUEUED + "status": 13}
    assert without_entries(queued, {"status"}) == {"name": "a"}
    assert settled(queued, {"status": 13}) == {"name": "a"}


@given(sent=st.lists(st.integers(1, 6), max_size=3), queued=st.lists(st.integers(1, 6), min_size=1, max_size=3),
       now=st.integers(1, 6), agreed=st.integers(1, 6))
def test_what_is_still_to_land_is_the_last_queued_value_behind_one_of_ours(sent, queued, now, agreed):
    expected: dict = {}
    for step in sent:
        expected = with_sent(expected, {"status": step})
    for step in queued:
        expected = with_queued(expected, {"status": step})
    landing = still_to_land(expected, {"status": now}, {"status": agreed})
    ours = now == agreed or now in sent or now in queued
    assert landing == ({"status": queued[-1]} if ours and now != queued[-1] else {})
