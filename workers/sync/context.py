"""What every step of a sync run shares: which task of which link it carries (RunContext), and
what the run has done so far (SyncReport).

Why a module of its own: the run's steps live in separate modules (comment, checklist and file
mirroring, the notes left for people, the writes to the counterpart), and each takes the same
few things. Passing them as one small value keeps those steps free of the orchestration object,
so none of them reaches back into it; the request gateway and the write-once store are passed
beside it by keyword, as the services a step uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from crosslink.journal.chain import Entry
from schemas.links import Link
from workers.record import Recorder
from workers.state import LinkState


@dataclass
class SyncReport:
    """What one run did, for logs, the demo's narration and tests."""

    link: str
    side: str
    task: int
    counterpart: int | None = None
    outcome: str = "noop"  # created | updated | noop | out_of_scope | parked | missing | rejected
    fields: list[str] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)
    comments_created: int = 0
    comments_updated: int = 0
    comments_withdrawn: int = 0
    notes: int = 0
    parked: list[str] = field(default_factory=list)
    # Tasks to sync again now that this run mirrored their parent: (side, number).
    follow_up: list[tuple[str, int]] = field(default_factory=list)
    # Writes Planfix queued (HTTP 202) and nobody has seen applied yet: read the task back later.
    queued: list[str] = field(default_factory=list)
    # Comments the events named that Planfix no longer has (a recorded no-op), and events
    # rejected because Planfix contradicts them (a comment of another task), with the reason.
    missing: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)

    def summary(self) -> str:
        parts = [f"{self.link} {self.side}#{self.task} -> #{self.counterpart}: {self.outcome}"]
        if self.fields:
            parts.append("fields " + ",".join(sorted(self.fields)))
        if self.statuses:
            parts.append("status " + "->".join(map(str, self.statuses)))
        for label, count in (("comments+", self.comments_created), ("comments~", self.comments_updated),
                             ("withdrawn", self.comments_withdrawn), ("notes+", self.notes)):
            if count:
                parts.append(f"{label}{count}")
        if self.parked:
            parts.append("parked: " + "; ".join(self.parked))
        if self.queued:
            parts.append("queued by Planfix: " + "; ".join(self.queued))
        if self.missing:
            parts.append("gone: " + "; ".join(self.missing))
        if self.rejected:
            parts.append("rejected: " + "; ".join(self.rejected))
        return "  ".join(parts)


@dataclass
class RunContext:
    """The run's task: SIDE's task NUMBER of LINK, carried to the OTHER side; the link's STATE in
    Redis (pairs, snapshots, fingerprints), the REPORT the run fills in, and the link's journal
    (RECORDER; none in unit tests of a run's decisions)."""

    link: Link
    side: str
    number: int
    state: LinkState
    report: SyncReport
    recorder: Recorder | None = None
    # The source task's change stamp as this run read it (crosslink.queue.names.change_stamp):
    # the version its journal entries name, so a retried run records a write once.
    version: str = ""
    other: str = field(init=False)

    def __post_init__(self) -> None:
        self.other = self.link.other(self.side)

    def crossed(self, kind: str, *, source: dict[str, Any], target: dict[str, Any], content: Any, key: str,
                side: str | None = None) -> Entry | None:
        """Record in the journal what crossed from SIDE (the run's, unless named) to the other
        (Recorder.crossed)."""
        if self.recorder is None:
            return None
        return self.recorder.crossed(kind, side or self.side, source=source, target=target, content=content, key=key)

    def head(self) -> tuple[int, str] | None:
        return self.recorder.head() if self.recorder is not None else None
