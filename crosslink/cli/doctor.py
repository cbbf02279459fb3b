"""`crosslink doctor --link X`: the doctor's checks (crosslink/operations/doctor.py), one line each.

The exit status is the verdict: 1 when any check FAILs, so a deploy script can stop on it; a
warning (rules in links.yaml not approved yet) is counted but does not fail it.
"""

from __future__ import annotations

import sys

import click

from crosslink.operations.doctor import FAIL, WARN, LinkUnreadable, doctor_link


@click.command()
@click.option("--link", "link_name", required=True)
@click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
@click.option("--producer-url", default=None,
              help="the producer's base URL (default: CROSSLINK_PRODUCER_HOST/PORT)")
def doctor(link_name: str, links_path: str | None, producer_url: str | None) -> None:
    """Check a link against its live accounts and the producer: token, scopes, the statuses, users
    and custom fields it names, a test webhook, and whether links.yaml holds the rule version in
    force. One line per check; exit 1 on any FAIL (a warning does not fail)."""
    try:
        link, findings = doctor_link(link_name, links_path, producer_url)
    except LinkUnreadable as exc:
        raise click.ClickException(str(exc)) from None
    for finding in findings:
        click.echo(finding.line())
    failed = sum(1 for finding in findings if finding.level == FAIL)
    warned = sum(1 for finding in findings if finding.level == WARN)
    verdict = f"{failed} check(s) failed" if failed else "every check passed"
    click.echo(f"{link.name}: {verdict}" + (f", {warned} warning(s)" if warned else ""))
    sys.exit(1 if failed else 0)
