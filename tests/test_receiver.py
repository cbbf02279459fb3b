"""The webhook receiver in-process (Starlette TestClient) against the real private Redis.

Two links (alpha, beta), each with a header-authenticated partner side and a Basic-authenticated
client side, so a secret of one link can be tried on the other. What is checked is what Planfix
and the workers see: the HTTP status, the Celery messages on the ``crosslink.sync`` list (decoded
from kombu's envelope), the rejected list, the pending flags, and what reaches the logs.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from starlette.testclient import TestClient

from crosslink.lab.embedded_redis import EmbeddedRedis, free_port
from crosslink.queue.names import ENQUEUED_AT_HEADER, SYNC_BATCH, SYNC_QUEUE, SYNC_TASK, dirty_key, pending_key
from producers.receiver import MAX_BODY_BYTES, PREVIEW_CHARS, create_app, key_for_test_event, rejected_events
from producers.scenarios import BASIC_USER, EVENT_BODIES, SECRET_HEADER, hook_path, request_auth
from schemas.links import LinksConfig, SecretMissing, parse_links

LINKS_YAML = """\
links:
  - name: alpha
    sides:
      partner:
        base_url: https://alpha-partner.planfix.com/rest
        token_env: ALPHA_P_TOKEN
        webhook_secret_env: ALPHA_P_SECRET
        webhook_auth: header
        integration_user: "user:1"
        scope: {project: 10}
      client:
        base_url: https://alpha-client.planfix.com/rest
        token_env: ALPHA_C_TOKEN
        webhook_secret_env: ALPHA_C_SECRET
        webhook_auth: basic
        integration_user: "user:1"
        scope: {project: 20}
    statuses:
      partner_to_client: {1: 11}
      client_to_partner: {11: 1}
  - name: beta
    sides:
      partner:
        base_url: https://beta-partner.planfix.com/rest
        token_env: BETA_P_TOKEN
        webhook_secret_env: BETA_P_SECRET
        webhook_auth: header
        integration_user: "user:1"
        scope: {project: 30}
      client:
        base_url: https://beta-client.planfix.com/rest
        token_env: BETA_C_TOKEN
        webhook_secret_env: BETA_C_SECRET
        webhook_auth: basic
        integration_user: "user:1"
        scope: {project: 40}
    statuses:
      partner_to_client: {1: 11}
      client_to_partner: {11: 1}
"""
# Distinct, recognisable secrets: any of them in a log line or a response is a leak.
ENV = {
    "ALPHA_P_SECRET": "alpha-partner-s3cret-9f2c", "ALPHA_C_SECRET": "alpha-client-s3cret-41d7",
    "BETA_P_SECRET": "beta-partner-s3cret-77aa", "BETA_C_SECRET": "beta-client-s3cret-0c3e",
    "ALPHA_P_TOKEN": "t1", "ALPHA_C_TOKEN": "t2", "BETA_P_TOKEN": "t3", "BETA_C_TOKEN": "t4",
}
SECRETS = {("alpha", "partner"): ENV["ALPHA_P_SECRET"], ("alpha", "client"): ENV["ALPHA_C_SECRET"],
           ("beta", "partner"): ENV["BETA_P_SECRET"], ("beta", "client"): ENV["BETA_C_SECRET"]}
MODES = {"partner": "header", "client": "basic"}


@pytest.fixture
def config() -> LinksConfig:
    return parse_links(LINKS_YAML, "test-links.yaml")


@pytest.fixture
def spool_env(tmp_path) -> dict[str, str]:
    """ENV with the producer's spool in this test's own directory."""
    return {**ENV, "CROSSLINK_SPOOL_DIR": str(tmp_path / "spool")}


@pytest.fixture
def client(config, redis_url, tmp_path) -> Iterator[TestClient]:
    """The producer in-process, its spool in the test's own directory (as spool_env says)."""
    app = create_app(config, redis_url, {**ENV, "CROSSLINK_SPOOL_DIR": str(tmp_path / "spool")})
    with TestClient(app) as test_client:
        yield test_client
    app.state.receiver.enqueuer.redis.close()


def auth_headers(secret: str, mode: str) -> dict[str, str]:
    return request_auth(mode, secret)


def signed(link: str, side: str) -> dict[str, str]:
    """The headers a correctly set up scenario of LINK's SIDE sends."""
    return auth_headers(SECRETS[(link, side)], MODES[side])


