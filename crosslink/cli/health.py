"""`crosslink health worker|producer`: what a docker-compose health check calls.

The checks themselves are crosslink/operations/health.py; a command here prints one JSON line
and exits 0 (healthy) or 1, which is all an orchestrator reads.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import click

from crosslink.operations.health import HEARTBEAT_MAX_AGE_S, OLDEST_JOB_MAX_AGE_S, check_producer, check_worker


def _verdict(report: dict[str, Any]) -> None:
    click.echo(json.dumps(report, ensure_ascii=False))
    sys.exit(0 if report["healthy"] else 1)


@click.group()
def health() -> None:
    """Health checks for orchestrators: one JSON line, exit 0 when healthy, 1 when not."""


@health.command("worker")
@click.option("--worker", "node", default=None, help="one worker's node name (w1@host); default: any worker")
@click.option("--max-heartbeat-age", "max_heartbeat_age_s", type=float, default=HEARTBEAT_MAX_AGE_S,
              show_default=True, help="seconds since the worker's last heartbeat")
@click.option("--max-job-age", "max_job_age_s", type=float, default=OLDEST_JOB_MAX_AGE_S,
              show_default=True, help="seconds the oldest queued job may wait")
def worker_command(node: str | None, max_heartbeat_age_s: float, max_job_age_s: float) -> None:
    """Redis reachable, a fresh worker heartbeat, and the sync queue's oldest job young enough."""
    _verdict(check_worker(node, max_heartbeat_age_s, max_job_age_s))


@health.command("producer")
@click.option("--url", default=None, help="the producer's base URL (default: CROSSLINK_PRODUCER_HOST/PORT)")
def producer_command(url: str | None) -> None:
    """The producer's /readyz: it answers and its Redis does."""
    _verdict(check_producer(url))
