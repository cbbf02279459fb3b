"""`crosslink mapping`: a link's rule versions: the one in force, every one with its approvals,
and a readable diff (between the version in force and links.yaml, or two stored versions).

What a version is lives in crosslink/journal/versions.py; the commands parse their options, call
crosslink/operations/mapping.py and print. They read only: nothing is proposed or approved here.
"""

from __future__ import annotations

import click

from crosslink.operations.journal import open_journal
from crosslink.operations.mapping import NothingToDiff, diff_lines, history_lines, link_in_file, show_lines
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
