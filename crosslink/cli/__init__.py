"""The `crosslink` command: one entry point for operators, the demo and the services."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click

from crosslink.base.logs import configure
from crosslink.base.settings import get_settings


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
    from planfix.emulator.server import serve

    serve(config_path, host, port)


@main.command("lint-config")
@click.argument("path", type=click.Path(dir_okay=False))
def lint_config(path: str) -> None:
    """Check a links.yaml: each problem with its line and the fix."""
    from schemas.links import lint_file

    if not Path(path).exists():
        raise click.ClickException(f"{path}: no such file")
    issues = lint_file(path)
    for issue in issues:
        where = f"{path}:{issue.line}" if issue.line else path
        click.echo(f"{where}: {issue.path}: {issue.message}\n    fix: {issue.fix}", err=True)
    if issues:
        raise SystemExit(1)
    click.echo(f"{path}: OK")


@main.command()
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
@click.option("--host", default=None)
@click.option("--port", default=None, type=int)
def producer(links_path: str | None, host: str | None, port: int | None) -> None:
    """Run the webhook receiver."""
    import uvicorn

    from producers.receiver import create_app
    from schemas.links import load_links

    settings = get_settings()
    app = create_app(load_links(links_path or settings.links_path), settings.redis_url, os.environ)
    uvicorn.run(app, host=host or settings.producer_host, port=port or settings.producer_port,
                log_level="warning")


@main.command(context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--concurrency", "-c", default=4, show_default=True, type=int)
@click.pass_context
def worker(ctx: click.Context, concurrency: int) -> None:
    """Run a Celery worker for the sync queue (extra arguments go to celery)."""
    from workers.app import app
    from crosslink.queue.names import SYNC_QUEUE

    app.worker_main(["worker", "-Q", SYNC_QUEUE, "-c", str(concurrency), "--loglevel", "INFO",
                     *ctx.args])


@main.command()
@click.option("--config", "links_path", required=True, type=click.Path(exists=True, dir_okay=False))
@click.option("--concurrency", "-c", default=4, show_default=True, type=int)
def run(links_path: str, concurrency: int) -> None:
    """Start the producer and a worker for real accounts (Redis from REDIS_URL)."""
    from crosslink.lab.services import run_services

    sys.exit(run_services(links_path, concurrency))


@main.command()
@click.option("--quiet", is_flag=True, help="print only the final verdict")
def demo(quiet: bool) -> None:
    """Play a two-account story on the emulator and check that both sides match."""
    from crosslink.lab.demo import run_demo

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
    from crosslink.operations.status import status_report, status_table

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
    import redis

    from schemas.links import load_links
    from workers.state import LinkState

    settings = get_settings()
    config = load_links(links_path or settings.links_path)
    store = redis.Redis.from_url(settings.redis_url)
    try:
        for link in config.links:
            try:
                severed = LinkState(store, link.name).severed()
            except redis.RedisError as exc:
                severed, unknown = {}, f" (severed sides unknown: Redis {type(exc).__name__})"
            else:
                unknown = ""
            sides = ", ".join(f"{name}={side.base_url}"
                              + (f" [severed: {severed[name]['reason']}]" if name in severed else "")
                              for name, side in link.sides.items())
            click.echo(f"{link.name}: {sides}{unknown}")
    finally:
        store.close()


@main.command()
@click.option("--link", "link_name", required=True)
@click.option("--config", "links_path", default=None)
def relink(link_name: str, links_path: str | None) -> None:
    """Rebuild a link's registry from the mirror markers stored in both accounts."""
    from crosslink.operations.relink import relink as do_relink

    settings = get_settings()
    found = do_relink(links_path or settings.links_path, settings.redis_url, link_name)
    click.echo(json.dumps(found))


