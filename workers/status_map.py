"""Which status a task's counterpart should get, and by which moves.

Statuses are per account and mapped by id (never by name). Planfix has no API that lists the moves
a process allows, and a forbidden move fails (the emulator answers 200 with a failures entry), so
the link may describe each side's graph in ``statuses.transitions``; then a forbidden direct move is
replaced by the shortest allowed path (breadth-first search), or parked when the link says
``on_forbidden: park`` or no path exists. Parking never loses the event: the caller records the
reason and the statuses stay as they are until someone moves them.

Assumptions:
- Many-to-one maps are fine: a target already in a status equivalent to the source's (the source
  maps onto it, or it maps back onto the source) is left alone, so partner 2 -> 3 (both client 12)
  does not move the client, and the client's 12 does not drag a partner in 3 back to 2.
- A side without a transitions graph allows every move; in a graph, a status that is not a key
  allows no move out of it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.links import Link

# Rules may trigger rules; more rounds than this means the rules cycle, and we stop.
MAX_RULE_ROUNDS = 4


@dataclass(frozen=True)
class StatusDecision:
    kind: str  # "move" | "noop" | "park"
    path: tuple[int, ...]
    reason: str


def shortest_path(graph: Mapping[int, Iterable[int]], start: int, goal: int) -> tuple[int, ...] | None:
    """The statuses to set one after another to go from START to GOAL (excluding START), or None."""
    if start == goal:
        return ()
    previous: dict[int, int] = {start: start}
    queue = deque([start])
    while queue:
        current = queue.popleft()
        for nxt in graph.get(current, ()):
            if nxt in previous:
                continue
            previous[nxt] = current
            if nxt == goal:
                path = [goal]
                while previous[path[-1]] != start:
                    path.append(previous[path[-1]])
                return tuple(reversed(path))
            queue.append(nxt)
    return None


def path_within(link: Link, side: str, current: int | None, goal: int) -> StatusDecision:
    """How to move SIDE's task from CURRENT to GOAL under SIDE's transitions graph."""
    if current == goal:
        return StatusDecision("noop", (), f"{side} is already in status {goal}")
    graph = link.statuses.transitions.get(side)
    if graph is None or current is None or goal in graph.get(current, ()):
        return StatusDecision("move", (goal,), f"{side} moves to {goal}")
    if link.statuses.on_forbidden == "park":
        return StatusDecision("park", (), f"{side} may not move {current} -> {goal} directly "
                                          "and the link parks forbidden moves")
    path = shortest_path(graph, current, goal)
    if path is None:
        return StatusDecision("park", (), f"{side} has no allowed path from status {current} to {goal}")
    return StatusDecision("move", path, f"{side} moves {current} -> {goal} via {list(path)}")


def equivalent(link: Link, source_side: str, source_status: int, target_status: int | None) -> bool:
    """Whether the target's status already stands for the source's (either map says so)."""
    if target_status is None:
        return False
    forward = link.statuses.forward(source_side)
    backward = link.statuses.forward(link.other(source_side))
    return forward.get(source_status) == target_status or backward.get(target_status) == source_status


def decide_status(link: Link, source_side: str, source_status: int | None,
                  target_status: int | None) -> StatusDecision:
    """What to do with the counterpart's status when SOURCE_SIDE's task is in SOURCE_STATUS.

    TARGET_STATUS is the counterpart's current status (None: unknown, e.g. a task about to be
    created, whose start is the target side's ``create.initial_status`` when that is set).
    """
    target_side = link.other(source_side)
    if source_status is None:
        return StatusDecision("noop", (), f"{source_side} task has no status")
    mapped = link.statuses.forward(source_side).get(source_status)
    if mapped is None:
        return StatusDecision("park", (), f"{source_side} status {source_status} is not mapped to {target_side}")
    if equivalent(link, source_side, source_status, target_status):
        return StatusDecision("noop", (), f"{target_side} status {target_status} already matches")
    if target_status is None:
        target_status = link.sides[target_side].create.initial_status
    return path_within(link, target_side, target_status, mapped)


def rule_moves(link: Link, side: str, new_status: int) -> list[tuple[str, int]]:
    """The (side, status) moves the link's rules ask for when SIDE's task reaches NEW_STATUS."""
    return [(rule.then_side, rule.then_status) for rule in link.statuses.rules
            if rule.when_side == side and rule.when_status == new_status]
