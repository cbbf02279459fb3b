"""Bringing tasks that already exist into a link: queue a sync job for every task in its scope.

Webhooks only report changes, so tasks that were in a project before the link existed would
never be mirrored. This lists each side's scope over REST (paced by the account limiter) and
queues one coalesced job per task; the workers then mirror what has no counterpart yet and
leave alone what is already in sync. Where Planfix can filter the scope itself (project,
template) only those tasks are listed; for the other kinds every task is queued and the worker
checks the scope, which costs more calls but never misses one.
"""

from __future__ import annotations

from typing import Any

from planfix.client import PlanfixClient
from producers.enqueue import Enqueuer
from schemas.links import Link, Side

# Planfix task filter types (API-NOTES.md section 3).
FILTER_PROJECT = 5
FILTER_TEMPLATE = 51


def scope_filters(side: Side) -> list[dict[str, Any]]:
    """The task-list filters that select SIDE's scope on the server, where one exists."""
    kind_to_type = {"project": FILTER_PROJECT, "template": FILTER_TEMPLATE}
    filter_type = kind_to_type.get(side.scope.kind)
    if filter_type is None:
        return []
    return [{"type": filter_type, "operator": "equal", "value": side.scope.value}]


def enqueue_scope(link: Link, side: str, client: PlanfixClient, enqueuer: Enqueuer) -> int:
    """Queue a sync of every task in SIDE's scope; returns how many jobs were queued."""
    queued = 0
    for task in client.list_tasks(filters=scope_filters(link.sides[side]), fields="id"):
        queued += enqueuer.sync(link.name, side, int(task["id"]))
    return queued
