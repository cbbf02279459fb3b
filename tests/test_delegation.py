"""Delegation: paired, represented, fallback, noted; nobody is ever dropped silently."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.links import People, PersonPair, Role, load_links
from workers.delegation import (
    FALLBACK,
    PAIRED,
    REPRESENTED,
    STAND_IN,
    UNASSIGNED,
    delegate,
    real_assignee_names,
    resolve_on,
)

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
LINK = load_links(EXAMPLE).links[0]


def with_people(**changes):
    return replace(LINK, people=replace(LINK.people, **changes))


def test_paired_people_map_across():
    result = delegate(LINK, "partner", ["user:4"], {})
    assert result.assignees == ("user:5",) and result.notes == ()
    assert result.outcome == (("user:4", PAIRED, "user:5"),)


def test_robots_pair_with_each_other():
    assert delegate(LINK, "partner", ["user:1"], {}).assignees == ("user:1",)
    assert delegate(LINK, "client", ["user:1"], {}).outcome == (("user:1", PAIRED, "user:1"),)


def test_unpaired_partner_person_is_represented_in_the_client_account():
    result = delegate(LINK, "partner", ["user:3"], {"user:3": "Olga"})
    assert result.assignees == ("user:5",)  # representatives.partner: Irina in the client account
    assert result.outcome == (("user:3", REPRESENTED, "user:5"),)
    assert len(result.notes) == 1 and "Olga (user:3)" in result.notes[0] and "ACME Consulting" in result.notes[0]
    assert real_assignee_names(result, {"user:3": "Olga"}) == "Olga"


def test_unpaired_client_person_is_represented_through_a_role():
    result = delegate(LINK, "client", ["user:6"], {"user:6": "Marat"})
    # representatives.client = role:partner_lead = partner user:2 (Pavel)
    assert result.assignees == ("user:2",) and result.outcome == (("user:6", REPRESENTED, "user:2"),)
    assert "Marat (user:6)" in result.notes[0] and "Client Co" in result.notes[0]


def test_fallback_then_unassigned():
    no_reps = with_people(representatives={"partner": None, "client": None})
    result = delegate(no_reps, "partner", ["user:3"], {})
    assert result.assignees == ("user:5",) and result.outcome == (("user:3", FALLBACK, "user:5"),)
    assert "user:3" in result.notes[0] and "instead" in result.notes[0]
    nobody = with_people(representatives={"partner": None, "client": None}, fallback={"partner": None, "client": None})
    result = delegate(nobody, "partner", ["user:3", "user:4"], {"user:3": "Olga"})
    assert result.assignees == ("user:5",)
    assert ("user:3", UNASSIGNED, None) in result.outcome and "Olga (user:3)" in result.notes[0]


def test_the_stand_in_keeps_the_people_it_stands_for():
    # partner user:2 (the partner_lead role) stands for unpaired client people: they are kept
    result = delegate(LINK, "partner", ["user:2"], {}, ["user:6", "user:5"])
    assert result.outcome == (("user:2", STAND_IN, None),)
    assert result.assignees == ("user:6",) and result.kept == ("user:6",) and result.notes == ()
    # client user:5 stands for unpaired partner people and is also paired with partner user:4
    result = delegate(LINK, "client", ["user:5"], {}, ["user:3"])
    assert result.outcome == (("user:5", STAND_IN, "user:4"),) and result.assignees == ("user:3", "user:4")
    assert delegate(LINK, "client", ["user:6"], {}, ["user:3"]).kept == ()


def test_a_stand_in_with_nobody_to_keep_is_delegated_like_anyone():
    # Pavel's own task, no client counterpart yet: he is represented by Irina, with a note
    result = delegate(LINK, "partner", ["user:2"], {"user:2": "Pavel"})
    assert result.outcome == (("user:2", REPRESENTED, "user:5"),) and "Pavel (user:2)" in result.notes[0]
    result = delegate(LINK, "partner", ["user:2"], {}, ["user:5"])  # only paired people on the target
    assert result.outcome == (("user:2", REPRESENTED, "user:5"),)
    assert delegate(LINK, "client", ["user:5"], {}, []).outcome == (("user:5", PAIRED, "user:4"),)


def test_duplicates_collapse_and_order_is_stable():
    result = delegate(LINK, "partner", ["user:3", "user:4", "user:1", "user:3"], {})
    assert result.assignees == ("user:1", "user:5") and len(result.outcome) == 3 and len(result.notes) == 1
    assert [person for person, _, _ in result.outcome] == ["user:1", "user:3", "user:4"]


def test_role_resolution():
    assert resolve_on(LINK, "role:partner_lead", "partner") == "user:2"
    assert resolve_on(LINK, "role:partner_lead", "client") is None  # Pavel has no client counterpart
    paired = with_people(pairs=(*LINK.people.pairs, PersonPair("user:2", "user:6")))
    assert resolve_on(paired, "role:partner_lead", "client") == "user:6"
    assert resolve_on(LINK, "role:missing", "client") is None
    assert resolve_on(LINK, "user:5", "client") == "user:5" and resolve_on(LINK, None, "client") is None


people_ids = st.sampled_from([f"user:{n}" for n in range(1, 12)] + ["contact:1", "contact:2"])
client_ids = st.sampled_from([f"user:{n}" for n in range(11, 22)] + ["contact:5"])


@st.composite
def people_configs(draw):
    partners = draw(st.lists(people_ids, unique=True, max_size=5))
    clients = draw(st.lists(client_ids, unique=True, min_size=len(partners), max_size=len(partners)))
    pairs = tuple(PersonPair(p, c) for p, c in zip(partners, clients))
    roles = {"lead": Role(draw(st.sampled_from(["partner", "client"])), draw(people_ids))}
    ref = st.one_of(st.none(), people_ids, st.just("role:lead"))
    return People(pairs, roles, {"partner": draw(ref), "client": draw(ref)},
                  {"partner": draw(ref), "client": draw(ref)})


@settings(max_examples=400, deadline=None)
@given(people_configs(), st.sampled_from(["partner", "client"]), st.lists(people_ids | client_ids, max_size=6),
       st.one_of(st.none(), st.lists(people_ids | client_ids, max_size=4)))
def test_delegation_never_drops_anyone(people, side, assignees, target_current):
    link = replace(LINK, people=people)
    result = delegate(link, side, assignees, {}, target_current)
    assert sorted(person for person, _, _ in result.outcome) == sorted(set(assignees))
    notes = " ".join(result.notes)
    for person, kind, target in result.outcome:
        if kind in (PAIRED, REPRESENTED, FALLBACK):
            assert target in result.assignees
        if kind in (REPRESENTED, FALLBACK, UNASSIGNED):
            assert f"({person})" in notes
        if kind == STAND_IN:  # it stands for target people who are kept
            assert result.kept and set(result.kept) <= set(result.assignees)
            assert set(result.kept) <= set(target_current or ())
    assert list(result.assignees) == sorted(set(result.assignees))
    assert None not in result.assignees
