"""Dead letters and the events held behind them (crosslink.queue.dead_letters) and `crosslink dlq`, on a
real Redis: ids are stable, a blocked task holds its later events in order, and releasing a
letter hands back exactly what was held, once."""

from __future__ import annotations

import base64
import json
import time

import pytest
import redis
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crosslink.base.settings import get_settings
from crosslink.cli import main
from crosslink.operations.dead_letters import runs_for
from crosslink.queue.dead_letters import DeadLetters, Released, all_letters, find
from crosslink.queue.names import SYNC_QUEUE, pending_key
from workers.state import LinkState


def event(side: str, task: int, at: float = 1.0) -> dict:
    return {"link": "demo", "side": side, "task": task, "at": at}


def test_letters_get_stable_increasing_ids_and_block_their_task(redis_client):
    store = DeadLetters(redis_client, "demo")
    first = store.add(event("partner", 5), "POST /task/: HTTP 400 code 41: project", 10.0)
    second = store.add(event("client", 7), "GET /task/9: HTTP 404 code 1000", 11.0, kind="permanent")
    other = DeadLetters(redis_client, "other").add({"side": "partner", "task": 5}, "x", 12.0)
    assert int(first) < int(second) < int(other)
    assert [letter["id"] for letter in store.letters()] == [first, second]
    assert find(redis_client, second)["reason"] == "GET /task/9: HTTP 404 code 1000"
    assert [letter["link"] for letter in all_letters(redis_client)] == ["demo", "demo", "other"]
    assert store.blocked_by("partner", 5) == first and store.blocked_by("client", 7) == second
    assert store.blocked_by("partner", 6) is None
    assert DeadLetters(redis_client, "other").blocked_by("partner", 5) == other
    # Releasing one letter leaves every other id as it was.
    store.release(first)
    assert find(redis_client, second)["id"] == second and find(redis_client, first) is None


def test_later_events_are_held_in_order_and_handed_back_once(redis_client):
    store = DeadLetters(redis_client, "demo")
    assert store.hold_if_blocked("partner", 5, event("partner", 5)) is None
    assert store.held("partner", 5) == []                    # not blocked: the event runs, nothing held
    letter = store.add(event("partner", 5, 1.0), "boom", 1.0)
    for at in (2.0, 3.0, 4.0):
        assert store.hold_if_blocked("partner", 5, event("partner", 5, at)) == letter
    assert store.hold_if_blocked("client", 5, event("client", 5)) is None   # another task is free
    assert [held["at"] for held in store.held("partner", 5)] == [2.0, 3.0, 4.0]
    released = store.release(letter)
    assert released.letter["event"] == event("partner", 5, 1.0)
    assert [held["at"] for held in released.held] == [2.0, 3.0, 4.0]
    assert store.release(letter) is None                      # released once only
    assert store.blocked_by("partner", 5) is None and store.held("partner", 5) == []
    assert store.hold_if_blocked("partner", 5, event("partner", 5, 5.0)) is None


def test_a_second_letter_for_a_blocked_task_waits_its_turn(redis_client):
    store = DeadLetters(redis_client, "demo")
    first = store.add(event("partner", 5), "first", 1.0)
    second = store.add(event("partner", 5), "second", 2.0)
    assert store.blocked_by("partner", 5) == first
    store.hold_if_blocked("partner", 5, event("partner", 5, 3.0))
    assert store.release(second).held == []                   # it held nothing
    assert store.blocked_by("partner", 5) == first and len(store.held("partner", 5)) == 1
    assert store.release("999") is None and DeadLetters(redis_client, "other").release(first) is None


def test_link_state_keeps_its_dead_letter_view(redis_client):
    state = LinkState(redis_client, "demo")
    letter = state.dead_letter({"side": "partner", "task": 3}, "not found", 5.0, "permanent")
    assert state.dead_letters() == [{"side": "partner", "task": 3, "reason": "not found", "at": 5.0}]
    assert DeadLetters(redis_client, "demo").blocked_by("partner", 3) == letter


