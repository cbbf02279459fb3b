"""The `crosslink` command: one entry point for operators, the demo and the services.

Click lives here only: each command parses its options, calls one function of
crosslink/operations or crosslink/lab (or starts a service) and prints what it returns. Commands
kept beside their area (reconcile, dlq, doctor, health, chaos, bench) are modules of this
package, which never import it back.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path
from typing import Any

import click

from crosslink.base.logs import configure
from crosslink.base.settings import get_settings
from crosslink.cli.bench import bench
from crosslink.cli.chaos import chaos
from crosslink.cli.dlq import dlq
from crosslink.cli.doctor import doctor
from crosslink.cli.health import health
from crosslink.cli.journal import journal
from crosslink.cli.mapping import mapping
from crosslink.cli.options import link_named
from crosslink.cli.reconcile import acknowledge, beat, reconcile
from crosslink.lab.demo import run_demo
from crosslink.lab.services import run_flower, run_services, serve_producer
from crosslink.operations.backfill import BackfillBusy, BackfillReport, backfill_link
from crosslink.operations.backfill_watch import MirrorProgress, mirroring_summary
from crosslink.operations.backfill_watch import exit_status as mirroring_exit_status
from crosslink.operations.decisions import DecisionRefused, mirror_task, pair_tasks
from crosslink.operations.relink import relink as rebuild_registry
from crosslink.operations.rules_check import WARNINGS as RULE_WARNINGS
from crosslink.operations.rules_check import lint_links_file
from crosslink.operations.status import links_overview, rejected_webhooks, status_report, status_table
from crosslink.queue.names import SYNC_QUEUE
from planfix.emulator.server import serve
from workers.app import app


@click.group()
@click.option("--log-level", default=None, help="DEBUG, INFO, WARNING (default from CROSSLINK_LOG_LEVEL)")
def main(log_level: str | None) -> None:
    """Crosslink keeps tasks in sync between two Planfix accounts."""
    settings = get_settings()
    configure(log_level or settings.log_level, settings.log_json)
    # SIGTERM (a supervisor, CI's timeout) ends a command as Ctrl-C does: its clean-up runs, and
    # the processes it started in sessions of their own (the chaos and bench stacks) stop with
    # it instead of living on. Servers that handle SIGTERM themselves (celery, uvicorn) replace this.
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, _frame: object) -> None:
    sys.exit(128 + signum)


@main.command()
@click.option("--config", "config_path", required=True, type=click.Path(exists=True, dir_okay=False),
              help="YAML seed: accounts, users, processes, tasks, scenarios")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8100, show_default=True, type=int)
def emulator(config_path: str, host: str, port: int) -> None:
    """Run the Planfix emulator (every account under /<account>/rest)."""
    serve(config_path, host, port)


@main.command("lint-config")
@click.argument("path", type=click.Path(dir_okay=False))
def lint_config(path: str) -> None:
    """Check a links.yaml: each problem with its line and the fix (exit 1). Where the journal is at
    hand (beside the file, or CROSSLINK_JOURNAL_URL), also warn of rules the sides have not
    approved, with the command that proposes them."""
    if not Path(path).exists():
        raise click.ClickException(f"{path}: no such file")
    report = lint_links_file(path)
    for issue in report.issues:
        where = f"{path}:{issue.line}" if issue.line else path
        click.echo(f"{where}: {issue.path}: {issue.message}\n    fix: {issue.fix}", err=True)
    if report.issues:
        raise SystemExit(1)
    notices = report.notices()
    for notice in notices:
        label = "warning" if notice.state in RULE_WARNINGS else "note"
        fix = f"\n    fix: {notice.fix}" if notice.fix else ""
        click.echo(f"{path}: {label}: link {notice.link}: {notice.message}{fix}", err=True)
    warned = sum(1 for notice in notices if notice.state in RULE_WARNINGS)
    click.echo(f"{path}: OK" + (f", {warned} warning(s)" if warned else ""))


@main.command()
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
@click.option("--host", default=None)
@click.option("--port", default=None, type=int)
def producer(links_path: str | None, host: str | None, port: int | None) -> None:
    """Run the webhook receiver."""
    serve_producer(links_path, host, port)


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", "-c", default=4, show_default=True, type=int)
@click.pass_context
def worker(ctx: click.Context, concurrency: int) -> None:
    """Run a Celery worker for the sync queue (extra arguments go to celery)."""
    app.worker_main(["worker", "-Q", SYNC_QUEUE, "-c", str(concurrency), "--loglevel", "INFO",
                     *ctx.args])


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--port", default=5555, show_default=True, type=int)
@click.option("--address", default="127.0.0.1", show_default=True)
@click.pass_context
def flower(ctx: click.Context, port: int, address: str) -> None:
    """Run Flower on the workers' jobs: each row names the job's link, side and task, a batch
    job's result the tasks it synced (extra arguments go to Flower, e.g. --basic-auth=user:password)."""
    run_flower(port, address, list(ctx.args))


