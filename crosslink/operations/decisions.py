"""A person's decisions on tasks older than the link: pair these two, give that one a mirror.

A backfill leaves alone what it cannot decide (a name with several candidates), and a sync run
leaves a task older than the link for a person (workers.plan.older_than_link). `crosslink pair`
and `crosslink mirror` are that person's answer: a pairing is planned and written as backfill
pairs a match (crosslink/operations/pairing.py), a mirror is queued as backfill queues one.
"""

from __future__ import annotations

import getpass
import time
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis

from crosslink.operations.backfill_plan import pair_plan
from crosslink.operations.pairing import pair_unless_linked, pair_view, write_marker
from crosslink.operations.session import OperatorSession, operator_session
from crosslink.queue.enqueue import Enqueuer
from planfix.client import PlanfixClient
from schemas.links import Link
from workers.canonical import task_fields
from workers.state import LinkState, parse_marker

T = TypeVar("T")


class DecisionRefused(Exception):
    """A person's pairing or mirroring that cannot be done as asked (the reason says why)."""


def pair_by_decision(link: Link, numbers: Mapping[str, int], clients: Mapping[str, PlanfixClient],
                     store: redis.Redis, enqueuer: Enqueuer,
                     sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """A person pairs two given tasks (NUMBERS: side -> task number) as backfill pairs a match:
    snapshots seeded by the link's owner rules, the mirror marker on the hand copy, then a sync
    of both. Refused when either is paired already or is a mirror of this link."""
    first, second = list(link.sides)
    raw = {side: clients[side].get_task(numbers[side], fields=",".join(dict.fromkeys([*task_fields(link, side), "name"])))
           for side in (first, second)}
    for side in (first, second):
        marker = parse_marker(raw[side].get("sourceDataVersion"))
        if marker and marker[0] == link.name:
            raise DecisionRefused(f"{side} #{numbers[side]} is a mirror of {marker[1]} #{marker[2]} already")
    state = LinkState(store, link.name)
    pair = pair_plan(link, raw, lambda side, number: state.counterpart("task", side, number))
    if not pair_unless_linked(link, pair, store, None, sleep):
        paired = {side: state.counterpart("task", side, numbers[side]) for side in (first, second)}
        raise DecisionRefused("already paired: " + ", ".join(
            f"{side} #{numbers[side]} (with #{other})" for side, other in paired.items() if other is not None))
    write_marker(link, pair.sides, pair.numbers, pair.marker_on, clients)
    state.decided_pair(zip(pair.sides, pair.numbers))
    for side, number in zip(pair.sides, pair.numbers):
        enqueuer.sync(link.name, side, number)
    return pair_view(pair)


def mirror_by_decision(link: Link, side: str, number: int, store: redis.Redis, enqueuer: Enqueuer,
                       by: str, at: float) -> None:
    """A person decides that SIDE's task NUMBER, older than the link, gets a mirror: its sync
    is queued and creates one (refused when it is paired already)."""
    state = LinkState(store, link.name)
    counterpart = state.counterpart("task", side, number)
    if counterpart is not None:
        raise DecisionRefused(f"{side} #{number} is paired with #{counterpart} already")
    state.decide_mirror(side, number, by=by, at=at)
    enqueuer.sync(link.name, side, number)


def _in_session(link: Link, decide: Callable[[OperatorSession, Enqueuer], T]) -> T:
    """DECIDE(session, enqueuer) on an operator session of LINK, everything closed after."""
    with operator_session(link) as session:
        enqueuer = Enqueuer(session.settings.redis_url)
        try:
            return decide(session, enqueuer)
        finally:
            enqueuer.close()


def pair_tasks(link: Link, numbers: Mapping[str, int]) -> dict[str, Any]:
    """`crosslink pair`: pair_by_decision on LINK's tasks NUMBERS (side -> task number), through
    an operator session; the pair as made. DecisionRefused says why not."""
    return _in_session(link, lambda session, enqueuer: pair_by_decision(
        link, numbers, session.clients, session.store, enqueuer))


def mirror_task(link: Link, side: str, number: int, by: str | None = None) -> dict[str, Any]:
    """`crosslink mirror`: mirror_by_decision of SIDE's task NUMBER, decided BY (default: the
    login name) now; what was queued. DecisionRefused says why not."""

    def decide(session: OperatorSession, enqueuer: Enqueuer) -> dict[str, Any]:
        mirror_by_decision(link, side, number, session.store, enqueuer, by=by or getpass.getuser(), at=time.time())
        return {"link": link.name, "mirror": f"{side}:{number}", "queued": True}

    return _in_session(link, decide)
