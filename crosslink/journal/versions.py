"""Versions of a link's rules, kept with the journal: proposed, approved by the sides they need,
in force until a newer one is.

Neither company should change the rules of their shared record alone (issue 22). So each
version of a link's rules (crosslink.journal.chain.rules_of: what crosses and who decides, no
deployment details) is stored with its number, hash and state, and every proposal, approval,
rejection and withdrawal on it is kept as an event, with who and when: the evidence of who
agreed to what. A version's state is never set by hand: after each event the link's events are
replayed through crosslink.journal.approvals.decide (pure) and the states it finds are stored.
Version 1 is the rules a link was set up with, approved by both at setup (ensure_first).

Writes for one link are serialised like the journal's appends (SQLite: BEGIN IMMEDIATE;
PostgreSQL: an advisory lock per link), so events keep one order and numbers never repeat. The
tables are in crosslink.journal.store (its metadata, its migrations).
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from crosslink.journal.approvals import (
    ACTIVE,
    APPROVED_VERDICT,
    BOTH,
    PROPOSED,
    REJECTED_VERDICT,
    Approved,
    Event,
    Proposed,
    Rejected,
    Withdrawn,
    decide,
    may_decide,
)
from crosslink.journal.approvals import needs as needed_sides
from crosslink.journal.chain import canonical, content_hash, rules_of
from crosslink.journal.store import Journal, utc_now, version_events_table, versions_table
from schemas.links import SIDES, Link

# Who approved version 1 for each side: the set-up of the link, which both parties agreed to.
SETUP_PERSON = "setup"
WITHDRAWN_EVENT, PROPOSED_EVENT = "withdrawn", "proposed"


class VersionRefused(Exception):
    """A proposal or decision the versions refuse, saying why (for people: the command prints it)."""


@dataclass(frozen=True)
class Verdict:
    """One side's word on a version: approved or rejected, by whom, when."""

    side: str
    verdict: str
    person: str
    at: str


@dataclass(frozen=True)
class Version:
    """One version of a link's rules: its NUMBER, RULES (rules_of's form) and their hash, its
    STATE (crosslink.journal.approvals.STATES), the sides it NEEDS, and the VERDICTS given on it."""

    link: str
    number: int
    rules_hash: str
    rules: Mapping[str, Any]
    state: str
    needs: frozenset[str]
    proposed_at: str
    proposed_by: str | None = None
    activated_at: str | None = None
    closed_at: str | None = None
    verdicts: tuple[Verdict, ...] = ()
    withdrawn_by: str | None = None

    def approvals(self) -> dict[str, Verdict]:
        """Each side's first approval."""
        found: dict[str, Verdict] = {}
        for verdict in self.verdicts:
            if verdict.verdict == APPROVED_VERDICT:
                found.setdefault(verdict.side, verdict)
        return found


@dataclass(frozen=True)
class Recorded:
    """What recording a verdict did: the VERSION as it stands now, whether it was ACTIVATED by this
    verdict (the wiring then journals and announces it) and the number it RETIRED if so."""

    version: Version
    activated: bool = False
    retired: int | None = None