def post(client: TestClient, link: str, side: str, body: str | bytes | dict,
         headers: dict[str, str] | None = None, content_type: str = "application/json"):
    if isinstance(body, dict):
        body = json.dumps(body)
    all_headers = {"Content-Type": content_type, **(signed(link, side) if headers is None else headers)}
    return client.post(hook_path(link, side), content=body, headers=all_headers)


def queued(redis_client: redis.Redis) -> list[list]:
    """[link, side, task] of every task queued for a sync, oldest job first: a task's own job
    (a burst's), or the tasks waiting in the dirty set of a side's batch job, longest first."""
    tasks = []
    for raw in reversed(redis_client.lrange(SYNC_QUEUE, 0, -1)):  # kombu LPUSHes, workers BRPOP
        envelope = json.loads(raw)
        assert envelope["headers"]["task"] in (SYNC_TASK, SYNC_BATCH)
        assert envelope["properties"]["body_encoding"] == "base64"
        args, kwargs, _embed = json.loads(base64.b64decode(envelope["body"]))
        assert kwargs == {}
        if envelope["headers"]["task"] == SYNC_TASK:
            tasks.append(args)
        else:
            tasks.extend([*args, int(task)] for task in redis_client.zrange(dirty_key(*args), 0, -1))
    return tasks


def nothing_queued(redis_client: redis.Redis) -> bool:
    return redis_client.llen(SYNC_QUEUE) == 0 and not list(redis_client.scan_iter("crosslink:pending:*"))


# --- authentication ---------------------------------------------------------------------------


def test_right_secret_header_queues_one_job(client, redis_client):
    response = post(client, "alpha", "partner", EVENT_BODIES["task_changed"].replace("{{Задача.Номер}}", "12"))
    assert (response.status_code, response.json()) == (200, {"result": "ok"})
    assert queued(redis_client) == [["alpha", "partner", 12]]
    assert redis_client.get(pending_key("alpha", "partner", 12)) == "1"
    assert redis_client.ttl(pending_key("alpha", "partner", 12)) > 0
    assert rejected_events(redis_client) == []


def test_a_queued_job_carries_the_time_it_was_queued(client, redis_client):
    """`crosslink health worker` measures the backlog's age from this header."""
    before = time.time()
    assert post(client, "alpha", "partner", {"task": 12}).status_code == 200
    envelope = json.loads(redis_client.lindex(SYNC_QUEUE, -1))
    assert before <= envelope["headers"][ENQUEUED_AT_HEADER] <= time.time()


def test_basic_auth_queues_one_job(client, redis_client):
    response = post(client, "alpha", "client", {"event": "task_created", "task": "7"})
    assert response.status_code == 200
    assert queued(redis_client) == [["alpha", "client", 7]]


@pytest.mark.parametrize("side, headers", [
    ("partner", {}),
    ("partner", {SECRET_HEADER: "wrong"}),
    ("partner", {SECRET_HEADER: ENV["ALPHA_P_SECRET"][:-1]}),  # a prefix is not the secret
    ("partner", {SECRET_HEADER: ""}),
    ("partner", auth_headers(ENV["ALPHA_P_SECRET"], "basic")),  # right secret, wrong mode
    ("client", {}),
    ("client", auth_headers("wrong", "basic")),
    ("client", {"Authorization": "Basic " + base64.b64encode(f"admin:{ENV['ALPHA_C_SECRET']}".encode()).decode()}),
    ("client", {"Authorization": "Bearer " + ENV["ALPHA_C_SECRET"]}),
    ("client", {"Authorization": "Basic !!!not-base64!!!"}),
    ("client", {"Authorization": "Basic " + base64.b64encode(b"\xff\xfe:x").decode()}),  # not UTF-8
    ("client", {"Authorization": "Basic"}),
    ("client", {SECRET_HEADER: ENV["ALPHA_C_SECRET"]}),  # right secret, wrong mode
])
def test_wrong_or_missing_secret_is_401_and_queues_nothing(client, redis_client, side, headers):
    response = post(client, "alpha", side, {"task": 12}, headers=headers)
    assert response.status_code == 401
    assert nothing_queued(redis_client)
    assert rejected_events(redis_client) == []  # not even recorded: it is not from our scenario


def test_non_ascii_basic_credentials_are_401_not_a_crash(client, redis_client):
    """httpx sends header bytes as given; Starlette decodes them as latin-1, which base64 rejects."""
    response = client.post(hook_path("alpha", "client"), content=b'{"task": 1}',
                           headers={"Authorization": "Basic \u00e9t\u00e9".encode("latin-1")})
    assert response.status_code == 401
    assert nothing_queued(redis_client)


