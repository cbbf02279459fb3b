"""What the real world throws at the producer, end to end: each bad input leaves the sync state
in Redis and both Planfix accounts exactly as they were, with a real worker running behind the
producer (so an input that wrongly queued a job would show as a write).

Unchanged means: every key of the sync state (registry, snapshots, write markers, dead letters,
parked events, cursors) with its value, and every task, comment, checklist item and file of both
accounts. Left out, by design: the rejected list (the visible record of authenticated unusable
bodies, `crosslink rejected`), the last-sync time, and the broker's own bookkeeping.
"""

from __future__ import annotations

import base64
import json

import httpx
import pytest
import redis

from producers.receiver import MAX_BODY_BYTES, REJECTED_KEY, rejected_events
from producers.scenarios import BASIC_USER, SECRET_HEADER
from workers.heartbeat import HEARTBEAT_KEY
from tests.e2e.conftest import settle

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL = 2
# Keys that record that something happened rather than what was synced (see the docstring; the
# limiter counts the requests the jobs for unknown and replayed tasks made, all of them reads;
# an event's burst marker lives half a second; the workers' heartbeats tick every two).
NOT_SYNC_STATE = (REJECTED_KEY, "crosslink:last-sync", "crosslink:reconcile:turn:", "crosslink:limiter:",
                  "crosslink:recent:", HEARTBEAT_KEY)
# A Planfix comment may hold up to 64 KB; a body quoting one must still be taken.
BIG_COMMENT = "<p>" + "Согласовано 👍 " * 2300 + "</p>"


def sync_state(url: str) -> dict[str, object]:
    store = redis.Redis.from_url(url, decode_responses=True)
    try:
        state: dict[str, object] = {}
        for key in sorted(store.scan_iter("crosslink:*", count=1000)):
            if key.startswith(NOT_SYNC_STATE) or key.startswith("crosslink:pending:"):
                continue
            kind = store.type(key)
            state[key] = {"string": store.get, "hash": store.hgetall, "list": lambda k: store.lrange(k, 0, -1),
                          "set": store.smembers, "zset": lambda k: store.zrange(k, 0, -1, withscores=True)
                          }[kind](key)
        return state
    finally:
        store.close()


def accounts(stack) -> dict[str, list]:
    return {account: stack.world.dump_tasks(account) for account in ("partner", "client")}


def headers(stack, side: str, secret: str | None = None, content_type: str = "application/json") -> dict:
    conf = next(link for link in stack.config.links if link.name == LINK).sides[side]
    secret = stack.env[conf.webhook_secret_env] if secret is None else secret
    out = {"Content-Type": content_type}
    if conf.webhook_auth == "basic":
        out["Authorization"] = "Basic " + base64.b64encode(f"{BASIC_USER}:{secret}".encode()).decode()
    else:
        out[SECRET_HEADER] = secret
    return out


def bad_inputs(stack) -> list[tuple[str, str, bytes, dict, int]]:
    """(what, side, body, headers, expected HTTP status)."""
    partner_secret = stack.env[next(l for l in stack.config.links if l.name == LINK).sides["partner"].webhook_secret_env]
    task = b'{"event": "task_changed", "task": 1}'
    unknown = b'{"event": "task_changed", "task": 987654}'
    return [
        ("wrong secret", "partner", task, headers(stack, "partner", "not-the-secret"), 401),
        ("no secret", "partner", task, {"Content-Type": "application/json"}, 401),
        ("the other side's secret", "client", task, headers(stack, "client", partner_secret), 401),
        ("body over the cap", "partner", b'{"task": 1, "pad": "' + b"x" * MAX_BODY_BYTES + b'"}',
         headers(stack, "partner"), 200),
        ("broken JSON", "partner", b'{"event": "task_changed", "task": ', headers(stack, "partner"), 200),
        ("form body without a task", "client", b"event=task_changed&name=%3Cb%3Ehi%3C%2Fb%3E",
         headers(stack, "client", content_type="application/x-www-form-urlencoded"), 200),
        ("a list sent as a string", "partner", b'{"event": "task_changed", "task": "[1, 2]"}',
         headers(stack, "partner"), 200),
        ("HTML and emoji in the text, an unknown task", "partner",
         json.dumps({"event": "comment_added", "task": 987654, "text": "<script>alert(1)</script> 🎉"},
                    ensure_ascii=False).encode(), headers(stack, "partner"), 200),
        ("a 64 KB comment for an unknown task", "client",
         json.dumps({"event": "comment_added", "task": 987654, "text": BIG_COMMENT}, ensure_ascii=False).encode(),
         headers(stack, "client"), 200),
        ("an unknown task number", "partner", unknown, headers(stack, "partner"), 200),
    ]


def test_bad_input_changes_neither_redis_nor_either_account(stack):
    # A real change first, so that there is a delivery to replay.
    stack.world.update_task("partner", 1, {"name": "Kick-off meeting, agenda set"}, author=PAVEL)
    settle(stack)
    delivered = [entry for entry in stack.world.deliveries("partner") if entry["delivered"]]
    assert delivered, "the scenario delivered the change"
    before_state, before_accounts = sync_state(stack.redis_url), accounts(stack)
    assert any(":reg:" in key for key in before_state), "the link has a registry to compare"
    for what, side, body, sent_headers, status in bad_inputs(stack):
        answer = httpx.post(f"{stack.producer.url}/hooks/{LINK}/{side}", content=body, headers=sent_headers,
                            timeout=10)
        assert answer.status_code == status, what
    # A delivery replayed as it was: the job runs, finds nothing changed, writes nothing.
    replay = delivered[-1]
    path = "/hooks/" + replay["url"].split("/hooks/", 1)[1]
    answer = httpx.post(stack.producer.url + path, content=replay["body"].encode(),
                        headers=headers(stack, "partner"), timeout=10)
    assert answer.status_code == 200
    settle(stack)
    # The well-formed ones did reach the worker, which found no such task and wrote nothing ...
    lines = [line for worker in stack.worker_processes for line in worker.lines]
    for side in ("partner", "client"):
        assert any(f"{side}#987654" in line and "missing" in line for line in lines), side
    # ... and the others are in the rejected list, with their reasons.
    store = redis.Redis.from_url(stack.redis_url)
    assert len(rejected_events(store, limit=100)) == 4
    store.close()
    assert accounts(stack) == before_accounts
    assert sync_state(stack.redis_url) == before_state
