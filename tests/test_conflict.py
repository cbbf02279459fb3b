"""Conflicts: the owner side wins; without an owner the source (last event) wins."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.links import SYSTEM_FIELDS, CustomFieldRule, FieldRule, load_links
from workers.conflict import resolve

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
LINK = load_links(EXAMPLE).links[0]
SIDES = ("partner", "client")


def link_with_owner(owner):
    rules = {name: FieldRule(owner=owner) for name in SYSTEM_FIELDS}
    return replace(LINK, fields=replace(LINK.fields, rules=rules, custom=(CustomFieldRule(100, 200, owner=owner),)))


@pytest.mark.parametrize("owner, side, source_changed, target_changed", list(itertools.product(
    (None, "partner", "client"), SIDES, (False, True), (False, True))))
def test_every_combination(owner, side, source_changed, target_changed):
    link = link_with_owner(owner)
    field_keys = [*SYSTEM_FIELDS, "cf:100" if side == "partner" else "cf:200"]
    for key in field_keys:
        got = resolve(link, key, side, source_changed, target_changed)
        if not source_changed:
            assert got == "skip"
        elif not target_changed:
            assert got == "apply"
        else:
            assert got == ("apply" if owner in (None, side) else "skip")


def test_example_owners():
    assert resolve(LINK, "name", "client", True, True) == "skip"   # partner owns the name
    assert resolve(LINK, "name", "partner", True, True) == "apply"
    assert resolve(LINK, "description", "partner", True, True) == "skip"  # client owns it
    assert resolve(LINK, "priority", "client", True, True) == "apply"  # no owner: last event wins
    assert resolve(LINK, "cf:200", "client", True, True) == "skip"  # custom 100/200 owned by partner


@given(st.sampled_from(SIDES), st.sampled_from(SYSTEM_FIELDS))
def test_owner_always_wins(owner, field):
    link = link_with_owner(owner)
    other = "client" if owner == "partner" else "partner"
    # both changed: the owner's value is written, the other's is not - whichever side's event runs
    assert resolve(link, field, owner, True, True) == "apply"
    assert resolve(link, field, other, True, True) == "skip"
