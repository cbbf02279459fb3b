"""What a side's people decide from their own account, on their link's record task: pause what
their side sends, and resume it.

Each side holds its half of the link: it may stop everything that leaves its own account without
asking the other side or the operator. One of the side's approvers (links.yaml, the side's
`approvers`) writes "pause" as a comment on the side's record task (workers.anchors); from then
on every run of a task of that side is parked, as runs are while access is lost, until an
approver writes "resume": the parked events are then replayed in the order they came. Each is a
journal entry, and a note on the other side's record task tells its people. A side's `send:
paused` in links.yaml holds its runs the same way, as a rule of the link's version.

Why a module of its own: the record task is the one task whose comments are commands, not
correspondence. A run of it is sent here instead of a sync (workers.runner.finish); the commands
are read from it by a pure function (`commands`), each applied once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from schemas.links import Link
from workers.comment_policy import plain_text
from workers.notes import note
from workers.record import Recorder
from workers.state import LinkState

log = logging.getLogger("crosslink.governance")

PAUSE, RESUME = "pause", "resume"
VERBS = (PAUSE, RESUME)
# The comment fields a record task's commands are read from.
COMMAND_FIELDS = "id,description,owner,dateTime,isDeleted"


@dataclass(frozen=True)
class Command:
    """VERB, written by PERSON ("user:N") in comment COMMENT of the side's record task."""

    verb: str
    person: str
    comment: int


def commands(link: Link, side: str, comments: Iterable[Mapping[str, Any]], handled: set[int]) -> list[Command]:
    """The commands in COMMENTS (the record task's, on SIDE) not HANDLED yet, in the order written:
    a comment whose plain text is one of VERBS (case and spaces aside), by one of the side's
    approvers, not deleted. Anything else there is people's talk, never a command."""
    approvers = set(link.sides[side].approvers)
    found = []
    for comment in sorted(comments, key=lambda item: int(item["id"])):
        person = str((comment.get("owner") or {}).get("id", ""))
        verb = plain_text(comment.get("description") or "").strip().lower()
        if (int(comment["id"]) not in handled and not comment.get("isDeleted") and person in approvers
                and verb in VERBS):
            found.append(Command(verb, person, int(comment["id"])))
    return found


def is_paused(link: Link, state: LinkState, side: str) -> bool:
    """Whether SIDE's sending is held: by the link's rules (send.paused) or by its people (pause)."""
    return link.sides[side].send.paused or side in state.paused()


def govern(link: Link, side: str, number: int, *, call: Callable[..., Any], state: LinkState, recorder: Recorder,
           tell: Callable[[str, int, str, str], None], replay: Callable[[], int]) -> list[Command]:
    """Apply the new commands on SIDE's record task NUMBER, read through CALL(method, *args) on
    SIDE's client; TELL(side, task, text, occasion) posts a note once per occasion; REPLAY sends the
    parked events again, in order, and returns how many. Returns the commands applied."""
    comments = call("list_task_comments", number, fields=COMMAND_FIELDS, type_list="Comments")
    applied = commands(link, side, comments, state.governed(side))
    for command in applied:
        _apply(link, side, command, state=state, recorder=recorder, tell=tell, replay=replay)
        state.mark_governed(side, command.comment)
    return applied


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
