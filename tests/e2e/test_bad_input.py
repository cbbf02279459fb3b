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
import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis

from producers.receiver import MAX_BODY_BYTES, REJECTED_KEY, rejected_events
from producers.scenarios import BASIC_USER, SECRET_HEADER, scenarios_for_side
from tests.e2e.conftest import settle
from workers.heartbeat import HEARTBEAT_KEY

pytestmark = pytest.mark.e2e

LINK = "demo"
PAVEL = 2
# Keys that record that something happened rather than what was synced (see the docstring; the
# limiter counts the requests the jobs for unknown and replayed tasks made, all of them reads;
# an event's burst marker lives half a second; the workers' heartbeats tick every two; a run
# that read a task records the change stamp it looked at, for the poller).
NOT_SYNC_STATE = (REJECTED_KEY, "crosslink:last-sync", "crosslink:reconcile:turn:", "crosslink:limiter:",
                  "crosslink:recent:", "crosslink:synced-stamp:", HEARTBEAT_KEY)
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


# --- what scenario editors really send (issue 17, item 4) ------------------------------------------
# Each test points the partner's scenarios somewhere else for a while, as an admin would set them
# up, then lets a person change a task; the client account shows whether it synced.

IRINA_P = 4


@contextlib.contextmanager
def partner_scenarios(stack, change: Callable[[dict], dict]):
    """The partner side's scenarios, each as CHANGE makes it, until the block ends."""
    link = next(item for item in stack.config.links if item.name == LINK)
    conf = link.sides["partner"]
    specs = scenarios_for_side(stack.producer.url, LINK, "partner", conf.webhook_auth,
                               stack.env[conf.webhook_secret_env], conf.integration_user)
    stack.world.set_scenarios(conf.account, [change(dict(spec)) for spec in specs])
    try:
        yield
    finally:
        stack.point_scenarios_at(stack.producer.url)


def new_partner_task(stack, name: str) -> int:
    body = {"name": name, "processId": 1, "project": {"id": 10}, "assignees": {"users": [{"id": f"user:{IRINA_P}"}]}}
    return stack.world.create_task("partner", body, author=PAVEL)


def client_names(stack) -> list[str]:
    return [task["name"] for task in stack.world.dump_tasks("client")]


def deliveries_since(stack, count_before: int) -> list[dict]:
    return stack.world.deliveries("partner")[count_before:]


def test_the_documented_json_body_sent_as_a_form_is_synced(stack):
    before = len(stack.world.deliveries("partner"))
    with partner_scenarios(stack, lambda spec: {**spec, "content_type": "application/x-www-form-urlencoded"}):
        new_partner_task(stack, "Form-labelled JSON arrives")
        settle(stack)
    sent = deliveries_since(stack, before)
    assert sent and all(entry["status"] == 200 and entry["attempt"] == 1 for entry in sent)
    assert client_names(stack).count("Form-labelled JSON arrives") == 1


def test_the_trailing_slash_url_answers_200_and_is_synced(stack):
    before = len(stack.world.deliveries("partner"))
    with partner_scenarios(stack, lambda spec: {**spec, "url": spec["url"] + "/"}):
        new_partner_task(stack, "Slash-ended URL arrives")
        settle(stack)
    sent = deliveries_since(stack, before)
    assert sent and all(entry["url"].endswith("/") for entry in sent)
    assert all(entry["status"] == 200 and entry["attempt"] == 1 for entry in sent), sent
    assert client_names(stack).count("Slash-ended URL arrives") == 1


def test_a_task_name_forging_a_second_task_key_is_rejected_and_nothing_syncs(stack):
    """A name `x", "task": "<another task>` substituted raw into a template that quotes the name
    makes valid JSON with two task keys: neither task may be synced from it."""
    number = new_partner_task(stack, "Forgery target")
    settle(stack)
    assert client_names(stack).count("Forgery target") == 1
    store = redis.Redis.from_url(stack.redis_url)
    rejected_before = store.llen(REJECTED_KEY)
    quoting_the_name = lambda spec: {**spec, "body": spec["body"].replace(  # noqa: E731
        '"task": "{{Задача.Номер}}"', '"task": "{{Задача.Номер}}", "name": "{{Задача.Название}}"')}
    before_accounts = accounts(stack)
    with partner_scenarios(stack, quoting_the_name):
        stack.world.update_task("partner", number, {"name": 'x", "task": "1'}, author=PAVEL)
        settle(stack)
    new = rejected_events(store, limit=store.llen(REJECTED_KEY) - rejected_before)
    store.close()
    assert len(new) == 1 and "conflicting values for 'task'" in new[0]["reason"], new
    after = accounts(stack)
    assert after["client"] == before_accounts["client"], "nothing synced to the client"
    assert 'x", "task": "1' not in client_names(stack)


def stored_text(stack) -> str:
    """Everything Crosslink keeps: every Redis key and value, and the producer's spool files."""
    store = redis.Redis.from_url(stack.redis_url)
    try:
        parts = []
        for key in store.scan_iter(count=1000):
            kind = store.type(key).decode()
            value = {"string": lambda: [store.get(key)], "list": lambda: store.lrange(key, 0, -1),
                     "hash": lambda: [*store.hgetall(key).keys(), *store.hgetall(key).values()],
                     "set": lambda: list(store.smembers(key)), "zset": lambda: store.zrange(key, 0, -1),
                     }.get(kind, lambda: [])()
            parts.extend(item.decode("utf-8", errors="replace") for item in [key, *value] if item)
    finally:
        store.close()
    spool = Path(stack.workdir) / "spool"
    parts.extend(path.read_text(encoding="utf-8", errors="replace") for path in spool.glob("*") if path.is_file())
    return "\n".join(parts)


def test_a_secret_in_the_query_is_absent_from_crosslink_rejected_and_from_everything_stored(stack):
    """A GET scenario with its variables (and, wrongly, the secret) in the URL and no task."""
    link = next(item for item in stack.config.links if item.name == LINK)
    secret = stack.env[link.sides["partner"].webhook_secret_env]
    number = new_partner_task(stack, "Query secret source")
    settle(stack)
    with partner_scenarios(stack, lambda spec: {**spec, "method": "GET", "body": "",
                                                "url": spec["url"] + "?event=task_changed&name={{Задача.Название}}"
                                                f"&secret={secret}&key={secret}"}):
        stack.world.update_task("partner", number, {"name": "Query secret source, renamed"}, author=PAVEL)
        settle(stack)
    shown = subprocess.run([sys.executable, "-m", "crosslink.cli", "rejected", "--limit", "1000"],
                           env={**os.environ, "REDIS_URL": stack.redis_url}, capture_output=True, text=True,
                           timeout=60)
    assert shown.returncode == 0, shown.stderr
    ours = [json.loads(line) for line in shown.stdout.splitlines() if "Query+secret+source" in line]
    assert ours and all("task number" in entry["reason"] for entry in ours), shown.stdout
    assert secret not in shown.stdout and secret not in shown.stderr
    assert secret not in stored_text(stack)
