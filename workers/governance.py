"""What a side's people decide from their own account, on their link's record task: pause what
their side sends, and resume it; approve or reject a proposed version of the link's rules.

Each side holds its half of the link: it may stop everything that leaves its own account without
asking the other side or the operator. One of the side's approvers (links.yaml, the side's
`approvers`) writes "pause" as a comment on the side's record task (workers.anchors); from then
on every run of a task of that side is parked, as runs are while access is lost, until an
approver writes "resume": the parked events are then replayed in the order they came. Each is a
journal entry, and a note on the other side's record task tells its people. A side's `send:
paused` in links.yaml holds its runs the same way, as a rule of the link's version.

"approve v3" or "reject v3" there is the side's word on version 3 of the link's rules
(`crosslink mapping propose` posts it on both record tasks): the versions store
(crosslink.journal.versions) says who may give it and when a version comes into force; a word it
refuses is answered with a note saying why.

Why a module of its own: the record task is the one task whose comments are commands, not
correspondence. A run of it is sent here instead of a sync (workers.runner.finish); the commands
are read from it by a pure function (`commands`), each applied once.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from crosslink.journal.versions import MappingVersions, VersionRefused
from schemas.links import Link
from workers.comment_policy import plain_text
from workers.notes import note
from workers.record import Recorder
from workers.state import LinkState

log = logging.getLogger("crosslink.governance")

PAUSE, RESUME, APPROVE, REJECT = "pause", "resume", "approve", "reject"
# "pause", "resume"; "approve v3", "reject 3" (case and spaces aside).
COMMAND = re.compile(r"^(pause|resume)$|^(approve|reject)\s+v?(\d+)$")
# The comment fields a record task's commands are read from.
COMMAND_FIELDS = "id,description,owner,dateTime,isDeleted"


@dataclass(frozen=True)
class Command:
    """VERB, written by PERSON ("user:N") in comment COMMENT of the side's record task."""

    verb: str
    person: str
    comment: int
    version: int | None = None


def commands(link: Link, side: str, comments: Iterable[Mapping[str, Any]], handled: set[int]) -> list[Command]:
    """The commands in COMMENTS (the record task's, on SIDE) not HANDLED yet, in the order written:
    a comment whose plain text is a COMMAND, not deleted, not the robot's; a pause or resume by
    one of the side's approvers (who may approve a version, the versions store decides). Anything
    else there is people's talk, never a command."""
    approvers = set(link.sides[side].approvers)
    found = []
    for comment in sorted(comments, key=lambda item: int(item["id"])):
        person = str((comment.get("owner") or {}).get("id", ""))
        said = COMMAND.match(" ".join(plain_text(comment.get("description") or "").lower().split()))
        if (said is None or int(comment["id"]) in handled or comment.get("isDeleted")
                or person == link.sides[side].integration_user):
            continue
        if said.group(1) and person in approvers:
            found.append(Command(said.group(1), person, int(comment["id"])))
        elif said.group(2):
            found.append(Command(said.group(2), person, int(comment["id"]), int(said.group(3))))
    return found


def is_paused(link: Link, state: LinkState, side: str) -> bool:
    """Whether SIDE's sending is held: by the link's rules (send.paused) or by its people (pause)."""
    return link.sides[side].send.paused or side in state.paused()


@dataclass
class Hands:
    """What applying a command does beyond the state: STATE (Redis), RECORDER (the journal),
    VERSIONS (the rule versions), TELL(side, task, text, occasion) posts a note once per occasion,
    REPLAY sends the parked events again in order (returns how many), IN_FORCE(number) announces a
    version that came into force (its journal entry and anchors: workers.anchors)."""

    state: LinkState
    recorder: Recorder
    versions: MappingVersions
    tell: Callable[[str, int, str, str], None]
    replay: Callable[[], int]
    in_force: Callable[[int], None]


def govern(link: Link, side: str, number: int, *, call: Callable[..., Any], hands: Hands) -> list[Command]:
    """Apply the new commands on SIDE's record task NUMBER, read through CALL(method, *args) on
    SIDE's client. Returns the commands applied."""
    comments = call("list_task_comments", number, fields=COMMAND_FIELDS, type_list="Comments")
    applied = commands(link, side, comments, hands.state.governed(side))
    for command in applied:
        if command.verb in (APPROVE, REJECT):
            _decide(link, side, command, hands)
        else:
            _apply(link, side, command, state=hands.state, recorder=hands.recorder, tell=hands.tell,
                   replay=hands.replay)
        hands.state.mark_governed(side, command.comment)
    return applied


def _decide(link: Link, side: str, command: Command, hands: Hands) -> None:
    """SIDE's word on a version (COMMAND): recorded, or refused with a note saying why; a version
    it brings into force is announced, one that waits for the other side is told there."""
    assert command.version is not None
    decide = hands.versions.approve if command.verb == APPROVE else hands.versions.reject
    here, there = hands.state.record_task(side), hands.state.record_task(link.other(side))
    try:
        recorded = decide(link.name, command.version, side, command.person)
    except VersionRefused as refused:
        if here is not None:
            hands.tell(side, here, note(link, side, "word_refused", version=command.version, why=str(refused)),
                       f"refused:{side}:{command.comment}")
        return
    log.warning("%s %s version %d of the link's rules (%s)", command.person, f"{command.verb}d", command.version,
                recorded.version.state, extra={"link": link.name, "side": side})
    if recorded.activated:
        hands.in_force(command.version)
    elif there is not None:
        hands.tell(link.other(side), there, note(link, link.other(side), f"word_{command.verb}", other=side,
                                                 version=command.version, state=recorded.version.state),
                   f"word:{side}:{command.comment}")


def _apply(link: Link, side: str, command: Command, *, state: LinkState, recorder: Recorder,
           tell: Callable[[str, int, str, str], None], replay: Callable[[], int]) -> None:
    other = link.other(side)
    at = time.time()
    changed = (state.pause(side, {"by": command.person, "at": at, "comment": command.comment})
               if command.verb == PAUSE else state.unpause(side))
    if not changed:
        return  # paused already, or not paused: nothing to tell
    kind = "paused" if command.verb == PAUSE else "unpaused"
    recorder.crossed(kind, side, source={"side": side, "by": command.person, "comment": command.comment},
                     target={}, content={"verb": command.verb, "by": command.person, "at": at},
                     key=f"{side}:{command.comment}")
    replayed = replay() if command.verb == RESUME else 0
    log.warning("%s's sending %s by %s%s", side, kind, command.person,
                f": {replayed} parked events sent again" if command.verb == RESUME else "",
                extra={"link": link.name, "side": side})
    record = state.record_task(other)
    if record is not None:
        tell(other, record, note(link, other, kind, other=side), f"{kind}:{side}:{command.comment}")
