"""Backfill of a big project, half of it copied by hand to the other side before the link, stopped
half way and resumed, with real workers: nothing created twice, nothing lost.

Figures (2 cores): 500 partner tasks, every other one with a comment (250 comments), 250 hand
copies on the client side; emulator limits high (1000/s), one worker process, concurrency 8.
"""

from __future__ import annotations

import time

import pytest

from crosslink.lab.embedded_redis import EmbeddedRedis
from crosslink.lab.stack import LocalStack
from crosslink.operations.check import check_link
from tests.e2e.conftest import seeds
from workers.state import parse_marker

TASKS = 500
HAND_COPIES = 250
COMMENT_EVERY = 2  # a comment on every other partner task
STOP_AFTER = 200  # items the first run handles before it is "interrupted"
RATE_PER_S = 100000.0  # limits high: this test is about matching, not pacing
PAVEL = 2
WAIT_S = 120.0


def big_seeds() -> tuple[dict, dict]:
    emulator, links = seeds(RATE_PER_S)
    partner, client = emulator["accounts"]["partner"], emulator["accounts"]["client"]
    partner["tasks"] = [{"id": n, "name": f"Deliverable {n:03d}", "processId": 1, "status": 1,
                         "project": 10, "assignees": ["user:3"]} for n in range(1, TASKS + 1)]
    # Hand copies of the first half, some typed differently, with the client's own description
    # (the client owns descriptions; the partner owns names).
    client["tasks"] = [{"id": n, "name": (f"deliverable  {n:03d}" if n % 3 == 0 else f"Deliverable {n:03d}"),
                        "description": f"client notes {n}", "processId": 3, "status": 11, "project": 20,
                        "assignees": ["user:6"], "author": "user:5"} for n in range(1, HAND_COPIES + 1)]
    return emulator, links


@pytest.fixture(scope="module")
def big_stack(tmp_path_factory):
    server = EmbeddedRedis(persistent=True).start()
    emulator, links = big_seeds()
    stack = LocalStack(emulator, links, redis_url=server.url, workdir=tmp_path_factory.mktemp("backfill"),
                       workers=1, concurrency=8, time_scale=0.01)
    try:
        stack.start()
        # Comments written before the link existed: no scenario may report them.
        stack.world.set_scenarios("partner", [])
        for number in range(1, TASKS + 1, COMMENT_EVERY):
            stack.world.add_comment("partner", number, {"description": f"<p>note on {number}</p>"},
                                    author=PAVEL)
        stack.point_scenarios_at(stack.producer.url)
        yield stack
    finally:
        stack.stop()
        server.cleanup()


def test_interrupted_backfill_resumes_and_creates_nothing_twice(big_stack):
    stack = big_stack
    started = time.monotonic()
    dry = stack.backfill("demo", dry_run=True)
    assert (len(dry.pairs), len(dry.create), dry.ambiguous) == (HAND_COPIES, TASKS - HAND_COPIES, [])

    first = stack.backfill("demo", max_items=STOP_AFTER)
    assert not first.complete and first.handled == STOP_AFTER and first.total == TASKS
    second = stack.backfill("demo")  # the workers are busy with the first run's jobs meanwhile
    assert second.complete and second.resumed and second.handled == TASKS - STOP_AFTER
    queued_at = time.monotonic()
    assert stack.wait_quiet(WAIT_S), "the backfill's jobs did not finish"
    synced_at = time.monotonic()

    link = stack.config.links[0]
    dumps = stack.dumps("demo")
    result = check_link(link, dumps)
    assert (result.duplicates, result.lost) == (0, 0), result.problems[:5]
    assert result.ok, result.problems[:5]
    assert result.pairs == TASKS and result.comments == TASKS // COMMENT_EVERY
    assert len(dumps["client"]) == HAND_COPIES + (TASKS - HAND_COPIES)  # exactly 250 created
    assert len(dumps["partner"]) == TASKS  # the hand copies got no mirror of their own
    by_number = {int(task["id"]): task for task in dumps["client"]}
    assert all(parse_marker(by_number[n]["sourceDataVersion"]) == ("demo", "partner", n)
               for n in range(1, HAND_COPIES + 1))  # each hand copy is marked as its task's pair
    assert by_number[3]["name"] == "Deliverable 003"  # the partner owns names
    partner_3 = next(task for task in dumps["partner"] if task["id"] == 3)
    assert partner_3["description"] == "client notes 3"  # the client owns descriptions
    print(f"\nbackfill e2e: plan+queue {queued_at - started:.1f}s, workers done after "
          f"{synced_at - started:.1f}s, estimate {dry.estimate.requests} "
          f"~{dry.estimate.seconds:.1f}s at {RATE_PER_S:.0f}/s; requests made "
          + str({account: len(stack.world.requests(account)) for account in ("partner", "client")}))