OPS = st.lists(st.one_of(
    st.tuples(st.just("fail"), st.sampled_from([("partner", 1), ("partner", 2), ("client", 1)])),
    st.tuples(st.just("event"), st.sampled_from([("partner", 1), ("partner", 2), ("client", 1)])),
    st.tuples(st.just("release"), st.integers(min_value=0, max_value=5)),
), max_size=30)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(OPS)
def test_no_event_is_lost_or_handed_back_twice(redis_client, ops):
    """Against a model: every event either runs at once or is handed back by exactly one release,
    in arrival order."""
    redis_client.flushdb()
    store = DeadLetters(redis_client, "demo")
    blocked: dict[tuple[str, int], str] = {}
    model_held: dict[tuple[str, int], list[int]] = {}
    ids: list[str] = []
    ran, handed_back, sequence = [], [], 0
    for op, arg in ops:
        if op == "fail":
            letter = store.add(event(*arg), "boom", 0.0)
            ids.append(letter)
            blocked.setdefault(arg, letter)
        elif op == "event":
            sequence += 1
            if store.hold_if_blocked(arg[0], arg[1], {**event(*arg), "n": sequence}) is None:
                assert arg not in blocked
                ran.append(sequence)
            else:
                model_held.setdefault(arg, []).append(sequence)
        elif ids:
            letter = ids[arg % len(ids)]
            released = store.release(letter)
            key = next((k for k, v in blocked.items() if v == letter), None)
            if released is None:
                continue
            handed_back.extend(held["n"] for held in released.held)
            if key is not None:
                assert [held["n"] for held in released.held] == model_held.pop(key, [])
                del blocked[key]
            else:
                assert released.held == []
    still_held = [n for key in model_held for n in model_held[key]]
    assert sorted(ran + handed_back + still_held) == list(range(1, sequence + 1))


@given(st.lists(st.tuples(st.sampled_from(["partner", "client"]), st.integers(1, 3)), max_size=12),
       st.booleans())
def test_runs_keep_the_order_and_collapse_only_repeats(held, replay):
    letter = {"link": "demo", "event": {"side": "partner", "task": 1}}
    runs = runs_for(Released(letter, [{"side": s, "task": t} for s, t in held]), replay)
    events = ([("demo", "partner", 1)] if replay else []) + [("demo", s, t) for s, t in held]
    assert all(a != b for a, b in zip(runs, runs[1:]))
    collapsed = [e for i, e in enumerate(events) if i == 0 or events[i - 1] != e]
    assert runs == collapsed


# --- the CLI ----------------------------------------------------------------------------------


@pytest.fixture
def cli(redis_url, monkeypatch):
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    yield lambda *args: CliRunner().invoke(main, list(args))
    get_settings.cache_clear()


def queued_jobs(client: redis.Redis) -> list[list]:
    """The args of every sync job in the broker queue, oldest first (kombu LPUSHes)."""
    jobs = []
    for raw in reversed(client.lrange(SYNC_QUEUE, 0, -1)):
        message = json.loads(raw)
        args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
        jobs.append(args)
    return jobs


def test_cli_lists_shows_and_refuses_an_unknown_id(cli, redis_client):
    assert cli("dlq", "list").output.strip() == "no dead letters"
    store = DeadLetters(redis_client, "demo")
    letter = store.add(event("partner", 5), "POST /task/: HTTP 400 code 41: project", time.time() - 125)
    store.hold_if_blocked("partner", 5, event("partner", 5, 2.0))
    DeadLetters(redis_client, "other").add({"link": "other", "side": "client", "task": 8}, "gone", time.time())
    listed = cli("dlq", "list", "--link", "demo")
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("\n") == 1
    assert f"{letter}\tdemo\tpartner #5\t2m ago\t1 held\tpermanent: POST /task/: HTTP 400 code 41" in listed.output
    rows = [json.loads(line) for line in cli("dlq", "list", "--json").output.splitlines()]
    assert [(row["link"], row["held"]) for row in rows] == [("demo", 1), ("other", 0)]
    assert rows[0]["event"] == event("partner", 5) and rows[0]["age_s"] >= 125
    shown = json.loads(cli("dlq", "show", letter).output)
    assert shown["blocks_task"] and shown["held"] == [event("partner", 5, 2.0)]
    assert shown["reason"].startswith("POST /task/")
    for command in ("show", "replay", "drop"):
        missing = cli("dlq", command, "404")
        assert missing.exit_code == 1 and "no dead letter with id '404'" in missing.output