@main.command()
@click.option("--config", "links_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--concurrency", "-c", default=4, show_default=True, type=int)
def run(links_path: str, concurrency: int) -> None:
    """Start the producer, a worker and the beat (the poller's and the daily anchor's schedule)
    for real accounts, with the settings in ./.env and the environment (Redis from REDIS_URL)."""
    sys.exit(run_services(links_path, concurrency))


@main.command()
@click.option("--quiet", is_flag=True, help="print only the final verdict")
def demo(quiet: bool) -> None:
    """Play a two-account story on the emulator and check that both sides match."""
    sys.exit(run_demo(verbose=not quiet))


@main.command()
@click.option("--config", "links_path", default=None)
@click.option("--json", "as_json", is_flag=True,
              help="JSON lines for machines: one per link (its \"link\" key), then one per account (\"account\")")
def status(links_path: str | None, as_json: bool) -> None:
    """Per link: mirrored tasks, queued jobs, parked events, dead letters, status moves held (the
    other side does not allow them), tasks older than the link awaiting a decision (crosslink
    pair / mirror), severed or not, webhooks waiting in the producer's spool for Redis, and each
    side's reconciliation poll (period, daily budget, how late a change whose webhook was lost
    can be synced). Per Planfix account: requests today against the daily quota, the day's
    forecast at the current pace, the share the reconciliation may spend and its poll period."""
    settings = get_settings()
    report = status_report(links_path or settings.links_path, settings.redis_url, settings.spool_dir)
    if not as_json:
        click.echo(status_table(report))
        return
    for row in [*report["links"], *report["accounts"]]:
        click.echo(json.dumps(row, ensure_ascii=False))


@main.command()
@click.option("--config", "links_path", default=None)
def links(links_path: str | None) -> None:
    """List the configured links and their sides, each severed one with why (its access was
    lost: its events wait, nothing is deleted)."""
    settings = get_settings()
    for line in links_overview(links_path or settings.links_path, settings.redis_url):
        click.echo(line)


@main.command()
@click.option("--link", "link_name", required=True)
@click.option("--config", "links_path", default=None)
def relink(link_name: str, links_path: str | None) -> None:
    """Rebuild a link's registry from the mirror markers stored in both accounts."""
    settings = get_settings()
    found = rebuild_registry(links_path or settings.links_path, settings.redis_url, link_name)
    click.echo(json.dumps(found))


@main.command()
@click.option("--link", "link_name", required=True)
@click.option("--config", "links_path", default=None)
@click.option("--dry-run", is_flag=True, help="list what would be linked, created and ambiguous; write nothing")
@click.option("--no-wait", is_flag=True,
              help="return once the tasks are queued, without following the mirroring (the workers "
                   "mirror them all the same)")
