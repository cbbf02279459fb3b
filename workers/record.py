"""What crosses, written to the link's journal (crosslink.journal) as it crosses.

Every write a run makes to the other account (a task created, fields, a status, an assignee, a
comment and each of its versions, a withdrawal, a file, a checklist item) and every note the sync
leaves for people is one entry: source ids and version, target ids, the SHA-256 of what crossed,
and the rule version in force. An entry is keyed by the write it records (the WriteOnce key, or
the update and its values), so a retried run that repeats or finds its write records it once.

Why a module of its own: the run's steps (workers.sync) record in one way, through one
Recorder per link that the process's runtime holds, without knowing where the journal lives.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from crosslink.journal.chain import Entry, content_hash, rule_version
from crosslink.journal.store import Journal
from schemas.links import Link


@dataclass
class Recorder:
    """LINK's journal entries, in JOURNAL."""

    journal: Journal
    link: Link
    rules: str = field(init=False)

    def __post_init__(self) -> None:
        self.rules = rule_version(self.link)

    def crossed(self, kind: str, side: str, *, source: Mapping[str, Any], target: Mapping[str, Any],
                content: Any, key: str) -> Entry:
        """Record that KIND crossed from SIDE (SOURCE ids) to the other side (TARGET ids); CONTENT
        is hashed (bytes as they are, anything else canonical). Once per KEY."""
        return self.journal.append(self.link.name, kind=kind, side=side, source=source, target=target,
                                   content=content_hash(content), rules=self.rules, key=f"{kind}:{key}")

    def head(self) -> tuple[int, str] | None:
        return self.journal.head(self.link.name)


def head_line(head: tuple[int, str] | None) -> str:
    """The journal's head as a note shows it: sequence and hash."""
    seq, digest = head if head is not None else (0, "0" * 64)
    return f"journal #{seq} sha256:{digest}"
