"""What an operator asks of a link's rule versions: the one in force and the one waiting, every
version with who approved it, and what a change would change, in sentences people can sign.

The versions are kept with the journal (crosslink.journal.versions). `crosslink mapping propose`
records links.yaml's rules as the next version and posts what they change on both sides' record
tasks, where the sides' approvers approve or reject it (workers.governance); `withdraw` ends a
proposal. `crosslink mapping show` also says whether links.yaml as it is now holds the rules in
force, a pending proposal, or a change nobody has proposed yet.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from crosslink.journal.approvals import ACTIVE, PROPOSED
from crosslink.journal.chain import content_hash, rules_of
from crosslink.journal.rules import link_from_rules
from crosslink.journal.rules_diff import readable_diff
from crosslink.journal.store import Journal
from crosslink.journal.versions import MappingVersions, Version, VersionRefused
from crosslink.operations.session import load_link, operator_session
from schemas.links import Link
from workers.idempotency import WriteOnce
from workers.notes import label, note
from workers.record import Recorder
from workers.state import LinkState
from workers.sync import post_note

# The hash as a line shows it: long enough to tell versions apart, short enough to read.
SHORT_HASH = 12


class NothingToDiff(Exception):
    """The diff asked for has no side to start from (no version in force yet, an unknown number)."""


def link_in_file(link_name: str, links_path: str | None) -> Link | None:
    """LINK_NAME's link in the links file, or None when the file has no such link (its versions
    are still kept). A file that does not load raises its ConfigError."""
    try:
        return load_link(link_name, links_path)
    except KeyError:
        return None


def show_lines(journal: Journal, link_name: str, link: Link | None) -> list[str]:
    """The version in force (number, hash, who approved it and when), the pending proposal, and how
    LINK (links.yaml's, None: not there) stands against them."""
    versions = MappingVersions(journal)
    history = versions.history(link_name)
    active = next((version for version in history if version.state == ACTIVE), None)
    pending = next((version for version in history if version.state == PROPOSED), None)
    if active is None:
        lines = [f"link {link_name}: no version recorded yet (version 1 is recorded when the link is set up)"]
    else:
        lines = [f"link {link_name}: version {active.number} in force since {active.activated_at}, "
                 f"rules sha256:{active.rules_hash}", *_verdict_lines(active)]
    if pending is not None:
        lines += [f"pending: version {pending.number}, proposed {pending.proposed_at}{_by(pending.proposed_by)}, "
                  f"rules sha256:{pending.rules_hash}", *_verdict_lines(pending)]
    lines.append(_file_line(link_name, link, active, pending))
    return lines


def history_lines(journal: Journal, link_name: str) -> list[str]:
    """Every version of LINK_NAME, oldest first: state, hash, when proposed and by whom, the
    sides it needed, each verdict, and when it was in force."""
    history = MappingVersions(journal).history(link_name)
    if not history:
        return [f"link {link_name}: no version recorded yet"]
    lines = []
    for version in history:
        lines.append(f"version {version.number:<3} {version.state:<10} sha256:{version.rules_hash[:SHORT_HASH]}  "
                     f"proposed {version.proposed_at}{_by(version.proposed_by)}")
        lines += _verdict_lines(version)
        if version.activated_at:
            until = f" until {version.closed_at}" if version.closed_at else ""
            lines.append(f"  in force from {version.activated_at}{until}")
        elif version.closed_at:
            by = _by(version.withdrawn_by) if version.state == "withdrawn" else ""
            lines.append(f"  {version.state} at {version.closed_at}{by}")
    return lines


def diff_lines(journal: Journal, link_name: str, link: Link | None, from_number: int | None = None,
               to_number: int | None = None, lang: str = "en") -> list[str]:
    """The readable diff from version FROM_NUMBER (default: the one in force) to TO_NUMBER
    (default: LINK, the rules in links.yaml now), in LANG."""
    versions = MappingVersions(journal)
    old_label, old = _rules_of_version(versions, link_name, from_number)
    if to_number is not None:
        new_label, new = _rules_of_version(versions, link_name, to_number)
    elif link is not None:
        new_label, new = "links.yaml", rules_of(link)
    else:
        raise NothingToDiff(f"link {link_name} is not in the links file: name a version with --to")
    return [f"{old_label} -> {new_label}", *readable_diff(old, new, lang)]


def _rules_of_version(versions: MappingVersions, link_name: str, number: int | None) -> tuple[str, Mapping[str, Any]]:
    try:
        version = versions.version(link_name, number) if number is not None else versions.active(link_name)
    except VersionRefused as exc:
        raise NothingToDiff(str(exc)) from None
    if version is None:
        raise NothingToDiff(f"link {link_name} has no version in force yet: name one with --from")
    return f"version {version.number} ({version.state})", version.rules


def _verdict_lines(version: Version) -> list[str]:
    needed = ", ".join(sorted(version.needs))
    given = [f"{verdict.verdict} for {verdict.side} by {verdict.person} at {verdict.at}" for verdict in version.verdicts]
    lines = [f"  needs: {needed}"]
    lines += [f"  {line}" for line in given] or ["  no verdict yet"]
    awaiting = sorted(version.needs - set(version.approvals()))
    if version.state == PROPOSED and awaiting:
        lines.append(f"  awaiting: {', '.join(awaiting)}")
    return lines


def _file_line(link_name: str, link: Link | None, active: Version | None, pending: Version | None) -> str:
    if link is None:
        return f"links.yaml: no link {link_name}"
    digest = content_hash(rules_of(link))
    if active is not None and digest == active.rules_hash:
        return f"links.yaml: the rules in force (version {active.number})"
    if pending is not None and digest == pending.rules_hash:
        return f"links.yaml: the rules of pending version {pending.number}, not in force until approved"
    if active is None:
        return f"links.yaml: rules sha256:{digest}"
    return (f"links.yaml: rules sha256:{digest[:SHORT_HASH]} differ from those in force and are not proposed; "
            f"what they would change: crosslink mapping diff --link {link_name}")


def _by(person: str | None) -> str:
    return f" by {person}" if person else ""


def propose(journal: Journal, link: Link, by: str = "operator",
            env: Mapping[str, str] | None = None) -> tuple[Version, dict[str, int]]:
    """Record LINK's rules (links.yaml's) as the next version of its rules and post what they
    change, in each side's language, on both record tasks, once; the proposal and the record task
    each side was told on. ENV holds the settings and tokens (default: this process's). Raises
    VersionRefused (nothing to propose, no version in force yet)."""
    versions = MappingVersions(journal)
    version = versions.propose(link.name, rules_of(link), by=by)
    in_force = versions.active(link.name)
    assert in_force is not None  # propose refuses a link with none
    told: dict[str, int] = {}
    with operator_session(link, env) as session:
        state, writes = LinkState(session.store, link.name), WriteOnce(session.store)
        recorder = Recorder(journal, link_from_rules(in_force.rules, link))
        for side in link.sides:
            record = state.record_task(side)
            if record is None:
                raise VersionRefused(f"link {link.name} has no record task in the {side} account yet: a worker "
                                     "makes it when it starts")
            lines = readable_diff(in_force.rules, version.rules, link.sides[side].language)
            text = note(link, side, "proposal", version=version.number, diff="<br>" + "<br>".join(lines) + "<br>",
                        needs=", ".join(label(link, needed) for needed in sorted(version.needs)))
            client = session.clients[side]
            post_note(lambda method, *args, client=client, **kwargs: getattr(client, method)(*args, **kwargs),
                      writes, link, side, record, text, f"proposal:{version.number}:{version.rules_hash}", recorder)
            told[side] = record
    return version, told


def withdraw(journal: Journal, link_name: str, number: int, by: str = "operator") -> Version:
    """End the proposal NUMBER of LINK_NAME's rules (VersionRefused when it no longer waits)."""
    return MappingVersions(journal).withdraw(link_name, number, by=by)