@main.command()
@click.option("--link", "link_name", required=True)
@click.option("--config", "links_path", default=None)
@click.option("--dry-run", is_flag=True, help="list what would be linked, created and ambiguous; write nothing")
def backfill(link_name: str, links_path: str | None, dry_run: bool) -> None:
    """Bring the tasks already in the link's scope in: pair those copied by hand (same name),
    queue the rest to be mirrored. Resumable: a rerun continues an interrupted one."""
    import redis

    from crosslink.operations.session import cli_client
    from planfix.limiter import AccountLimiter
    from crosslink.operations.backfill import BackfillBusy, run_backfill
    from crosslink.queue.enqueue import Enqueuer
    from schemas.links import find_link, load_links

    settings = get_settings()
    link = find_link(load_links(links_path or settings.links_path), link_name)
    store = redis.Redis.from_url(settings.redis_url)
    limiter = AccountLimiter(store, rate_per_s=settings.rate_per_s)
    rates = {conf.account: 1.0 / max(limiter.interval_s(conf.account), 1e-9) for conf in link.sides.values()}
    enqueuer = None if dry_run else Enqueuer(settings.redis_url)
    bar: list = []

    def on_plan(report) -> None:
        est = report.estimate
        per_account = ", ".join(f"{acc} ~{n} requests" for acc, n in sorted(est.requests.items()))
        click.echo(f"{link.name}: listed " + ", ".join(f"{s} {n} tasks" for s, n in report.listed.items())
                   + f"; {len(report.ambiguous)} ambiguous; "
                   + ("continuing an interrupted backfill; " if report.resumed else "")
                   + f"{report.total} items to handle; {per_account}: about {est.seconds:.0f} s "
                   "at the accounts' rate (comments add one write each)", err=True)
        if not dry_run and report.total:
            bar.append(click.progressbar(length=report.total, label="backfill", file=sys.stderr,
                                         show_eta=True, show_pos=True))
            bar[0].__enter__()

    def on_item(report) -> None:
        if bar:
            bar[0].update(1)

    clients = {side: cli_client(link, side, limiter) for side in link.sides}
    try:
        report = run_backfill(link, clients, store, enqueuer, dry_run=dry_run, rate_per_s=rates,
                              on_plan=on_plan, on_item=on_item)
    except BackfillBusy as exc:
        raise click.ClickException(str(exc)) from exc
    finally:
        if bar:
            bar[0].__exit__(None, None, None)
        for client in clients.values():
            client.close()
        if enqueuer is not None:
            enqueuer.close()
        store.close()
    click.echo(json.dumps(report.as_dict(), ensure_ascii=False))


@main.command("pair")
@click.option("--link", "link_name", required=True)
@click.option("--partner", "partner_task", type=int, required=True, help="the partner's task number")
@click.option("--client", "client_task", type=int, required=True, help="the client's task number")
@click.option("--config", "links_path", default=None)
def pair_command(link_name: str, partner_task: int, client_task: int, links_path: str | None) -> None:
    """Pair two tasks older than the link (a hand copy and its original) as backfill pairs a
    match: the link's owner rules settle their differences, then both are synced."""
    from crosslink.operations.backfill import pair_by_decision

    def decide(link, clients, store, enqueuer) -> dict:
        return pair_by_decision(link, {"partner": partner_task, "client": client_task}, clients, store, enqueuer)

    click.echo(json.dumps(_decision(link_name, links_path, decide), ensure_ascii=False))


@main.command("mirror")
@click.option("--link", "link_name", required=True)
@click.argument("side", type=click.Choice(["partner", "client"]))
@click.argument("task", type=int)
@click.option("--config", "links_path", default=None)
def mirror_command(link_name: str, side: str, task: int, links_path: str | None) -> None:
    """Give a task older than the link a mirror on the other side (it has no hand copy there)."""
    import getpass
    import time

    from crosslink.operations.backfill import mirror_by_decision

    def decide(link, clients, store, enqueuer) -> dict:
        mirror_by_decision(link, side, task, store, enqueuer, by=getpass.getuser(), at=time.time())
        return {"link": link.name, "mirror": f"{side}:{task}", "queued": True}

    click.echo(json.dumps(_decision(link_name, links_path, decide), ensure_ascii=False))


def _decision(link_name: str, links_path: str | None, decide) -> dict:
    """Run DECIDE(link, clients, store, enqueuer) for a person's decision on LINK's tasks."""
    from crosslink.operations.backfill import DecisionRefused
    from crosslink.operations.session import load_link, operator_session
    from crosslink.queue.enqueue import Enqueuer

    try:
        link = load_link(link_name, links_path)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None
    with operator_session(link) as session:
        enqueuer = Enqueuer(session.settings.redis_url)
        try:
            return decide(link, session.clients, session.store, enqueuer)
        except DecisionRefused as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            enqueuer.close()


@main.command()
@click.option("--limit", default=50, show_default=True)
def rejected(limit: int) -> None:
    """Show the newest webhook bodies that were authenticated but unusable."""
    import redis

    from producers.receiver import rejected_events

    client = redis.Redis.from_url(get_settings().redis_url)
    for event in rejected_events(client, limit):
        click.echo(json.dumps(event, ensure_ascii=False))


def _add_area_commands() -> None:
    """Commands kept beside the area they operate: reconcile and beat, dlq, chaos, bench, doctor, health."""
    from crosslink.cli.bench import bench
    from crosslink.cli.chaos import chaos
    from crosslink.cli.dlq import dlq
    from crosslink.cli.reconcile import acknowledge, beat, reconcile
    from crosslink.cli.doctor import doctor
    from crosslink.cli.health import health

    for command in (reconcile, acknowledge, beat, dlq, chaos, bench, doctor, health):
        main.add_command(command)


_add_area_commands()

if __name__ == "__main__":
    main()