def test_non_ascii_secrets_authenticate_as_utf8(config, redis_url, redis_client):
    """An admin may pick a Cyrillic secret; it arrives as UTF-8 bytes in the header or Basic."""
    env = {**ENV, "ALPHA_P_SECRET": "секрет-партнёра", "ALPHA_C_SECRET": "секрет-клиента"}
    app = create_app(config, redis_url, env)
    with TestClient(app) as test_client:
        header = {SECRET_HEADER: env["ALPHA_P_SECRET"].encode()}
        assert post(test_client, "alpha", "partner", {"task": 1}, headers=header).status_code == 200
        wrong = {SECRET_HEADER: "секрет-клиента".encode()}
        assert post(test_client, "alpha", "partner", {"task": 2}, headers=wrong).status_code == 401
        basic = auth_headers(env["ALPHA_C_SECRET"], "basic")
        assert post(test_client, "alpha", "client", {"task": 3}, headers=basic).status_code == 200
    app.state.receiver.enqueuer.redis.close()
    assert queued(redis_client) == [["alpha", "partner", 1], ["alpha", "client", 3]]


@pytest.mark.parametrize("link, side", [("alpha", "partner"), ("alpha", "client"),
                                        ("beta", "partner"), ("beta", "client")])
def test_another_sides_or_links_secret_is_refused(client, redis_client, link, side):
    """Each side's own secret works; every other secret (same mode) fails, on either link."""
    for (other_link, other_side), secret in SECRETS.items():
        headers = auth_headers(secret, MODES[side])
        response = post(client, link, side, {"task": 3}, headers=headers)
        expected = 200 if (other_link, other_side) == (link, side) else 401
        assert response.status_code == expected, (link, side, other_link, other_side)
    assert queued(redis_client) == [[link, side, 3]]


def test_link_a_payload_with_link_b_secret_is_401(client, redis_client):
    response = post(client, "alpha", "partner", {"task": 5}, headers=signed("beta", "partner"))
    assert response.status_code == 401
    response = post(client, "alpha", "client", {"task": 5}, headers=signed("beta", "client"))
    assert response.status_code == 401
    assert nothing_queued(redis_client)


@pytest.mark.parametrize("path", ["/hooks/gamma/partner", "/hooks/alpha/vendor", "/hooks/beta/Partner",
                                  "/hooks/ALPHA/partner"])
def test_unknown_link_or_side_is_404(client, redis_client, path):
    response = client.post(path, content=b'{"task": 1}', headers=signed("alpha", "partner"))
    assert response.status_code == 404
    assert nothing_queued(redis_client)


def test_the_receiver_state_does_not_show_secrets_in_repr(client):
    receiver = client.app.state.receiver
    shown = repr(receiver.auth) + repr(receiver.__dict__)
    assert "header" in shown and "basic" in shown
    assert not any(secret in shown for secret in SECRETS.values())


def test_a_missing_secret_variable_stops_start_up_naming_only_the_variable(config, redis_url):
    env = {key: value for key, value in ENV.items() if key != "BETA_C_SECRET"}
    with pytest.raises(SecretMissing) as caught:
        create_app(config, redis_url, env)
    assert "BETA_C_SECRET" in str(caught.value)
    assert not any(secret in str(caught.value) for secret in SECRETS.values())


# --- bodies -----------------------------------------------------------------------------------


def test_body_over_the_cap_is_200_rejected_and_not_queued(client, redis_client):
    body = json.dumps({"event": "task_changed", "task": 12, "pad": "x" * MAX_BODY_BYTES})
    response = post(client, "alpha", "partner", body)
    assert response.status_code == 200
    assert nothing_queued(redis_client)
    (entry,) = rejected_events(redis_client)
    assert entry["link"] == "alpha" and entry["side"] == "partner"
    assert str(MAX_BODY_BYTES) in entry["reason"]


def test_body_over_the_cap_without_content_length_is_rejected_too(client, redis_client):
    """A chunked upload declares no length; the cap is enforced while reading the stream."""
    chunk = b'{"task": 12, "pad": "' + b"x" * (64 * 1024)

    def chunks():
        for _ in range(5):  # 5 x 64 KB > 256 KB
            yield chunk

    response = client.post(hook_path("alpha", "partner"), content=chunks(),
                           headers={**signed("alpha", "partner"), "Content-Type": "application/json"})
    assert response.status_code == 200
    assert nothing_queued(redis_client)
    (entry,) = rejected_events(redis_client)
    assert str(MAX_BODY_BYTES) in entry["reason"]
    assert len(entry["body"]) <= PREVIEW_CHARS


