"""`crosslink journal`: show a link's record of what crossed, export it, anchor its head in both
accounts now, verify an export (offline, or also against the anchors in the live accounts), audit
it against both accounts.

What the journal is lives in crosslink/journal; the commands parse their options, call
crosslink/operations/journal.py (verify: crosslink.journal.bundle, offline; audit:
crosslink/operations/journal_audit.py) and print.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import click

from crosslink.cli.options import link_named
from crosslink.journal.bundle import verify_file
from crosslink.operations.journal import (
    anchor_now,
    anchoring_lines,
    entry_json,
    entry_line,
    export_journal,
    item_history,
    live_lines,
    numbered,
    open_journal,
    verify_live,
)
from crosslink.operations.journal_audit import audit_deployment
from planfix.errors import PlanfixError


@click.group("journal")
def journal() -> None:
    """The record of everything that crossed, hash-chained, per link."""


@journal.command("show")
@click.option("--link", "link_name", required=True)
@click.option("--side", type=click.Choice(["partner", "client"]), default=None, help="the side TASK is numbered on")
@click.option("--task", type=int, default=None, help="only this task's history, across both sides")
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
@click.option("--json", "as_json", is_flag=True, help="one JSON line per entry")
def show(link_name: str, side: str | None, task: int | None, links_path: str | None, as_json: bool) -> None:
    """List the link's entries in sequence, or one task's, each with the rule version it crossed
    under (v?: rules no stored version holds)."""
    store = open_journal(links_path)
    try:
        entries = numbered(store, link_name, item_history(store, link_name, side, task))
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    finally:
        store.close()
    for entry, version in entries:
        click.echo(json.dumps(entry_json(entry, version), ensure_ascii=False) if as_json else entry_line(entry, version))
    if not entries and not as_json:
        click.echo("no entries", err=True)


@journal.command("export")
@click.option("--link", "link_name", required=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
def export(link_name: str, out: Path, links_path: str | None) -> None:
    """Write the link's journal as one self-contained file (entries, anchors, file hashes, manifest)."""
    store = open_journal(links_path)
    try:
        manifest = export_journal(store, link_name, out)
    finally:
        store.close()
    head = manifest["head"] or {"seq": 0, "hash": "-"}
    click.echo(f"{out}: {manifest['entries']} entries, {manifest['anchors']} anchors, head {head['seq']} "
               f"{head['hash']}")


@journal.command("anchor")
@click.option("--link", "link_name", required=True)
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
def anchor(link_name: str, links_path: str | None) -> None:
    """Post the journal's head on the link's record task in both accounts now; exit 1 if a side failed."""
    link = link_named(link_name, links_path)
    result = anchor_now(link, links_path)
    for line in anchoring_lines(link, result):
        click.echo(line)
    if result.failures:
        sys.exit(1)


@journal.command("verify")
@click.argument("bundle", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--live", is_flag=True, help="also check each anchor against its comment in the live accounts")
@click.option("--config", "links_path", default=None, help="with --live: links.yaml (default CROSSLINK_LINKS)")
def verify(bundle: Path, live: bool, links_path: str | None) -> None:
    """Check an exported journal offline; exit 1 naming the first entry that fails. With --live,
    then read each anchor back from its account: exit 1 naming the side that differs."""
    started = time.monotonic()
    check = verify_file(bundle)
    took = time.monotonic() - started
    if not check.ok:
        click.echo(f"{bundle}: FAILED at {check.first}", err=True)
        sys.exit(1)
    head = check.chain.head or (0, "-")
    click.echo(f"{bundle}: OK, link {check.link}, {check.chain.entries} entries, head {head[0]} {head[1]}, "
               f"checked in {took:.2f} s")
    if not live:
        return
    sides = verify_live(bundle, link_named(check.link, links_path))
    for line in live_lines(sides):
        click.echo(line)
    if not all(side.ok for side in sides.values()):
        sys.exit(1)


@journal.command("audit")
@click.option("--link", "link_name", required=True)
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
@click.option("--json", "as_json", is_flag=True, help="the report as one JSON object")
def audit(link_name: str, links_path: str | None, as_json: bool) -> None:
    """Hold the journal against both accounts: exit 1 when a mirror or note has no entry, an
    entry's target is not there, or the chain is broken (targets people deleted are listed apart)."""
    link = link_named(link_name, links_path)
    try:
        report = audit_deployment(link, links_path)
    except PlanfixError as exc:
        raise click.ClickException(f"reading Planfix failed: {exc}") from None
    if as_json:
        click.echo(json.dumps(report.as_dict(), ensure_ascii=False))
    else:
        for finding in report.findings:
            click.echo(str(finding))
        click.echo(report.summary())
    sys.exit(0 if report.ok else 1)
