"""`crosslink reconcile`, `acknowledge` and `beat`: finding and repairing drift between a link's sides.

The compare, the repair and the acknowledgements are crosslink/operations/reconcile.py; a
command here parses its options, prints what the run says as it goes, writes the --json report
and exits by the verdict: 0 when no drift remains, 1 when some does, 3 when a side cannot be read,
130 (SIGINT) or 143 (SIGTERM) when stopped, after a partial report. The read's progress goes to
stderr, the report to stdout.
`crosslink beat` runs the scheduler that ticks the periodic poller (producers/reconcile).
"""

from __future__ import annotations

import getpass
import json
import sys
import time
from pathlib import Path
from typing import Any

import click

from crosslink.base.settings import get_settings
from crosslink.cli.options import link_named
from crosslink.operations.reconcile import (
    REPAIR_WAIT_S,
    BadTaskRef,
    NoDrift,
    ReadProgress,
    SideUnreadable,
    acknowledge_drift,
    reconcile_link,
)
from crosslink.operations.rest_read import progress_text
from planfix.errors import PlanfixError
from workers.app import app

# Off a terminal (a log, a pipe) the progress is a line this often, not one per request.
PROGRESS_LINE_EVERY_S = 10.0


class _ProgressLine:
    """The read's progress on stderr: one line redrawn in place on a terminal; elsewhere a line
    at each milestone (the start, each side listed or read: the estimate is corrected there) and
    between them every PROGRESS_LINE_EVERY_S."""

    def __init__(self) -> None:
        self.terminal = sys.stderr.isatty()
        self.last_line = float("-inf")
        self.width = 0

    def __call__(self, step: ReadProgress) -> None:
        text = progress_text(step)
        if self.terminal:
            click.echo("\r" + text.ljust(self.width), err=True, nl=False)
            self.width = len(text)
        elif step.milestone or time.monotonic() - self.last_line >= PROGRESS_LINE_EVERY_S:
            click.echo(text, err=True)
            self.last_line = time.monotonic()

    def end(self) -> None:
        """Leave the line before the report is printed."""
        if self.terminal and self.width:
            click.echo(err=True)
            self.width = 0


def _write_report(json_path: str | None, report: dict[str, Any]) -> None:
    if json_path:
        Path(json_path).write_text(json.dumps(report, ensure_ascii=False, indent=2), encoding="utf-8")


@click.command()
@click.option("--link", "link_name", required=True, help="the link to compare")
@click.option("--repair", is_flag=True, help="queue a sync of every drifted task, wait, compare again")
@click.option("--json", "json_path", default=None, type=click.Path(dir_okay=False),
              help="also write the report as JSON to this file")
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
@click.option("--wait", "wait_s", default=REPAIR_WAIT_S, show_default=True, type=float,
              help="with --repair: the longest wait for the workers, seconds")
def reconcile(link_name: str, repair: bool, json_path: str | None, links_path: str | None,
              wait_s: float) -> None:
    """Compare both sides of a link over REST and print the drift by task. Progress (requests made
    and the time the rest needs at the accounts' rates) goes to stderr; Ctrl-C or SIGTERM stops it
    with a partial report of what it found so far (exit 130 or 143)."""
    link = link_named(link_name, links_path)
    progress = _ProgressLine()

    def say(text: str, err: bool = False) -> None:
        progress.end()
        click.echo(text, err=err)

    try:
        report, status = reconcile_link(link, repair=repair, wait_s=wait_s, say=say, progress=progress)
    except PlanfixError as exc:
        raise click.ClickException(f"reading Planfix failed: {exc}") from None
    finally:
        progress.end()
    _write_report(json_path, report)
    sys.exit(status)


@click.command()
@click.option("--link", "link_name", required=True)
@click.argument("task")
@click.option("--why", required=True, help="why this drift stands (kept with the acknowledgement)")
@click.option("--by", "by", default=None, help="who acknowledges (default: the login name)")
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
def acknowledge(link_name: str, task: str, why: str, by: str | None, links_path: str | None) -> None:
    """Accept TASK's drift (SIDE:NUMBER, as `crosslink reconcile` lists it) as it is now: reconcile
    reports it but no longer fails on it until it changes. Compares the link once to know it."""
    link = link_named(link_name, links_path)
    try:
        record = acknowledge_drift(link, task, why, by or getpass.getuser())
    except BadTaskRef as exc:
        raise click.BadParameter(str(exc)) from None
    except SideUnreadable as cut:
        raise click.ClickException(f"cannot compare during a cut: {cut}") from None
    except NoDrift as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps({"link": link.name, "task": task, **record}, ensure_ascii=False))


@click.command()
@click.option("--schedule", "schedule_path", default=None, type=click.Path(dir_okay=False),
              help="where beat keeps its last-run times (default celerybeat-schedule here)")
def beat(schedule_path: str | None) -> None:
    """Run the scheduler that ticks the reconciliation poller every CROSSLINK_RECONCILE_TICK_S.

    Each tick polls the accounts whose period (their share of the daily quota, at least
    CROSSLINK_RECONCILE_PERIOD_S) has run out. Several replicas are safe: each poll takes its
    account's turn in Redis, so extra ticks do nothing (producers/tasks.py).
    """
    # With JSON logs, beat's banner (printed, not logged) would be the one line that is not
    # JSON: quiet leaves its log lines only ("beat: Starting...", each tick sent).
    argv = (["--quiet"] if get_settings().log_json else []) + ["beat", "--loglevel", "INFO"]
    if schedule_path:
        argv += ["--schedule", schedule_path]
    app.start(argv)
