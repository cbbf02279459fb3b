"""`crosslink chaos`: the chaos suite from the command line (crosslink/lab/chaos.py does the work).

Kept apart from crosslink/cli/__init__.py so the suite's options live beside it; the exit status is the
verdict, so CI can run `crosslink chaos --quick` as a gate.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import click

from crosslink.lab.chaos import ChaosPlan, run_chaos


@click.command()
@click.option("--quick", is_flag=True, help="3 links, 300 events in 45 s, 2 worker kills, 1 Redis restart and one window of "
                   "every Planfix and webhook fault (each met at least 3 times); about 90 s.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the report as JSON to this file.")
@click.option("--links", type=click.IntRange(min=1), default=None, help="Number of links (full: 20).")
@click.option("--events", type=click.IntRange(min=1), default=None, help="Number of events (full: 5000).")
@click.option("--seed", type=int, default=1, show_default=True, help="Seeds events and fault timing.")
@click.option("--verbose", "-v", is_flag=True, help="Print each fault as it is injected.")
def chaos(quick: bool, json_path: Path | None, links: int | None, events: int | None, seed: int,
          verbose: bool) -> None:
    """Run links against the emulator while killing workers, restarting Redis and breaking
    Planfix and its webhooks; exit 0 only if nothing was lost or duplicated and all converged."""
    plan = ChaosPlan.quick(seed) if quick else ChaosPlan.full(seed)
    if links is not None:
        plan = replace(plan, links=links)
    if events is not None:
        # Keep the event rate of the chosen mode: more events take proportionally longer.
        plan = replace(plan, events=events, events_s=plan.events_s * events / plan.events)
    say = (lambda text: click.echo(text, err=True)) if verbose else (lambda _: None)
    workdir = Path(tempfile.mkdtemp(prefix="crosslink-chaos-"))
    report = run_chaos(plan, workdir=workdir, log=say)
    click.echo(report.table())
    for problem in report.problems[:20]:
        click.echo(f"  problem: {problem}")
    if report.ok:
        shutil.rmtree(workdir, ignore_errors=True)
    else:
        click.echo(f"timeline and worker logs of this run: {workdir}")
    if json_path is not None:
        json_path.write_text(json.dumps(report.as_dict(), indent=2, ensure_ascii=False), encoding="utf-8")
    sys.exit(0 if report.ok else 1)