class MappingVersions:
    """The rule versions of every link, in the journal's database (JOURNAL: its engine, migrated)."""

    def __init__(self, journal: Journal):
        self.engine = journal.engine

    # --- reading ----------------------------------------------------------------------------

    def history(self, link: str) -> list[Version]:
        """LINK's versions, oldest first, each with its verdicts."""
        with self.engine.connect() as connection:
            return _versions(connection, link)

    def active(self, link: str) -> Version | None:
        """The version in force (None: the link has none yet)."""
        return next((version for version in self.history(link) if version.state == ACTIVE), None)

    def pending(self, link: str) -> Version | None:
        """The proposal awaiting approvals, if any (there is at most one)."""
        return next((version for version in self.history(link) if version.state == PROPOSED), None)

    def version(self, link: str, number: int) -> Version:
        found = [version for version in self.history(link) if version.number == number]
        if not found:
            raise VersionRefused(f"link {link} has no version {number}")
        return found[0]

    # --- writing ----------------------------------------------------------------------------

    def ensure_first(self, link: Link, at: str | None = None) -> Version:
        """LINK's version in force; when it has no version yet, version 1 is its rules as they are,
        active and approved by both sides at set-up."""
        at = at or utc_now()
        with self.engine.begin() as connection:
            _lock(connection, link.name)
            known = _versions(connection, link.name)
            if known:
                return next((version for version in known if version.state == ACTIVE), known[-1])
            _insert_version(connection, link.name, 1, rules_of(link), BOTH, at, SETUP_PERSON)
            for side in SIDES:
                _insert_event(connection, link.name, 1, APPROVED_VERDICT, side, SETUP_PERSON, at)
            _settle(connection, link.name)
            return _versions(connection, link.name)[0]

    def propose(self, link: str, rules: Mapping[str, Any], needs: Iterable[str] | None = None,
                by: str | None = None, at: str | None = None) -> Version:
        """Propose RULES (rules_of's form) as LINK's next version; the proposal (a pending one with
        the same rules is returned as it stands). It needs the approval of the sides
        approvals.needs names against the version in force; NEEDS may ask more, never fewer.
        A pending proposal with other rules is superseded. Refused: rules equal to those in
        force, another link's rules, or a link with no version yet (ensure_first)."""
        if rules.get("name") != link:
            raise VersionRefused(f"these are the rules of link {rules.get('name')!r}, not {link!r}")
        digest = content_hash(rules)
        with self.engine.begin() as connection:
            _lock(connection, link)
            known = _versions(connection, link)
            active = next((version for version in known if version.state == ACTIVE), None)
            if active is None:
                raise VersionRefused(f"link {link} has no version in force yet: version 1 is recorded when the "
                                     "link is set up")
            if digest == active.rules_hash:
                raise VersionRefused(f"these rules are version {active.number}'s, in force since "
                                     f"{active.activated_at}: there is nothing to propose")
            waiting = next((version for version in known if version.state == PROPOSED), None)
            if waiting is not None and waiting.rules_hash == digest:
                return waiting
            required = needed_sides(active.rules, rules)
            chosen = frozenset(needs) if needs is not None else required
            if not required <= chosen or not chosen <= BOTH:
                raise VersionRefused(f"this change needs the approval of {', '.join(sorted(required))}; "
                                     f"{', '.join(sorted(chosen)) or 'nobody'} is not enough")
            number = max(version.number for version in known) + 1
            _insert_version(connection, link, number, rules, chosen, at or utc_now(), by)
            _settle(connection, link)
            return next(version for version in _versions(connection, link) if version.number == number)

    def approve(self, link: str, number: int, side: str, person: str, at: str | None = None) -> Recorded:
        """PERSON approves version NUMBER for SIDE (approvals.may_decide says who may)."""
        return self._decide(link, number, side, person, APPROVED_VERDICT, at)

    def reject(self, link: str, number: int, side: str, person: str, at: str | None = None) -> Recorded:
        """PERSON rejects version NUMBER for SIDE; a side it needs ends it."""
        return self._decide(link, number, side, person, REJECTED_VERDICT, at)

    def withdraw(self, link: str, number: int, by: str | None = None, at: str | None = None) -> Version:
        """Withdraw the proposal NUMBER (only a proposal that still waits can be withdrawn)."""
        with self.engine.begin() as connection:
            _lock(connection, link)
            version = _one(connection, link, number)
            if version.state != PROPOSED:
                raise VersionRefused(f"version {number} of link {link} is {version.state}: only a proposal that "
                                     "waits for approvals can be withdrawn")
            _insert_event(connection, link, number, WITHDRAWN_EVENT, None, by, at or utc_now())
            _settle(connection, link)
            return _one(connection, link, number)

    def _decide(self, link: str, number: int, side: str, person: str, verdict: str, at: str | None) -> Recorded:
        with self.engine.begin() as connection:
            _lock(connection, link)
            version = _one(connection, link, number)
            if any(given.side == side and given.person == person and given.verdict == verdict
                   for given in version.verdicts):
                return Recorded(version)   # read again (a comment seen twice): recorded once
            if version.state != PROPOSED:
                raise VersionRefused(f"version {number} of link {link} is {version.state}: only a proposal that "
                                     f"waits can be {verdict}")
            in_force = next(known for known in _versions(connection, link) if known.state == ACTIVE)
            refused = may_decide(in_force.rules, version.rules, side, person, verdict)
            if refused:
                raise VersionRefused(refused)
            _insert_event(connection, link, number, verdict, side, person, at or utc_now())
            _settle(connection, link)
            now = _one(connection, link, number)
            activated = now.state == ACTIVE
            return Recorded(now, activated, in_force.number if activated else None)


