"""Which link sides one poll covers, and which of them a task from the account's feed concerns.

One poll per account, not per link side. A partner serves all its clients from one Planfix
account, with one request per second and one daily quota for all of them (API-NOTES section 1).
So the link sides that live in one account and act as one robot (the same ``account`` and
``integration_user``; a token acts as its employee, so two tokens of one robot see the same
tasks) are polled together: one task-feed request lists every task of the account changed or
commented in the window (filter 79), with the fields that route it (project, template), and each
task is queued to every link side whose scope or mirrors' create settings it matches
(``task_routes``; other scope kinds cannot be told from the feed, so the worker decides, one task
read, never a write). A quiet poll is one request however many links share the account.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.links import LinksConfig, Side

# Planfix filter types (API-NOTES.md section 3).
FILTER_PROJECT = 5
FILTER_TEMPLATE = 51


@dataclass(frozen=True)
class Member:
    """A link side a poll covers."""

    link: str
    side: str
    conf: Side


@dataclass(frozen=True)
class PollAccount:
    """The link sides that live in one Planfix account and act as one robot: polled together.

    ``key`` names its cursor, seen record and turn; ``account`` is the limiter's account.
    """

    key: str
    account: str
    robot: str
    members: tuple[Member, ...]

    @property
    def first(self) -> Member:
        return self.members[0]


def poll_accounts(config: LinksConfig) -> list[PollAccount]:
    """Every link side of CONFIG grouped by (account, integration user), in config order.

    Assumes ``account`` names one Planfix account (as the limiter does) and a robot sees the
    same tasks through any of its tokens; the poll uses the first member's base URL and token.
    """
    groups: dict[tuple[str, str], list[Member]] = {}
    for link in config.links:
        for side, conf in link.sides.items():
            groups.setdefault((conf.account, conf.integration_user), []).append(Member(link.name, side, conf))
    return [PollAccount(f"{account}/{robot}", account, robot, tuple(members))
            for (account, robot), members in groups.items()]


def find_poll_account(config: LinksConfig, poll_key: str) -> PollAccount | None:
    return next((group for group in poll_accounts(config) if group.key == poll_key), None)


def poll_account_of(config: LinksConfig, link: str, side: str) -> PollAccount | None:
    """The poll that covers LINK's SIDE."""
    return next((group for group in poll_accounts(config)
                 if any(m.link == link and m.side == side for m in group.members)), None)


# ----------------------------------------------------------------------------------------------
# Routing a task of the feed (pure)

def _ref_id(value: Any) -> str | None:
    if isinstance(value, Mapping):
        value = value.get("id")
    return None if value in (None, "", 0) else str(value)


def poll_filter_sets(side: Side) -> list[list[dict[str, Any]]]:
    """Task-list filter sets that together cover SIDE's scope and the mirrors we create there.

    Project/template scopes can be filtered by Planfix; mirrors live in `create`'s project or
    template, which may lie outside the scope, and a person's change to a mirror must be polled
    too. Other scope kinds cannot be filtered on the server: then every changed task is listed
    and the worker decides (an out-of-scope task costs one read, never a write). The poll itself
    lists the whole account and routes with ``task_routes``; `crosslink reconcile` filters with
    these sets.
    """
    by_kind = {"project": FILTER_PROJECT, "template": FILTER_TEMPLATE}
    if side.scope.kind not in by_kind:
        return [[]]
    sets = [[{"type": by_kind[side.scope.kind], "operator": "equal", "value": side.scope.value}]]
    for kind, value in (("project", side.create.project), ("template", side.create.template)):
        if value is not None and (kind, value) != (side.scope.kind, side.scope.value):
            sets.append([{"type": by_kind[kind], "operator": "equal", "value": value}])
            break  # a mirror has both; one extra set covers it
    return sets


def task_routes(side: Side, task: Mapping[str, Any]) -> bool:
    """Whether a task from the account-wide feed may concern SIDE: it passes one of SIDE's
    filter sets (project or template, read from the feed's fields), or SIDE's scope kind cannot
    be told from the feed (the worker decides)."""
    values = {FILTER_PROJECT: _ref_id(task.get("project")), FILTER_TEMPLATE: _ref_id(task.get("template"))}
    for filters in poll_filter_sets(side):
        if all(values.get(int(flt["type"])) == str(flt["value"]) for flt in filters):
            return True
    return False
