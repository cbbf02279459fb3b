"""Planfix answering 202 (the task is locked by a scenario; the change is queued) end to end: the
workers read the task back later and carry on from what they see, so every change arrives once
and the sides agree, with no change recorded as synced before it was seen applied."""

from __future__ import annotations

import pytest

from crosslink.operations.check import check_link
from tests.e2e.conftest import eventually, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL = 2


def task(stack, side, number):
    return stack.world.get_task(side, number, "id,name,description,status")


def test_busy_202_writes_are_read_back_until_seen_applied(stack):
    world = stack.world
    number = world.create_task("partner", {"name": "Busy", "processId": 1, "project": {"id": 10}}, author=PAVEL)
    copy = eventually(lambda: stack.mirror_of(LINK, "partner", number), what="mirror")["id"]
    settle(stack)
    before = len(world.requests("client"))
    world.set_faults("client", busy_202=1.0, busy_delay_s=0.2)
    try:
        world.update_task("partner", number, {"name": "Busy, renamed", "status": {"id": 3}}, author=PAVEL)
        # Review is 13 on the client, reached through 12: the run stops at the queued move to 12,
        # and nothing but its own read-back run (no new event arrives) can make the move to 13.
        eventually(lambda: task(stack, "client", copy)["name"] == "Busy, renamed"
                   and task(stack, "client", copy)["status"]["id"] == 13, what="the queued changes applied")
        settle(stack)
    finally:
        world.set_faults("client")
    log = world.requests("client")[before:]
    answered_202 = [r for r in log if r["status"] == 202]
    assert answered_202, "every update was meant to be queued"
    last_202 = max(r["t"] for r in answered_202)
    read_backs = [r for r in log if r["method"] == "GET" and r["path"].endswith(f"/task/{copy}") and r["t"] > last_202]
    assert read_backs, "no read-back after the last 202"
    # The snapshots are right: a later edit of the client-owned description still travels.
    world.update_task("partner", number, {"description": "<p>after the busy spell</p>"}, author=PAVEL)
    eventually(lambda: task(stack, "client", copy)["description"] == "<p>after the busy spell</p>",
               what="a later change")
    settle(stack)
    result = check_link(stack.config.links[0], stack.dumps(LINK))
    assert result.ok, result.problems
