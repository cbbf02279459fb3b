"""What several commands parse the same way: the link named by --link and --config.

Kept apart from crosslink/cli/__init__.py so the area modules (reconcile, ...) can share it
without importing the command group that imports them.
"""

from __future__ import annotations

import click

from crosslink.operations.session import link_in_force
from schemas.links import Link


def link_named(link_name: str, links_path: str | None) -> Link:
    """The link LINK_NAME of LINKS_PATH (else CROSSLINK_LINKS), under the rules in force, as the
    workers run it (link_in_force); an unknown name is the operator's error, naming the links
    there are."""
    try:
        return link_in_force(link_name, links_path)
    except KeyError as exc:
        raise click.ClickException(str(exc.args[0])) from None
