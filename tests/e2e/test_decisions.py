"""Tasks older than the link are paired or mirrored only by a decision, end to end: a partner task
and two client tasks of one name, made an hour before the deployment and left ambiguous by
backfill, stay unmirrored through polls and edits (each with its webhook) until a person pairs two
of them and has the third mirrored; then there is exactly one copy of each. Judged by the tasks
people see in each account (names counted in the emulator), not by our markers. Real Redis, worker
and beat processes, the emulator over loopback, the CLI as an operator runs it (a subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from crosslink.operations.status import status_report
from tests.e2e.conftest import eventually, polling, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL, MARAT = 2, 6
NAME = "Weekly status call"
PERIOD_S = 2.0
POLLS = 3
# Made this long before the deployment began serving the link.
AGE_S = 3600.0


def named(stack, account: str) -> list[dict]:
    return [task for task in stack.world.dump_tasks(account) if task["name"] == NAME]


def polls_since(stack, account: str, started: float) -> int:
    """Task-feed requests the account answered since STARTED (the emulator's clock)."""
    return sum(1 for entry in stack.world.requests(account)
               if entry["t"] >= started and entry["method"] == "POST" and entry["path"] == "/task/list")


def crosslink(stack, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "crosslink.cli", *args], env={**os.environ, **stack.env},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def awaiting(stack) -> int:
    report = status_report(str(stack.workdir / "links.yaml"), stack.redis_url)
    return next(row for row in report["links"] if row["link"] == LINK)["awaiting_decision"]


def test_tasks_older_than_the_link_wait_for_a_decision(stack):
    settle(stack)
    real_clock = stack.world.clock
    stack.world.clock = lambda: real_clock() - AGE_S
    try:
        for account in ("partner", "client"):
            stack.world.set_scenarios(account, [])
        partner = stack.world.create_task("partner", {"name": NAME, "processId": 1, "project": {"id": 10},
                                                      "description": "partner agenda"}, author=PAVEL)
        hand_copies = [stack.world.create_task("client", {"name": NAME, "processId": 3, "project": {"id": 20},
                                                          "description": f"client notes {n}"}, author=MARAT)
                       for n in (1, 2)]
    finally:
        stack.world.clock = real_clock
        stack.point_scenarios_at(stack.producer.url)

    dry = stack.backfill(LINK, dry_run=True)
    assert [(group["partner"], group["client"]) for group in dry.ambiguous] == [([partner], hand_copies)]
    assert stack.backfill(LINK).complete
    settle(stack)
    assert awaiting(stack) == 3

    started = stack.world.now()
    with polling(stack, PERIOD_S):
        stack.world.update_task("partner", partner, {"description": "partner agenda v2"}, author=PAVEL)
        stack.world.update_task("client", hand_copies[0], {"description": "client notes 1, v2"}, author=MARAT)
        eventually(lambda: min(polls_since(stack, account, started) for account in ("partner", "client")) >= POLLS,
                   timeout=PERIOD_S * POLLS * 10, what=f"{POLLS} polls of each account")
        settle(stack)
    assert (len(named(stack, "partner")), len(named(stack, "client"))) == (1, 2), "a task older than the link was mirrored"
    assert awaiting(stack) == 3
    assert "undecided" in crosslink(stack, "status").stdout

    paired = json.loads(crosslink(stack, "pair", "--link", LINK, "--partner", str(partner),
                                  "--client", str(hand_copies[0])).stdout)
    assert (paired["partner"], paired["client"]) == (partner, hand_copies[0])
    crosslink(stack, "mirror", "--link", LINK, "client", str(hand_copies[1]))
    eventually(lambda: len(named(stack, "partner")) == 2, what="the released task's mirror")
    settle(stack)
    partners, clients = named(stack, "partner"), named(stack, "client")
    assert (len(partners), len(clients)) == (2, 2)
    # The mirror carries the released task's own notes; the pair's client copy keeps the client's
    # (the client owns descriptions).
    assert sorted(task["description"] for task in partners if task["id"] != partner) == ["client notes 2"]
    assert next(task for task in clients if task["id"] == hand_copies[0])["description"] == "client notes 1, v2"
    assert awaiting(stack) == 0
    time.sleep(PERIOD_S)  # nothing more comes of it
    assert (len(named(stack, "partner")), len(named(stack, "client"))) == (2, 2)
