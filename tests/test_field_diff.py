"""Changed fields against a snapshot, and which way each field flows."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.links import DIRECTIONS, SYSTEM_FIELDS, CustomFieldRule, FieldRule, load_links
from workers.field_diff import changed_fields, flows

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