def backfill(link_name: str, links_path: str | None, dry_run: bool, no_wait: bool) -> None:
    """Bring the tasks already in the link's scope in: pair those copied by hand (same name),
    queue the rest to be mirrored, then follow the workers' mirroring to the end (a second
    progress bar: tasks mirrored of tasks queued). Resumable: a rerun continues an interrupted
    one. Exit 0 when every task queued was mirrored; 1 when some ended otherwise (dead letters,
    a side cut: listed in the JSON report's "mirroring") or nothing moved for 5 minutes (no
    worker running?); 130 or 143 when stopped while waiting, the jobs staying queued."""
    bars: dict[str, Any] = {}

    def on_plan(report: BackfillReport) -> None:
        est = report.estimate
        per_account = ", ".join(f"{acc} ~{n} requests" for acc, n in sorted(est.requests.items()))
        click.echo(f"{report.link}: listed " + ", ".join(f"{s} {n} tasks" for s, n in report.listed.items())
                   + f"; {len(report.ambiguous)} ambiguous; "
                   + ("continuing an interrupted backfill; " if report.resumed else "")
                   + f"{report.total} items to handle; {per_account}: about {est.seconds:.0f} s "
                   "at the accounts' rate (comments add one write each)", err=True)
        if not dry_run and report.total:
            bars["queue"] = _open_bar(report.total, "queueing")

    def on_item(report: BackfillReport) -> None:
        if "queue" in bars:
            bars["queue"].update(1)

    def on_mirror(progress: MirrorProgress) -> None:
        if "mirror" not in bars:
            _close_bar(bars.pop("queue", None))
            if not progress.queued:
                return
            bars["mirror"] = _open_bar(progress.queued, "mirrored")
        bar = bars["mirror"]
        bar.update(max(0, progress.mirrored - bar.pos))

    try:
        report = backfill_link(link_name, links_path, dry_run=dry_run, wait=not no_wait, on_plan=on_plan,
                               on_item=on_item, on_mirror=on_mirror)
    except BackfillBusy as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        for bar in bars.values():
            _close_bar(bar)
    if report.mirroring is not None:
        click.echo(mirroring_summary(report.link, report.mirroring), err=True)
    click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    if report.mirroring is not None:
        sys.exit(mirroring_exit_status(report.mirroring))


def _open_bar(length: int, label: str) -> Any:
    bar = click.progressbar(length=length, label=label, file=sys.stderr, show_eta=True, show_pos=True)
    bar.__enter__()
    return bar


def _close_bar(bar: Any) -> None:
    if bar is not None:
        bar.__exit__(None, None, None)


@main.command("pair")
@click.option("--link", "link_name", required=True)
@click.option("--partner", "partner_task", type=int, required=True, help="the partner's task number")
@click.option("--client", "client_task", type=int, required=True, help="the client's task number")
@click.option("--config", "links_path", default=None)
def pair_command(link_name: str, partner_task: int, client_task: int, links_path: str | None) -> None:
    """Pair two tasks older than the link (a hand copy and its original) as backfill pairs a
    match: the link's owner rules settle their differences, then both are synced."""
    link = link_named(link_name, links_path)
    try:
        pair = pair_tasks(link, {"partner": partner_task, "client": client_task})
    except DecisionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(pair, ensure_ascii=False))


@main.command("mirror")
@click.option("--link", "link_name", required=True)
@click.argument("side", type=click.Choice(["partner", "client"]))
@click.argument("task", type=int)
@click.option("--config", "links_path", default=None)
def mirror_command(link_name: str, side: str, task: int, links_path: str | None) -> None:
    """Give a task older than the link a mirror on the other side (it has no hand copy there)."""
    link = link_named(link_name, links_path)
    try:
        queued = mirror_task(link, side, task)
    except DecisionRefused as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(json.dumps(queued, ensure_ascii=False))


@main.command()
@click.option("--limit", default=50, show_default=True)
def rejected(limit: int) -> None:
    """Show the newest webhook bodies that were authenticated but unusable."""
    for event in rejected_webhooks(get_settings().redis_url, limit):
        click.echo(json.dumps(event, ensure_ascii=False))


# Commands kept beside the area they operate: reconcile and beat, dlq, chaos, bench, doctor, health, journal,
# mapping.
for _command in (reconcile, acknowledge, beat, dlq, chaos, bench, doctor, health, journal, mapping):
    main.add_command(_command)

if __name__ == "__main__":
    main()
