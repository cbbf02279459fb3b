"""`crosslink doctor --link X`: the doctor's checks (crosslink/operations/doctor.py), one line each.

The exit status is the verdict: 1 when any check FAILs, so a deploy script can stop on it.
"""

from __future__ import annotations

import sys

import click

from crosslink.operations.doctor import FAIL, LinkUnreadable, doctor_link


@click.command()
@click.option("--link", "link_name", required=True)
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
@click.option("--producer-url", default=None,
              help="the producer's base URL (default: CROSSLINK_PRODUCER_HOST/PORT)")
def doctor(link_name: str, links_path: str | None, producer_url: str | None) -> None:
    """Check a link against its live accounts and the producer: token, scopes, the statuses, users
    and custom fields it names, and a test webhook. One line per check; exit 1 on any FAIL."""
    try:
        link, findings = doctor_link(link_name, links_path, producer_url)
    except LinkUnreadable as exc:
        raise click.ClickException(str(exc)) from None
    for finding in findings:
        click.echo(finding.line())
    failed = sum(1 for finding in findings if finding.level == FAIL)
    click.echo(f"{link.name}: {failed} check(s) failed" if failed else f"{link.name}: every check passed")
    sys.exit(1 if failed else 0)
