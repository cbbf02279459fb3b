"""`crosslink dlq`: the operator's handle on dead letters, from the command line.

What a letter is and how releasing one keeps its task's events in order is
crosslink/operations/dead_letters.py; the commands here (list, show, replay, drop) parse their
arguments, call it and print what it returns.
"""

from __future__ import annotations

import json
import time

import click

from crosslink.operations.dead_letters import LetterUnavailable, letter_in_full, listed_letters, release
from crosslink.queue.dead_letters import Released


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _release(letter_id: str, replay: bool) -> tuple[Released, list[tuple[str, str, int]]]:
    try:
        return release(letter_id, replay)
    except LetterUnavailable as exc:
        raise click.ClickException(str(exc)) from None


@click.group("dlq")
def dlq() -> None:
    """Dead letters: syncs that failed for good; their tasks' later events wait behind them."""


@dlq.command("list")
@click.option("--link", "link_name", default=None, help="only this link")
@click.option("--json", "as_json", is_flag=True, help="one JSON object per line")
def list_letters(link_name: str | None, as_json: bool) -> None:
    """Every dead letter, oldest first: id, link, task, age, held events, reason."""
    now = time.time()
    listed = listed_letters(link_name, now)
    if not listed:
        click.echo("no dead letters" + (f" for link {link_name}" if link_name else ""))
        return
    for letter, row in listed:
        if as_json:
            click.echo(json.dumps(row, ensure_ascii=False))
        else:
            holding = f"{row['held']} held" if row["blocks_task"] else "holds nothing"
            click.echo(f"{letter['id']}\t{letter['link']}\t{letter['side']} #{letter['task']}\t"
                       f"{_age(now - letter['at'])} ago\t{holding}\t{letter['kind']}: {letter['reason']}")


@dlq.command("show")
@click.argument("letter_id")
def show(letter_id: str) -> None:
    """One dead letter in full, with the events held behind it."""
    try:
        letter = letter_in_full(letter_id)
    except LetterUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(letter, ensure_ascii=False, indent=2))


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
