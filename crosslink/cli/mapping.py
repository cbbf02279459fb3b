"""`crosslink mapping`: a link's rule versions: the one in force, every one with its approvals,
and a readable diff (between the version in force and links.yaml, or two stored versions).

What a version is lives in crosslink/journal/versions.py; the commands parse their options, call
crosslink/operations/mapping.py and print. `propose` posts links.yaml's rules for approval on both
sides' record tasks; the approvals themselves are given there, in each side's own account.
"""

from __future__ import annotations

import click

from crosslink.journal.versions import VersionRefused
from crosslink.operations.journal import open_journal
from crosslink.operations.mapping import (
    NothingToDiff,
    diff_lines,
    history_lines,
    link_in_file,
    propose,
    show_lines,
    withdraw,
)
from schemas.links import NOTE_LANGUAGES, ConfigError, Link

_config = click.option("--config", "links_path", default=None, help="links.yaml (default CROSSLINK_LINKS)")
_link = click.option("--link", "link_name", required=True)


@click.group("mapping")
def mapping() -> None:
    """A link's rules, versioned: each version approved by the sides it needs before it is in force."""


def _file_link(link_name: str, links_path: str | None) -> Link | None:
    try:
        return link_in_file(link_name, links_path)
    except (ConfigError, OSError) as exc:
        raise click.ClickException(str(exc)) from None


@mapping.command("show")
@_link
@_config
def show(link_name: str, links_path: str | None) -> None:
    """The version in force (number, hash, who approved it and when), the pending proposal if any,
    and whether links.yaml holds the rules in force."""
    link = _file_link(link_name, links_path)
    store = open_journal(links_path)
    try:
        lines = show_lines(store, link_name, link)
    finally:
        store.close()
    for line in lines:
        click.echo(line)


@mapping.command("history")
@_link
@_config
def history(link_name: str, links_path: str | None) -> None:
    """Every version of the link's rules, oldest first, with its state and verdicts."""
    store = open_journal(links_path)
    try:
        lines = history_lines(store, link_name)
    finally:
        store.close()
    for line in lines:
        click.echo(line)


@mapping.command("diff")
@_link
@click.option("--from", "from_number", type=int, default=None, help="a stored version (default: the one in force)")
@click.option("--to", "to_number", type=int, default=None, help="a stored version (default: links.yaml as it is)")
@click.option("--lang", type=click.Choice(NOTE_LANGUAGES), default="en", show_default=True)
@_config
def diff(link_name: str, from_number: int | None, to_number: int | None, lang: str, links_path: str | None) -> None:
    """What changes between the version in force and links.yaml (or two stored versions), in
    sentences: statuses, people and delegation, fields, comment policy, each side's settings."""
    link = _file_link(link_name, links_path) if to_number is None else None
    store = open_journal(links_path)
    try:
        lines = diff_lines(store, link_name, link, from_number, to_number, lang)
    except NothingToDiff as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    for line in lines:
        click.echo(line)


@mapping.command("propose")
@_link
@_config
def propose_command(link_name: str, links_path: str | None) -> None:
    """Propose links.yaml's rules as the link's next version: what they change is posted on both
    sides' record tasks, where each side's approvers approve («approve vN») or reject it."""
    link = _file_link(link_name, links_path)
    if link is None:
        raise click.ClickException(f"no link {link_name} in the links file")
    store = open_journal(links_path)
    try:
        version, told = propose(store, link)
    except VersionRefused as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    needs = ", ".join(sorted(version.needs))
    click.echo(f"version {version.number} proposed (needs {needs}), sha256:{version.rules_hash}")
    for side, record in told.items():
        click.echo(f"  posted on the {side} record task #{record}")


@mapping.command("withdraw")
@_link
@click.option("--version", "number", type=int, required=True, help="the proposal's number")
@_config
def withdraw_command(link_name: str, number: int, links_path: str | None) -> None:
    """Withdraw a proposal that still waits for approvals: the version in force stays."""
    store = open_journal(links_path)
    try:
        version = withdraw(store, link_name, number)
    except VersionRefused as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()
    click.echo(f"version {version.number} {version.state}")