def test_cli_replay_queues_the_letter_then_its_held_events_and_unblocks(cli, redis_client):
    store = DeadLetters(redis_client, "demo")
    letter = store.add(event("partner", 5), "boom", time.time())
    store.hold_if_blocked("partner", 5, event("partner", 5, 2.0))
    store.hold_if_blocked("partner", 5, event("partner", 5, 3.0))
    result = cli("dlq", "replay", letter)
    assert result.exit_code == 0, result.output
    assert "2 held events" in result.output
    assert queued_jobs(redis_client) == [["demo", "partner", 5]]   # one run carries all three
    assert redis_client.get(pending_key("demo", "partner", 5)) == "1"
    assert store.blocked_by("partner", 5) is None and store.letters() == []
    assert cli("dlq", "replay", letter).exit_code == 1


def test_cli_drop_discards_the_letter_and_releases_only_the_held_events(cli, redis_client):
    store = DeadLetters(redis_client, "demo")
    lonely = store.add(event("client", 9), "nothing waits", time.time())
    assert "queued nothing" in cli("dlq", "drop", lonely).output
    assert queued_jobs(redis_client) == []
    letter = store.add(event("partner", 5), "boom", time.time())
    store.hold_if_blocked("partner", 5, event("partner", 5, 2.0))
    result = cli("dlq", "drop", letter)
    assert result.exit_code == 0 and "1 held events" in result.output
    assert queued_jobs(redis_client) == [["demo", "partner", 5]]
    assert store.letters() == [] and store.blocked_by("partner", 5) is None


def test_a_letter_of_a_failed_read_is_listed_but_holds_nothing(redis_client):
    store = DeadLetters(redis_client, "demo")
    letter = store.add(event("partner", 5), "GET /comment/{id}: HTTP 400 code 41", 1.0, blocks=False)
    assert [item["id"] for item in store.letters()] == [letter] and find(redis_client, letter)["blocks"] is False
    assert store.blocked_by("partner", 5) is None
    assert store.hold_if_blocked("partner", 5, event("partner", 5, 2.0)) is None   # the event runs
    assert store.held("partner", 5) == []
    # A write's letter for the same task blocks it as ever, and releasing the read's letter
    # leaves that block in place.
    write = store.add(event("partner", 5, 3.0), "POST /task/: HTTP 400 code 41", 3.0)
    assert store.blocked_by("partner", 5) == write
    assert store.hold_if_blocked("partner", 5, event("partner", 5, 4.0)) == write
    released = store.release(letter)
    assert released.held == [] and store.blocked_by("partner", 5) == write


def test_cli_lists_a_failed_reads_letter_as_holding_nothing(cli, redis_client):
    """Beside a write's letter of the same task, the read's letter must not claim its held events."""
    store = DeadLetters(redis_client, "demo")
    read = store.add(event("partner", 5), "GET /comment/{id}: HTTP 400 code 41", time.time(), blocks=False)
    write = store.add(event("partner", 5, 3.0), "POST /task/: HTTP 400 code 41", time.time())
    store.hold_if_blocked("partner", 5, event("partner", 5, 4.0))
    rows = {row["id"]: row for row in map(json.loads, cli("dlq", "list", "--json").output.splitlines())}
    assert (rows[read]["blocks_task"], rows[read]["held"]) == (False, 0)
    assert (rows[write]["blocks_task"], rows[write]["held"]) == (True, 1)
    listed = cli("dlq", "list").output
    assert f"{read}\tdemo\tpartner #5\t" in listed and "holds nothing" in listed and "1 held" in listed
