"""Who should be assigned to a task's counterpart: the people of one account, delegated to the other.

Delegation is horizontal: either side may assign anyone of the joint team, and the assignment is
carried across whichever side made it. A person of the source account becomes, in this order:
1. "paired": their counterpart from ``people.pairs`` (the two integration users count as a pair,
   so the sync's own robot stays a robot);
2. "represented": the link's representative for the source side (an account-of-the-target user
   standing for source people without a counterpart; "role:x" resolves to the role's person as
   seen on the target side);
3. "fallback": the target side's fallback assignee;
4. "unassigned": nobody - the person only appears in a note.
Nobody is silently dropped: every source assignee is in the result or named in a note (every
non-paired outcome gets a note naming the real person, so the target side knows who works on it).

Assumptions:
- Person ids ("user:N"/"contact:N") are per account; ``names`` maps the SOURCE side's ids to
  display names (missing names fall back to the id).
- A source assignee who is the stand-in for the target side's unpaired people (the link's
  representative for the target side, resolved on the source side) while the target currently
  has such people (``target_current``) is recorded as "stand-in": those people are kept, so
  representation does not ping-pong; if the stand-in is also paired, the pair is assigned too.
  This is the one outcome without a note: the people it stands for stay, nobody is dropped. With
  nobody to keep (or no target yet), the stand-in is delegated like anyone else.
- A representative who is also paired is ambiguous by nature (the real person or the people they
  stand for?); such a stand-in is resolved to both, so nobody is lost.
- The result is sorted and free of duplicates, like canonical assignees.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from schemas.links import Link

PAIRED, REPRESENTED, FALLBACK, UNASSIGNED, STAND_IN = "paired", "represented", "fallback", "unassigned", "stand-in"


@dataclass(frozen=True)
class Delegation:
    assignees: tuple[str, ...]
    notes: tuple[str, ...]
    outcome: tuple[tuple[str, str, str | None], ...]  # (source id, kind, target id)
    kept: tuple[str, ...] = ()  # target people a stand-in stands for, kept in ``assignees``


def counterpart_person(link: Link, side: str, person: str) -> str | None:
    """SIDE's PERSON as seen on the other side: a declared pair, or robot for robot."""
    other = link.other(side)
    if person == link.sides[side].integration_user:
        return link.sides[other].integration_user
    return link.people.counterpart(side, person)


def resolve_on(link: Link, reference: str | None, on_side: str) -> str | None:
    """A "user:N"/"role:x" reference as a person of ON_SIDE's account.

    A plain "user:N" is taken to be of ON_SIDE already; a role names a person of its own side, and
    is translated through the pairs when that is not ON_SIDE.
    """
    if not reference:
        return None
    if not reference.startswith("role:"):
        return reference
    role = link.people.roles.get(reference[5:])
    if role is None:
        return None
    if role.side == on_side:
        return role.user
    return counterpart_person(link, role.side, role.user)


def stand_in_for(link: Link, side: str) -> str | None:
    """The person of SIDE's account who stands for the OTHER side's unpaired people."""
    return resolve_on(link, link.people.representatives.get(link.other(side)), side)


def delegate(link: Link, source_side: str, source_assignees: Iterable[str],
             names: Mapping[str, str], target_current: Iterable[str] | None = None) -> Delegation:
    """The target side's assignees for SOURCE_SIDE's SOURCE_ASSIGNEES (see the module docstring).

    TARGET_CURRENT is the counterpart's assignees now (None when it does not exist yet).
    """
    target_side = link.other(source_side)
    keepable = sorted({person for person in target_current or ()
                       if counterpart_person(link, target_side, person) is None})
    representative = resolve_on(link, link.people.representatives.get(source_side), target_side)
    fallback = resolve_on(link, link.people.fallback.get(target_side), target_side)
    source_stand_in = stand_in_for(link, source_side)
    label = link.comments.side_labels.get(source_side, source_side)
    assigned: set[str] = set()
    notes: list[str] = []
    outcome: list[tuple[str, str, str | None]] = []
    for person in sorted(set(source_assignees)):
        who = f"{names.get(person, person)} ({person})"
        paired = counterpart_person(link, source_side, person)
        if source_stand_in is not None and person == source_stand_in and keepable:
            if paired is not None:
                assigned.add(paired)
            assigned.update(keepable)
            outcome.append((person, STAND_IN, paired))
        elif paired is not None:
            assigned.add(paired)
            outcome.append((person, PAIRED, paired))
        elif representative is not None:
            assigned.add(representative)
            outcome.append((person, REPRESENTED, representative))
            notes.append(f"Assigned on the {label} side to {who}, who has no counterpart here; "
                         f"represented by {representative}.")
        elif fallback is not None:
            assigned.add(fallback)
            outcome.append((person, FALLBACK, fallback))
            notes.append(f"Assigned on the {label} side to {who}, who has no counterpart here; "
                         f"assigned to {fallback} instead.")
        else:
            outcome.append((person, UNASSIGNED, None))
            notes.append(f"Assigned on the {label} side to {who}, who has no counterpart here "
                         "and no stand-in is configured.")
    kept = tuple(keepable) if any(kind == STAND_IN for _, kind, _ in outcome) else ()
    return Delegation(tuple(sorted(assigned)), tuple(notes), tuple(outcome), kept)


def real_assignee_names(delegation: Delegation, names: Mapping[str, str]) -> str:
    """The text for a side's ``assignee_note_field``: the real people behind stand-ins."""
    return ", ".join(names.get(person, person) for person, kind, _ in delegation.outcome
                     if kind in (REPRESENTED, FALLBACK, UNASSIGNED))