def test_body_just_under_the_cap_is_queued(client, redis_client):
    prefix = '{"task": 12, "pad": "'
    body = prefix + "x" * (MAX_BODY_BYTES - len(prefix) - 2) + '"}'
    assert len(body.encode()) == MAX_BODY_BYTES
    assert post(client, "alpha", "partner", body).status_code == 200
    assert queued(redis_client) == [["alpha", "partner", 12]]


@pytest.mark.parametrize("body, task", [
    ('{"event": "task_changed", "task": "12", "name": "He said "hi""}', 12),  # quote in a name
    ('{"event": "comment_added", "task": "#34", "comment": "56",}', 34),  # trailing comma, "#"
    ("{'task': 78, 'event': 'task_created'}", 78),  # single quotes
    ('{"task": 90, "name": "a\\qb', 90),  # cut off, bad escape
])
def test_broken_json_that_can_be_repaired_is_queued(client, redis_client, body, task):
    assert post(client, "beta", "partner", body).status_code == 200
    assert queued(redis_client) == [["beta", "partner", task]]
    assert rejected_events(redis_client) == []


UNUSABLE = [
    pytest.param('{"event": "task_changed", "account": "acme.planfix.com"}', "task number", id="no-task"),
    pytest.param('{"event": "task_changed", "task": ""}', "task number", id="blank-task"),
    pytest.param('{"event": "task_changed", "task": "{{Задача.Номер}}"}', "task", id="unsubstituted"),
    pytest.param('{"task": "0"}', "task", id="task-zero"),
    pytest.param('{"task": 12, "event": "task_exploded"}', "event", id="unknown-event"),
    pytest.param("<html><body><h1>Task changed</h1><p>Nothing else</p></body></html>", "neither JSON",
                 id="html-only"),
    pytest.param("\U0001f525\U0001f389\U0001f680", "neither JSON", id="emoji"),
    pytest.param('{"task": "\U0001f525"}', "task", id="emoji-task"),
    pytest.param(json.dumps({"event": "comment_added", "text": "task: 77 " + "ы" * (32 * 1024)}, ensure_ascii=False),
                 "task number", id="64KB-comment-without-task"),
    pytest.param("", "empty", id="empty"),
    pytest.param("[1, 2, 3]", "list", id="json-list"),
]


@pytest.mark.parametrize("body, reason", UNUSABLE)
def test_unusable_body_is_200_rejected_with_a_reason(client, redis_client, body, reason):
    response = post(client, "alpha", "client", body)
    assert (response.status_code, response.json()) == (200, {"result": "ok"})
    assert nothing_queued(redis_client)
    (entry,) = rejected_events(redis_client)
    assert (entry["link"], entry["side"]) == ("alpha", "client")
    assert reason in entry["reason"]
    # The preview is the body's first PREVIEW_CHARS bytes; a character cut in two shows as U+FFFD.
    assert body.startswith(entry["body"].rstrip("\ufffd"))
    assert len(entry["body"].encode()) <= PREVIEW_CHARS + 2 and len(entry["body"]) >= min(len(body), 100)
    assert entry["at"] > 0


def test_rejected_list_keeps_the_newest_first(client, redis_client):
    post(client, "alpha", "partner", "first \U0001f525")
    post(client, "alpha", "partner", "second \U0001f525")
    assert [entry["body"] for entry in rejected_events(redis_client)] == ["second \U0001f525", "first \U0001f525"]


def test_form_body_is_queued(client, redis_client):
    response = post(client, "alpha", "partner", "event=comment_added&task=21&comment=5",
                    content_type="application/x-www-form-urlencoded; charset=utf-8")
    assert response.status_code == 200
    assert queued(redis_client) == [["alpha", "partner", 21]]


def test_get_with_query_is_queued(client, redis_client):
    response = client.get(hook_path("alpha", "client") + "?event=task_changed&task=33",
                          headers=signed("alpha", "client"))
    assert response.status_code == 200
    assert queued(redis_client) == [["alpha", "client", 33]]


