"""Status mapping: every pair of the example maps, shortest allowed paths, parking, rules."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.links import StatusRule, load_links, reachable_statuses
from workers.status_map import decide_status, equivalent, path_within, rule_moves, shortest_path

EXAMPLE = Path(__file__).resolve().parents[1] / "crosslink" / "examples" / "links.yaml"
LINK = load_links(EXAMPLE).links[0]
PARTNER = (1, 2, 3, 4)
CLIENT = (11, 12, 13, 14, 15)
CLIENT_GRAPH = {11: (12, 15), 12: (13, 14), 13: (12,), 14: (12,)}


def with_statuses(**changes):
    return replace(LINK, statuses=replace(LINK.statuses, **changes))


def bfs_distances(graph, start):
    """Reference distances by repeated relaxation (no queue), to check the BFS against."""
    distance = {start: 0}
    changed = True
    while changed:
        changed = False
        for node, moves in graph.items():
            if node in distance:
                for nxt in moves:
                    if distance.get(nxt, 10**9) > distance[node] + 1:
                        distance[nxt] = distance[node] + 1
                        changed = True
    return distance


# --- exhaustive over the example maps ---------------------------------------------------------

@pytest.mark.parametrize("source, target", list(itertools.product(PARTNER, CLIENT)))
def test_every_partner_status_against_every_client_status(source, target):
    decision = decide_status(LINK, "partner", source, target)
    mapped = LINK.statuses.partner_to_client[source]
    if mapped == target or LINK.statuses.client_to_partner[target] == source:
        assert decision.kind == "noop" and decision.path == ()
        return
    expected = shortest_path(CLIENT_GRAPH, target, mapped)
    if expected is None:
        assert decision.kind == "park" and "no allowed path" in decision.reason
    else:
        assert decision.kind == "move" and decision.path == expected and decision.path[-1] == mapped
        steps = (target, *decision.path)
        assert all(b in CLIENT_GRAPH.get(a, ()) for a, b in zip(steps, steps[1:]))


@pytest.mark.parametrize("source, target", list(itertools.product(CLIENT, PARTNER)))
def test_every_client_status_against_every_partner_status(source, target):
    decision = decide_status(LINK, "client", source, target)
    mapped = LINK.statuses.client_to_partner[source]
    if mapped == target or LINK.statuses.partner_to_client[target] == source:
        assert decision.kind == "noop"
    else:  # the partner side declares no graph: every move is allowed, directly
        assert decision.kind == "move" and decision.path == (mapped,)


def test_concrete_paths_in_the_client_graph():
    assert decide_status(LINK, "partner", 4, 11).path == (12, 14)
    assert decide_status(LINK, "partner", 3, 11).path == (12, 13)
    assert decide_status(LINK, "partner", 2, 14).path == (12,)
    assert decide_status(LINK, "partner", 4, 13).path == (12, 14)
    assert decide_status(LINK, "partner", 2, 15).kind == "park"  # Rejected is final: no moves out of it
    assert decide_status(LINK, "partner", 4, 15).kind == "noop"  # Rejected already maps back to Closed


def test_many_to_one_maps_do_not_move_an_equivalent_target():
    link = with_statuses(partner_to_client={1: 11, 2: 12, 3: 12, 4: 14}, client_to_partner={11: 1, 12: 2, 14: 4},
                         transitions={})
    assert decide_status(link, "partner", 3, 12).kind == "noop"  # 2 -> 3 is still client 12
    assert decide_status(link, "client", 12, 3).kind == "noop"  # client 12 does not drag partner 3 back to 2
    assert decide_status(link, "client", 12, 1).path == (2,)
    assert equivalent(link, "partner", 3, 12) and not equivalent(link, "partner", 3, None)


def test_park_cases():
    assert "not mapped" in decide_status(LINK, "partner", 99, 11).reason
    assert decide_status(LINK, "partner", 99, 11).kind == "park"
    parking = with_statuses(on_forbidden="park")
    decision = decide_status(parking, "partner", 4, 11)
    assert decision.kind == "park" and "parks forbidden moves" in decision.reason
    assert decide_status(parking, "partner", 2, 11).path == (12,)  # an allowed direct move still moves
    assert decide_status(LINK, "partner", None, 11).kind == "noop"


def test_unknown_target_status_starts_from_the_initial_status():
    # A new client task starts in 11 (create.initial_status): partner 4 needs 11 -> 12 -> 14.
    assert decide_status(LINK, "partner", 4, None).path == (12, 14)
    assert decide_status(LINK, "partner", 1, None).kind == "noop"
    no_initial = replace(LINK, sides={**LINK.sides, "client": replace(
        LINK.sides["client"], create=replace(LINK.sides["client"].create, initial_status=None))})
    assert decide_status(no_initial, "partner", 4, None).path == (14,)


def test_rule_moves():
    assert rule_moves(LINK, "client", 14) == [("partner", 4)]
    assert rule_moves(LINK, "client", 13) == [] and rule_moves(LINK, "partner", 14) == []
    link = with_statuses(rules=(StatusRule("partner", 3, "client", 13), StatusRule("partner", 3, "partner", 4)))
    assert rule_moves(link, "partner", 3) == [("client", 13), ("partner", 4)]


def test_path_within_same_status_is_noop():
    assert path_within(LINK, "client", 12, 12).kind == "noop"


# --- properties -------------------------------------------------------------------------------

graphs = st.dictionaries(st.integers(1, 8), st.lists(st.integers(1, 8), max_size=4).map(tuple), max_size=8)


@settings(max_examples=300, deadline=None)
@given(graphs, st.integers(1, 8), st.integers(1, 8))
def test_bfs_paths_are_valid_and_minimal(graph, start, goal):
    path = shortest_path(graph, start, goal)
    distances = bfs_distances(graph, start)
    if goal not in distances:
        assert path is None
        return
    assert path is not None and len(path) == distances[goal]
    steps = (start, *path)
    assert all(b in graph.get(a, ()) for a, b in zip(steps, steps[1:]))
    assert not path or path[-1] == goal


@st.composite
def round_tripping_maps(draw):
    """Status maps the linter accepts: every target is mapped back."""
    partner = draw(st.lists(st.integers(1, 9), min_size=1, max_size=6, unique=True))
    client = draw(st.lists(st.integers(11, 19), min_size=1, max_size=6, unique=True))
    forward = {status: draw(st.sampled_from(client)) for status in partner}
    backward = {status: draw(st.sampled_from(partner)) for status in client}
    return forward, backward


@settings(max_examples=300, deadline=None)
@given(round_tripping_maps(), st.data())
def test_a_mapped_status_always_round_trips(maps, data):
    forward, backward = maps
    link = with_statuses(partner_to_client=forward, client_to_partner=backward, transitions={}, rules=())
    for side, table, reverse in (("partner", forward, backward), ("client", backward, forward)):
        source = data.draw(st.sampled_from(sorted(table)))
        current = data.draw(st.sampled_from(sorted(reverse)))
        decision = decide_status(link, side, source, current)
        assert decision.kind in ("move", "noop")
        final = decision.path[-1] if decision.path else current
        assert final in reverse  # the reverse map accepts where we land
        assert equivalent(link, side, source, final)


@settings(max_examples=200, deadline=None)
@given(graphs, st.sampled_from(["path", "park"]), st.integers(1, 8), st.integers(1, 8))
def test_moves_under_a_graph_are_always_allowed(graph, on_forbidden, current, goal):
    link = with_statuses(transitions={"client": graph}, on_forbidden=on_forbidden)
    decision = path_within(link, "client", current, goal)
    if decision.kind == "move":
        steps = (current, *decision.path)
        assert all(b in graph.get(a, ()) for a, b in zip(steps, steps[1:])) and steps[-1] == goal
        if on_forbidden == "park":
            assert len(decision.path) == 1
    elif decision.kind == "park":
        assert decision.reason and (on_forbidden == "park" or shortest_path(graph, current, goal) is None)
    else:
        assert current == goal


def test_reachable_statuses():
    assert reachable_statuses(CLIENT_GRAPH, None) == {11, 12, 13, 14, 15}
    assert reachable_statuses(CLIENT_GRAPH, 12) == {12, 13, 14}
    assert reachable_statuses({1: (2,), 2: (1,)}, None) == {1, 2}
