"""`crosslink bench`: the benchmark from the command line (crosslink/lab/bench.py does the work).

Kept apart from crosslink/cli/__init__.py so the benchmark's options live beside it; the exit status is
the CI gate (BenchReport.failures): 1 when any request went over Planfix's limit, all-in requests
per change passed 3, the quiet overhead grew with the number of links, or a run waiting for its
account's turn was executed more than twice per sync.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import click

from crosslink.lab.bench import BenchPlan, run_bench


@click.command()
@click.option("--quick", is_flag=True,
              help="A small run for CI (about three minutes): every phase, fewer events, the poller's day "
                   "shrunk twenty-fold.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figures as JSON to this file.")
@click.option("--verbose", "-v", is_flag=True, help="Print each phase's progress.")
@click.option("--scale-links", default=None, metavar="N[,N...]",
              help="The full run's scale phase simulates a day for these numbers of links (default "
                   "10,50,200; 0: no scale phase). A day of 200 links takes most of an hour here.")
def bench(quick: bool, json_path: Path | None, verbose: bool, scale_links: str | None) -> None:
    """Measure whole deployments on this machine: the pipeline's throughput and latency with
    Planfix's limits off; with the reconciliation poller on, every request per change (all-in, by
    kind), bursts, the quiet overhead by number of links; at Planfix's 1 request/s, fairness on a
    skewed backlog, what a waiting backlog costs the workers, and idle latency."""
    plan = BenchPlan.quick() if quick else BenchPlan.full()
    if scale_links is not None:
        if quick:
            raise click.UsageError("--scale-links is for the full run (the quick run has no scale phase)")
        try:
            counts = tuple(int(part) for part in scale_links.split(",") if part.strip())
        except ValueError:
            raise click.BadParameter(f"expected numbers of links such as 10,50, got {scale_links!r}",
                                     param_hint="--scale-links") from None
        if any(count < 0 for count in counts):
            raise click.BadParameter("numbers of links cannot be negative", param_hint="--scale-links")
        plan = replace(plan, scale_links=tuple(count for count in counts if count > 0))
    started = time.monotonic()
    say = ((lambda text: click.echo(f"[{time.monotonic() - started:5.0f} s] {text}", err=True)) if verbose
           else (lambda _: None))
    workdir = Path(tempfile.mkdtemp(prefix="crosslink-bench-"))
    try:
        report = run_bench(plan, "quick" if quick else "full", workdir=workdir, log=say)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    click.echo(report.table())
    if json_path is not None:
        json_path.write_text(json.dumps(report.as_dict(), indent=2), encoding="utf-8")
    problems = report.failures()
    for problem in problems:
        click.echo(f"  FAIL: {problem}")
    sys.exit(1 if problems else 0)
