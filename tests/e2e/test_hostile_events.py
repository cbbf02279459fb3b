"""Events that Planfix contradicts, end to end: a webhook is only a hint, so the worker checks what
it names against Planfix before it writes anything.

Anyone holding a side's webhook secret (or a scenario misconfigured to send the wrong variable)
can name a linked task with the id of a comment on another task, perhaps one outside every link:
mirroring it would carry that comment's confidential text into the other account. And a comment
id that does not exist (a typo, a comment deleted before its event is processed) is nothing to
sync, not a failure: a dead letter would hold every later real edit of the task until an operator
dropped it. Both are sent here as a scenario sends them, to the producer's hook over HTTP, with a
real worker behind it.
"""

from __future__ import annotations

import json

import httpx
import pytest
import redis

from crosslink.queue.dead_letters import DeadLetters
from crosslink.queue.names import REJECTED_KEY
from producers.scenarios import request_auth
from tests.e2e.conftest import eventually, settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL = 2
LINKED_TASK = 1  # a seeded partner task, mirrored by the backfill
# No comment has this id in either account.
NO_SUCH_COMMENT = 987_654_321
CONFIDENTIAL = "Internal only: our margin on ACME is 40 %"


def send(stack, side: str, body: dict) -> None:
    """Post BODY to SIDE's hook, authenticated as that side's scenarios are."""
    conf = next(link for link in stack.config.links if link.name == LINK).sides[side]
    secret = stack.env[conf.webhook_secret_env]
    headers = {"Content-Type": "application/json", **request_auth(conf.webhook_auth, secret)}
    answer = httpx.post(f"{stack.producer.url}/hooks/{LINK}/{side}", content=json.dumps(body).encode(),
                        headers=headers, timeout=10)
    assert answer.status_code == 200, answer.text


def writes(stack, account: str) -> list[dict]:
    """The requests to ACCOUNT that change something (every list is a POST that reads)."""
    return [entry for entry in stack.world.requests(account)
            if entry["method"] != "GET" and not entry["path"].endswith("/list")]


def store(stack) -> redis.Redis:
    return redis.Redis.from_url(stack.redis_url, decode_responses=True)


def worker_lines(stack) -> list[str]:
    return [line for worker in stack.worker_processes for line in worker.lines]


def test_a_comment_of_a_task_outside_every_link_is_rejected_and_nothing_is_written(stack):
    world = stack.world
    copy_ = stack.mirror_of(LINK, "partner", LINKED_TASK)
    assert copy_ is not None, "the backfill mirrored the linked task"
    # A partner task in no linked project, with a confidential comment (its own events find it
    # out of scope: nothing of it crosses).
    internal = world.create_task("partner", {"name": "Pricing (internal)", "processId": 1}, author=PAVEL)
    secret_comment = world.add_comment("partner", internal, {"description": f"<p>{CONFIDENTIAL}</p>"},
                                       author=PAVEL)
    settle(stack)
    before_client, before_writes = world.dump_tasks("client"), len(writes(stack, "client"))

    send(stack, "partner", {"event": "comment_added", "task": LINKED_TASK, "comment": secret_comment})
    settle(stack)

    assert len(writes(stack, "client")) == before_writes, "nothing may be written to the client"
    assert world.dump_tasks("client") == before_client
    assert CONFIDENTIAL not in json.dumps(world.dump_tasks("client"), ensure_ascii=False)
    client = store(stack)
    try:
        assert DeadLetters(client, LINK).letters() == [], "a rejected event is no failure"
        rejected = [json.loads(item) for item in client.lrange(REJECTED_KEY, 0, -1)]
    finally:
        client.close()
    mine = [record for record in rejected if record.get("comment") == secret_comment]
    assert len(mine) == 1, rejected
    assert mine[0]["task"] == LINKED_TASK and mine[0]["side"] == "partner"
    assert f"on task {internal}" in mine[0]["reason"]
    shown = json.dumps(mine[0], ensure_ascii=False)
    assert CONFIDENTIAL not in shown and stack.env[stack.config.links[0].sides["partner"].webhook_secret_env] not in shown
    assert any("event rejected" in line and str(secret_comment) in line for line in worker_lines(stack))
    # The linked task's own comments still sync.
    own = world.add_comment("partner", LINKED_TASK, {"description": "<p>Agenda sent</p>"}, author=PAVEL)
    eventually(lambda: any("Agenda sent" in (c.get("description") or "") for c in world.list_task_comments(
        "client", copy_["id"], {"typeList": "All", "fields": "id,description"})), what="the real comment mirrored")
    assert own != secret_comment


def test_a_comment_that_does_not_exist_is_a_no_op_and_the_next_real_edit_syncs(stack):
    world = stack.world
    copy_ = stack.mirror_of(LINK, "partner", LINKED_TASK)
    assert copy_ is not None
    settle(stack)
    before_writes = len(writes(stack, "client"))

    send(stack, "partner", {"event": "comment_added", "task": LINKED_TASK, "comment": NO_SUCH_COMMENT})
    settle(stack)

    assert len(writes(stack, "client")) == before_writes
    client = store(stack)
    try:
        letters = DeadLetters(client, LINK)
        assert letters.letters() == [], "a comment that is gone is nothing to sync, not a failure"
        assert letters.blocked_by("partner", LINKED_TASK) is None
    finally:
        client.close()
    assert any(f"comment {NO_SUCH_COMMENT}" in line and "missing" in line for line in worker_lines(stack))
    # The task's next real edit is not held behind anything.
    world.update_task("partner", LINKED_TASK, {"name": "Kick-off meeting, moved to Friday"}, author=PAVEL)
    eventually(lambda: world.get_task("client", copy_["id"], "name")["name"] == "Kick-off meeting, moved to Friday",
               what="the next real edit synced")