# --- rows -------------------------------------------------------------------------------------


def _lock(connection: Connection, link: str) -> None:
    """Serialise LINK's version writes (SQLite's BEGIN IMMEDIATE already serialises every write)."""
    if connection.dialect.name == "postgresql":
        connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"),
                           {"key": zlib.crc32(f"crosslink-mapping:{link}".encode())})


def _insert_version(connection: Connection, link: str, number: int, rules: Mapping[str, Any],
                    needed: frozenset[str], at: str, by: str | None) -> None:
    connection.execute(versions_table.insert().values(
        link=link, number=number, rules_hash=content_hash(rules), rules=canonical(rules).decode("utf-8"),
        needs=",".join(sorted(needed)), state=PROPOSED, proposed_at=at, proposed_by=by))
    _insert_event(connection, link, number, PROPOSED_EVENT, None, by, at)


def _insert_event(connection: Connection, link: str, number: int, kind: str, side: str | None,
                  person: str | None, at: str) -> None:
    connection.execute(version_events_table.insert().values(link=link, number=number, kind=kind, side=side,
                                                            person=person, at=at))


def _events(connection: Connection, link: str) -> list[Mapping[str, Any]]:
    query = (sa.select(version_events_table).where(version_events_table.c.link == link)
             .order_by(version_events_table.c.id))
    return list(connection.execute(query).mappings())


def _settle(connection: Connection, link: str) -> None:
    """Store the states decide finds in LINK's events."""
    rows = {row["number"]: row for row in connection.execute(
        sa.select(versions_table).where(versions_table.c.link == link)).mappings()}
    replay: list[Event] = []
    for event in _events(connection, link):
        number, kind = event["number"], event["kind"]
        if kind == PROPOSED_EVENT:
            replay.append(Proposed(number, _needs(rows[number]["needs"]), event["at"]))
        elif kind == WITHDRAWN_EVENT:
            replay.append(Withdrawn(number, event["person"] or "", event["at"]))
        else:
            made = Approved if kind == APPROVED_VERDICT else Rejected
            replay.append(made(number, event["side"], event["person"] or "", event["at"]))
    for number, found in decide(replay).versions.items():
        values = {"state": found.state, "activated_at": found.activated_at, "closed_at": found.closed_at}
        if any(rows[number][key] != value for key, value in values.items()):
            connection.execute(versions_table.update().where(versions_table.c.link == link,
                                                             versions_table.c.number == number).values(**values))


def _needs(text: str) -> frozenset[str]:
    return frozenset(side for side in text.split(",") if side)


def _versions(connection: Connection, link: str) -> list[Version]:
    by_number: dict[int, list[Verdict]] = {}
    withdrawn: dict[int, str | None] = {}
    for event in _events(connection, link):
        if event["kind"] in (APPROVED_VERDICT, REJECTED_VERDICT):
            by_number.setdefault(event["number"], []).append(
                Verdict(event["side"], event["kind"], event["person"] or "", event["at"]))
        elif event["kind"] == WITHDRAWN_EVENT:
            withdrawn[event["number"]] = event["person"]
    query = sa.select(versions_table).where(versions_table.c.link == link).order_by(versions_table.c.number)
    return [Version(link=row["link"], number=row["number"], rules_hash=row["rules_hash"], rules=json.loads(row["rules"]),
                    state=row["state"], needs=_needs(row["needs"]), proposed_at=row["proposed_at"],
                    proposed_by=row["proposed_by"], activated_at=row["activated_at"], closed_at=row["closed_at"],
                    verdicts=tuple(by_number.get(row["number"], ())), withdrawn_by=withdrawn.get(row["number"]))
            for row in connection.execute(query).mappings()]


def _one(connection: Connection, link: str, number: int) -> Version:
    for version in _versions(connection, link):
        if version.number == number:
            return version
    raise VersionRefused(f"link {link} has no version {number}")