def test_get_without_query_is_rejected(client, redis_client):
    assert client.get(hook_path("alpha", "client"), headers=signed("alpha", "client")).status_code == 200
    assert nothing_queued(redis_client)
    assert "empty" in rejected_events(redis_client)[0]["reason"]


# --- coalescing -------------------------------------------------------------------------------


def test_events_for_one_task_coalesce_until_the_job_starts(client, redis_client):
    for event in ("task_created", "task_changed", "comment_added", "task_changed", "task_changed"):
        assert post(client, "beta", "client", {"event": event, "task": 8, "comment": 2}).status_code == 200
    assert queued(redis_client) == [["beta", "client", 8]]
    redis_client.delete(pending_key("beta", "client", 8))  # what the sync job does when it starts
    assert post(client, "beta", "client", {"task": 8}).status_code == 200
    assert queued(redis_client) == [["beta", "client", 8], ["beta", "client", 8]]
    assert post(client, "beta", "client", {"task": 8}).status_code == 200
    assert len(queued(redis_client)) == 2


def test_different_tasks_sides_and_links_queue_separately(client, redis_client):
    targets = [("alpha", "partner", 1), ("alpha", "partner", 2), ("alpha", "client", 1),
               ("beta", "partner", 1), ("beta", "client", 1)]
    for link, side, task in targets + targets:  # the second round coalesces
        assert post(client, link, side, {"task": task}).status_code == 200
    assert queued(redis_client) == [list(target) for target in targets]


def test_test_event_records_and_queues_nothing(client, redis_client):
    response = post(client, "beta", "partner", {"event": "test", "task": 4, "account": "beta-partner"})
    assert response.status_code == 200
    assert nothing_queued(redis_client)
    recorded = json.loads(redis_client.get(key_for_test_event("beta", "partner")))
    assert (recorded["event"], recorded["task"], recorded["account"]) == ("test", 4, "beta-partner")
    assert redis_client.ttl(key_for_test_event("beta", "partner")) > 0
    assert redis_client.get(key_for_test_event("alpha", "partner")) is None


def spooled_lines(env: dict[str, str]) -> list[dict]:
    path = Path(env["CROSSLINK_SPOOL_DIR"]) / "webhooks.jsonl"
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()] if path.exists() else []


