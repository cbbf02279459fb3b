"""`crosslink dlq`: the operator's handle on dead letters.

A dead letter is a sync run that failed for good (crosslink.queue.dead_letters); its task's later events
wait behind it. Someone has to look at the reason, fix the cause (a missing project, a field
Planfix refuses, a removed counterpart) and then either replay the letter or drop it. Nothing is
released by itself, so nothing runs out of order behind an operator's back.

- list: every letter (per link with --link), with its reason, event, age and held events;
- show ID: one letter in full, with the events held behind it;
- replay ID: run the letter's event again, then the held ones, and unblock the task;
- drop ID: discard the letter; the held events run.

Re-queued runs sync the task's current state, so held events of the same task that follow one
another are queued as one run: it carries everything they reported.
"""

from __future__ import annotations

import json
import time
from typing import Any

import click
import redis

from crosslink.base.settings import get_settings
from crosslink.queue.dead_letters import DeadLetters, Released, all_letters, find
from crosslink.queue.names import SYNC_QUEUE, SYNC_TASK, pending_key


def _redis() -> redis.Redis:
    return redis.Redis.from_url(get_settings().redis_url, decode_responses=True)


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _letter_or_fail(client: redis.Redis, letter_id: str) -> dict[str, Any]:
    letter = find(client, letter_id)
    if letter is None:
        raise click.ClickException(f"no dead letter with id {letter_id!r} (see `crosslink dlq list`)")
    return letter


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
    # Celery loads slowly: imported only when something is queued.
    from crosslink.queue.enqueue import PENDING_TTL_S, make_celery

    celery = make_celery(get_settings().redis_url)
    try:
        for link, side, task in runs:
            # Events arriving before the run starts coalesce into it, as in the producer.
            client.set(pending_key(link, side, task), "1", ex=PENDING_TTL_S)
            celery.send_task(SYNC_TASK, args=[link, side, task], queue=SYNC_QUEUE)
    finally:
        celery.close()


def _release(letter_id: str, replay: bool) -> tuple[Released, list[tuple[str, str, int]]]:
    client = _redis()
    try:
        letter = _letter_or_fail(client, letter_id)
        released = DeadLetters(client, letter["link"]).release(letter_id)
        if released is None:
            raise click.ClickException(f"dead letter {letter_id} was released meanwhile")
        runs = runs_for(released, replay)
        _queue(client, runs)
        return released, runs
    finally:
        client.close()


@click.group("dlq")
def dlq() -> None:
    """Dead letters: syncs that failed for good; their tasks' later events wait behind them."""


@dlq.command("list")
@click.option("--link", "link_name", default=None, help="only this link")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def list_letters(link_name: str | None, as_json: bool) -> None:
    """Every dead letter, oldest first: id, link, task, age, held events, reason."""
    client = _redis()
    try:
        now = time.time()
        letters = [letter for letter in all_letters(client)
                   if link_name is None or letter["link"] == link_name]
        if not letters:
            click.echo("no dead letters" + (f" for link {link_name}" if link_name else ""))
            return
        for letter in letters:
            store = DeadLetters(client, letter["link"])
            # A failed read's letter holds nothing: the task's later events run (workers.tasks).
            blocks = store.blocked_by(letter["side"], letter["task"]) == letter["id"]
            held = len(store.held(letter["side"], letter["task"])) if blocks else 0
            row = {"id": letter["id"], "link": letter["link"], "side": letter["side"],
                   "task": letter["task"], "kind": letter["kind"], "age_s": round(now - letter["at"], 1),
                   "blocks_task": blocks, "held": held, "event": letter["event"], "reason": letter["reason"]}
            if as_json:
                click.echo(json.dumps(row, ensure_ascii=False))
            else:
                holding = f"{held} held" if blocks else "holds nothing"
                click.echo(f"{letter['id']}\t{letter['link']}\t{letter['side']} #{letter['task']}\t"
                           f"{_age(now - letter['at'])} ago\t{holding}\t{letter['kind']}: {letter['reason']}")
    finally:
        client.close()


@dlq.command("show")
@click.argument("letter_id")
def show(letter_id: str) -> None:
    """One dead letter in full, with the events held behind it."""
    client = _redis()
    try:
        letter = _letter_or_fail(client, letter_id)
        store = DeadLetters(client, letter["link"])
        blocking = store.blocked_by(letter["side"], letter["task"]) == letter["id"]
        held = store.held(letter["side"], letter["task"]) if blocking else []
        click.echo(json.dumps({**letter, "age_s": round(time.time() - letter["at"], 1),
                               "blocks_task": blocking, "held": held}, ensure_ascii=False, indent=2))
    finally:
        client.close()


@dlq.command("replay")
@click.argument("letter_id")
def replay(letter_id: str) -> None:
    """Run the letter's event again, then the events held behind it; unblock the task."""
    released, runs = _release(letter_id, replay=True)
    click.echo(f"replayed dead letter {letter_id}: {len(released.held)} held events; queued "
               + ", ".join(f"{link} {side} #{task}" for link, side, task in runs))


@dlq.command("drop")
@click.argument("letter_id")
def drop(letter_id: str) -> None:
    """Discard the letter; the events held behind it run."""
    released, runs = _release(letter_id, replay=False)
    queued = ", ".join(f"{link} {side} #{task}" for link, side, task in runs) or "nothing"
    click.echo(f"dropped dead letter {letter_id}: {len(released.held)} held events; queued {queued}")
