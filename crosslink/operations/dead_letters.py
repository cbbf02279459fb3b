"""The operator's handle on dead letters: list them, show one, replay or drop it.

A dead letter is a sync run that failed for good (crosslink.queue.dead_letters); its task's later events
wait behind it. Someone has to look at the reason, fix the cause (a missing project, a field
Planfix refuses, a removed counterpart) and then either replay the letter or drop it. Nothing is
released by itself, so nothing runs out of order behind an operator's back.

- listed_letters: every letter (per link), with its reason, event, age and held events;
- letter_in_full: one letter in full, with the events held behind it;
- release(replay=True): run the letter's event again, then the held ones, and unblock the task;
- release(replay=False): discard the letter; the held events run.

Re-queued runs sync the task's current state, so held events of the same task that follow one
another are queued as one run: it carries everything they reported. `crosslink dlq`
(crosslink/cli/dlq.py) prints what these return.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from crosslink.base.settings import get_settings
from crosslink.queue.dead_letters import DeadLetters, Released, all_letters, find
from crosslink.queue.enqueue import PENDING_TTL_S, make_celery
from crosslink.queue.names import SYNC_QUEUE, SYNC_TASK, pending_key


class LetterUnavailable(Exception):
    """No dead letter by the id asked for (never was, or released meanwhile); the message says
    which, for the operator."""


def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, decode_responses=True)


def _letter_or_fail(client: redis.Redis, letter_id: str) -> dict[str, Any]:
    letter = find(client, letter_id)
    if letter is None:
        raise LetterUnavailable(f"no dead letter with id {letter_id!r} (see `crosslink dlq list`)")
    return letter


def _holding(store: DeadLetters, letter: dict[str, Any]) -> tuple[bool, list[dict[str, Any]]]:
    """Whether LETTER blocks its task, and the events held behind it. A failed read's letter
    holds nothing: the task's later events run (workers.tasks)."""
    blocks = store.blocked_by(letter["side"], letter["task"]) == letter["id"]
    return blocks, store.held(letter["side"], letter["task"]) if blocks else []


def listed_letters(link_name: str | None, now: float) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Every dead letter (of LINK_NAME only, when given), oldest first, each with its row as
    `crosslink dlq list --json` prints it: id, link, task, kind, age at NOW, held events, reason."""
    client = _redis()
    try:
        letters = [letter for letter in all_letters(client)
                   if link_name is None or letter["link"] == link_name]
        listed = []
        for letter in letters:
            blocks, held = _holding(DeadLetters(client, letter["link"]), letter)
            row = {"id": letter["id"], "link": letter["link"], "side": letter["side"],
                   "task": letter["task"], "kind": letter["kind"], "age_s": round(now - letter["at"], 1),
                   "blocks_task": blocks, "held": len(held), "event": letter["event"], "reason": letter["reason"]}
            listed.append((letter, row))
        return listed
    finally:
        client.close()


def letter_in_full(letter_id: str) -> dict[str, Any]:
    """One dead letter in full, with its age and the events held behind it; LetterUnavailable
    when there is none by LETTER_ID."""
    client = _redis()
    try:
        letter = _letter_or_fail(client, letter_id)
        blocking, held = _holding(DeadLetters(client, letter["link"]), letter)
        return {**letter, "age_s": round(time.time() - letter["at"], 1), "blocks_task": blocking, "held": held}
    finally:
        client.close()


def runs_for(released: Released, replay: bool) -> list[tuple[str, str, int]]:
    """The (link, side, task) runs to queue, in order: the letter's own event on replay, then
    the held events, consecutive runs of the same task collapsed into one."""
    events = ([released.letter["event"]] if replay else []) + released.held
    runs: list[tuple[str, str, int]] = []
    for event in events:
        run = (str(event.get("link") or released.letter["link"]), str(event["side"]), int(event["task"]))
        if not runs or runs[-1] != run:
            runs.append(run)
    return runs


def _queue(client: redis.Redis, runs: list[tuple[str, str, int]]) -> None:
    celery = make_celery(get_settings().redis_url)
    try:
        for link, side, task in runs:
            # Events arriving before the run starts coalesce into it, as in the producer.
            client.set(pending_key(link, side, task), "1", ex=PENDING_TTL_S)
            celery.send_task(SYNC_TASK, args=[link, side, task], queue=SYNC_QUEUE)
    finally:
        celery.close()


def release(letter_id: str, replay: bool) -> tuple[Released, list[tuple[str, str, int]]]:
    """Release LETTER_ID and queue the runs it held (runs_for): on REPLAY its own event first.
    What was released and the runs queued; LetterUnavailable when there is no such letter, or
    another release took it meanwhile."""
    client = _redis()
    try:
        letter = _letter_or_fail(client, letter_id)
        released = DeadLetters(client, letter["link"]).release(letter_id)
        if released is None:
            raise LetterUnavailable(f"dead letter {letter_id} was released meanwhile")
        runs = runs_for(released, replay)
        _queue(client, runs)
        return released, runs
    finally:
        client.close()