def wait_for(predicate, timeout: float = 10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_while_redis_is_down_webhooks_are_spooled_answered_200_and_replayed_in_order(config, spool_env):
    """Planfix pauses the whole account after any answer but 200: the spool takes the webhooks.
    (The order of replay is tests/test_spool.py's; here, that each arrives once.)"""
    server = EmbeddedRedis(persistent=True).start()
    try:
        app = create_app(config, server.url, spool_env)
        with TestClient(app) as test_client:
            assert post(test_client, "alpha", "partner", {"task": 1}).status_code == 200
            server.stop()
            sent = [("alpha", "partner", 3), ("beta", "client", 4), ("alpha", "partner", 5), ("alpha", "partner", 3)]
            for link, side, task in sent:
                down = post(test_client, link, side, {"event": "task_changed", "task": task,
                                                      "secret": SECRETS[(link, side)]})
                assert (down.status_code, down.json()) == (200, {"result": "ok"})
            unusable = post(test_client, "alpha", "client", {"event": "task_changed",
                                                             "note": SECRETS[("alpha", "client")]})
            assert unusable.status_code == 200
            kept = spooled_lines(spool_env)
            assert [(r["link"], r["side"], r.get("task")) for r in kept] == [*sent, ("alpha", "client", None)]
            assert not any(secret in json.dumps(kept, ensure_ascii=False) for secret in SECRETS.values())
            ready = test_client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["spooled_webhooks"] == 5
            server.start()
            store = redis.Redis.from_url(server.url, decode_responses=True)
            try:
                wait_for(lambda: app.state.receiver.spool.pending == 0)
                # Task 3's second event joined its first; the rest joined task 1's batch or their own.
                assert sorted(queued(store)) == [["alpha", "partner", 1], ["alpha", "partner", 3],
                                                 ["alpha", "partner", 5], ["beta", "client", 4]]
                (rejected,) = rejected_events(store)
                assert "task number" in rejected["reason"] and ENV["ALPHA_C_SECRET"] not in rejected["body"]
                assert test_client.get("/readyz").json() == {"status": "ready"}
                assert spooled_lines(spool_env) == []
                # Back to Redis directly: nothing more is spooled.
                assert post(test_client, "beta", "partner", {"task": 9}).status_code == 200
                assert spooled_lines(spool_env) == [] and queued(store)[-1] == ["beta", "partner", 9]
            finally:
                store.close()
        app.state.receiver.enqueuer.redis.close()
    finally:
        server.cleanup()


def test_a_full_spool_answers_503_and_says_so_once(config, spool_env, caplog):
    caplog.set_level(logging.INFO, logger="crosslink.producer")
    env = {**spool_env, "CROSSLINK_SPOOL_MAX": "3"}
    app = create_app(config, f"redis://127.0.0.1:{free_port()}/0", env)  # nothing listens there
    with TestClient(app) as test_client:
        answers = [post(test_client, "alpha", "partner", {"task": task}).status_code for task in range(1, 7)]
        assert answers == [200, 200, 200, 503, 503, 503]
        ready = test_client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["spool"] == "full"
    full = [record for record in caplog.records if "spool full" in record.getMessage()]
    assert len(full) == 1 and full[0].levelno == logging.ERROR and "CROSSLINK_SPOOL_MAX" in full[0].getMessage()
    assert len(spooled_lines(env)) == 3


def test_a_spool_left_by_a_stopped_producer_is_replayed_by_the_next(config, redis_url, redis_client, spool_env):
    dead = f"redis://127.0.0.1:{free_port()}/0"
    first = create_app(config, dead, spool_env)
    with TestClient(first) as test_client:
        for task in (7, 8):
            assert post(test_client, "alpha", "client", {"task": task}).status_code == 200
    second = create_app(config, redis_url, spool_env)
    with TestClient(second):
        wait_for(lambda: second.state.receiver.spool.pending == 0)
    assert queued(redis_client) == [["alpha", "client", 7], ["alpha", "client", 8]]


def test_readyz_is_200_while_redis_answers_or_the_spool_has_room(config, spool_env):
    server = EmbeddedRedis().start()
    try:
        app = create_app(config, server.url, spool_env)
        with TestClient(app) as test_client:
            up = test_client.get("/readyz")
            assert (up.status_code, up.json()) == (200, {"status": "ready"})
            server.stop()
            down = test_client.get("/readyz")
            assert down.status_code == 200
            assert down.json() == {"status": "ready", "redis": "ConnectionError", "spooling": True,
                                   "spooled_webhooks": 0}
            assert test_client.get("/healthz").status_code == 200
            server.start()
            assert test_client.get("/readyz").json() == {"status": "ready"}
        app.state.receiver.enqueuer.redis.close()
    finally:
        server.cleanup()


# --- secrets and bad input overall ------------------------------------------------------------

BAD_REQUESTS = [
    ("alpha", "partner", {SECRET_HEADER: "nope"}, '{"task": 1}'),
    ("alpha", "client", auth_headers(ENV["BETA_C_SECRET"], "basic"), '{"task": 1}'),
    ("gamma", "partner", None, '{"task": 1}'),
    *[("alpha", "client", None, param.values[0]) for param in UNUSABLE],
    ("beta", "partner", None, '{"task": 1, "pad": "' + "x" * MAX_BODY_BYTES + '"}'),
]


def test_no_secret_in_logs_or_responses_and_bad_input_queues_nothing(client, redis_client, caplog):
    caplog.set_level(logging.DEBUG)
    # The demo and the chaos suite quieten the in-process producer; this test hears everything.
    caplog.set_level(logging.DEBUG, logger="crosslink.producer")
    texts = []
    for link, side, headers, body in BAD_REQUESTS:
        if headers is None:
            headers = signed("alpha", "partner") if link == "gamma" else signed(link, side)
        response = post(client, link, side, body, headers=headers)
        assert response.status_code in (200, 401, 404)
        texts.append(response.text)
        texts.extend(f"{name}: {value}" for name, value in response.headers.items())
    assert nothing_queued(redis_client)
    assert len(rejected_events(redis_client, limit=100)) == len(UNUSABLE) + 1
    for link, side, task in (("alpha", "partner", 1), ("alpha", "client", 2)):  # good ones log too
        texts.append(post(client, link, side, {"task": task}).text)
    assert len(queued(redis_client)) == 2
    assert any("refused" in record.getMessage() for record in caplog.records)
    assert any("rejected" in record.getMessage() for record in caplog.records)
    assert any("accepted" in record.getMessage() for record in caplog.records)
    logged = [f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records]
    for secret in SECRETS.values():
        encoded = base64.b64encode(f"{BASIC_USER}:{secret}".encode()).decode()
        for text in logged + texts:
            assert secret not in text and encoded not in text


def test_a_post_with_its_variables_in_the_url_is_read_from_the_query(client, redis_client):
    response = client.post("/hooks/alpha/partner?task=31&event=task_changed", headers=signed("alpha", "partner"))
    assert response.status_code == 200
    assert queued(redis_client) == [["alpha", "partner", 31]]


def test_the_webhook_log_line_names_link_side_task_event_and_the_queued_jobs_id(client, redis_client, caplog):
    """The job id is the Celery id of the message queued, so the worker's lines (which carry the
    running job's id) can be found from the producer's."""
    caplog.set_level(logging.INFO, logger="crosslink.producer")
    post(client, "alpha", "partner", {"event": "task_changed", "task": 12})
    post(client, "alpha", "partner", {"event": "comment_added", "task": 12, "comment": 3})
    accepted, coalesced = [record for record in caplog.records if record.name == "crosslink.producer"]
    envelope = json.loads(redis_client.lindex(SYNC_QUEUE, -1))
    assert (accepted.link, accepted.side, accepted.task, accepted.event) == ("alpha", "partner", 12, "task_changed")
    assert accepted.job == envelope["headers"]["id"]
    assert (coalesced.task, coalesced.event) == (12, "comment_added") and not hasattr(coalesced, "job")


# --- item by item: what scenario editors really send -------------------------------------------


def test_the_trailing_slash_path_is_the_same_endpoint_not_a_redirect(client, redis_client):
    """Planfix counts a 307 as a failed delivery and pauses the account's requests."""
    response = client.post(hook_path("alpha", "partner") + "/", content=b'{"task": 14}',
                           headers={**signed("alpha", "partner"), "Content-Type": "application/json"},
                           follow_redirects=False)
    assert (response.status_code, response.json()) == (200, {"result": "ok"})
    assert queued(redis_client) == [["alpha", "partner", 14]]


@pytest.mark.parametrize("content_type", ["application/x-www-form-urlencoded", "text/plain", ""])
def test_the_documented_json_body_with_another_content_type_is_queued(client, redis_client, content_type):
    body = EVENT_BODIES["comment_added"].replace("{{Задача.Номер}}", "15").replace(
        "{{ID добавленного комментария}}", "4").replace("{{Системные.Домен аккаунта}}", "acme.planfix.com")
    assert post(client, "alpha", "client", body, content_type=content_type).status_code == 200
    assert queued(redis_client) == [["alpha", "client", 15]]
    assert rejected_events(redis_client) == []


def test_a_multipart_body_is_queued(client, redis_client):
    response = client.post(hook_path("beta", "partner"), data={"event": "task_changed", "task": "16"},
                           files={"file": ("notes.txt", b"task=99", "text/plain")}, headers=signed("beta", "partner"))
    assert response.status_code == 200
    assert queued(redis_client) == [["beta", "partner", 16]]


@pytest.mark.parametrize("body", [
    '{"event": "task_changed", "task": "7095", "name": "x", "task": "7096"}',
    '{"event": "task_changed", "task": "7095", "name": "x", "task": "7096", "d": "a "b""}',
])
def test_a_body_naming_two_tasks_is_200_rejected_with_that_reason_and_queues_nothing(client, redis_client, body):
    assert post(client, "alpha", "partner", body).status_code == 200
    assert nothing_queued(redis_client)
    (entry,) = rejected_events(redis_client)
    assert "conflicting values for 'task'" in entry["reason"] and "7096" in entry["reason"]


@pytest.mark.parametrize("where", ["query", "form", "json", "json-escaped", "reason"])
def test_a_secret_anywhere_in_the_request_is_kept_nowhere(client, redis_client, caplog, where):
    """The rejected list and the logs show an unusable body, never a secret that came with it,
    nor one the admin pasted from another side."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="crosslink.producer")
    own, other = SECRETS[("alpha", "partner")], SECRETS[("beta", "client")]
    path, body, content_type = hook_path("alpha", "partner"), "", "application/json"
    if where == "query":
        path += f"?event=task_changed&secret={own}&other={other}"
    elif where == "form":
        body, content_type = f"event=task_changed&x={own}&token={other}", "application/x-www-form-urlencoded"
    elif where == "json":
        body = json.dumps({"event": "task_changed", "note": f"{own} and {other}"})
    elif where == "json-escaped":
        body = json.dumps({"event": "task_changed", "note": own + '"' + other}).replace("\\", "")
    else:  # a secret in the task field ends up in the schema's error message
        body = json.dumps({"task": own + other})
    response = client.post(path, content=body.encode(),
                           headers={**signed("alpha", "partner"), "Content-Type": content_type})
    assert response.status_code == 200
    (entry,) = rejected_events(redis_client)
    assert "[redacted]" in entry["body"] + entry["reason"]
    # The test's own HTTP client logs the URL it requested: that line is not the producer's.
    shown = json.dumps(entry, ensure_ascii=False) + " ".join(
        f"{record.getMessage()} {record.__dict__!r}" for record in caplog.records if record.name != "httpx")
    for secret in SECRETS.values():
        assert secret not in shown
        assert secret[:12] not in shown, "not even a part of one"


# The same links, on disk, for a producer started as an OS process.
def producer_process(tmp_path: Path, redis_url: str) -> tuple[subprocess.Popen, int, Path]:
    links = tmp_path / "links.yaml"
    links.write_text(LINKS_YAML, encoding="utf-8")
    port, stderr = free_port(), tmp_path / "producer.stderr"
    env = {**os.environ, **ENV, "REDIS_URL": redis_url, "CROSSLINK_LOG_JSON": "1", "CROSSLINK_LOG_LEVEL": "INFO",
           "CROSSLINK_SPOOL_DIR": str(tmp_path / "spool")}
    with open(stderr, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "crosslink.cli", "producer", "--config", str(links),
                                    "--host", "127.0.0.1", "--port", str(port)],
                                   env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process, port, stderr
        except httpx.HTTPError:
            time.sleep(0.1)
    process.kill()
    raise AssertionError("the producer did not start:\n" + stderr.read_text())


def test_a_sender_hanging_up_mid_body_is_one_json_log_line(tmp_path, redis_url, redis_client):
    """A real uvicorn server (`crosslink producer`), a raw socket that promises 1,000 bytes, sends
    a few and closes: one JSON line says so, no plain-text traceback, and the server goes on."""
    process, port, stderr = producer_process(tmp_path, redis_url)
    try:
        head = (f"POST {hook_path('alpha', 'partner')} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                f"{SECRET_HEADER}: {SECRETS[('alpha', 'partner')]}\r\nContent-Type: application/json\r\n"
                "Content-Length: 1000\r\n\r\n")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sender:
            sender.sendall(head.encode() + b'{"event": "task_changed", "task": "1')
            time.sleep(0.2)
        time.sleep(0.5)
        answer = httpx.post(f"http://127.0.0.1:{port}{hook_path('alpha', 'partner')}", content=b'{"task": 2}',
                            headers={**signed("alpha", "partner"), "Content-Type": "application/json"}, timeout=5)
        assert answer.status_code == 200
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    lines = [line for line in stderr.read_text().splitlines() if line.strip()]
    assert lines and not any("Traceback" in line for line in lines), "\n".join(lines)
    records = [json.loads(line) for line in lines]  # every line JSON
    hung_up = [record for record in records if "hung up" in record.get("message", record.get("msg", ""))]
    assert len(hung_up) == 1 and hung_up[0].get("link") == "alpha", records
    assert queued(redis_client) == [["alpha", "partner", 2]]


def test_crosslink_status_counts_the_spool_beside_the_links_file_while_redis_is_down(tmp_path, redis_url):
    from crosslink.operations.status import link_status
    from schemas.links import load_links

    links = tmp_path / "links.yaml"
    links.write_text(LINKS_YAML, encoding="utf-8")
    dead = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(load_links(links), dead, ENV)  # no CROSSLINK_SPOOL_DIR: beside the links file
    with TestClient(app) as test_client:
        for task in (1, 2):
            assert post(test_client, "alpha", "partner", {"task": task}).status_code == 200
        assert (tmp_path / "spool" / "webhooks.jsonl").exists()
        down = {row["link"]: row for row in link_status(str(links), dead)}
        assert down["alpha"] == {"link": "alpha", "redis": "unreachable (ConnectionError)", "spooled_webhooks": 2}
        assert down["beta"]["spooled_webhooks"] == 0
        up = {row["link"]: row for row in link_status(str(links), redis_url)}
        assert up["alpha"]["spooled_webhooks"] == 2 and up["alpha"]["dead_letters"] == 0
