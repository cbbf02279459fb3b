"""`crosslink bench`: the benchmark from the command line (crosslink/bench.py does the work).

Kept apart from crosslink/cli.py so the benchmark's options live beside it; the exit status is
the CI gate: 1 when any request went over Planfix's limit or a change cost more than 2 calls.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import click


@click.command()
@click.option("--quick", is_flag=True, help="A small run for CI (about a minute): every phase, fewer events.")
@click.option("--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write the figures as JSON to this file.")
@click.option("--verbose", "-v", is_flag=True, help="Print each phase's progress.")
def bench(quick: bool, json_path: Path | None, verbose: bool) -> None:
    """Measure the real pipeline on this machine: throughput and latency with Planfix's limits
    off; API calls per change; with the limits on, violations, budget use, fairness between links
    sharing one account and idle latency."""
    from crosslink.bench import BenchPlan, run_bench

    plan = BenchPlan.quick() if quick else BenchPlan.full()
    say = (lambda text: click.echo(text, err=True)) if verbose else (lambda _: None)
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
