"""What an operator asks of the journal: an item's history, and an export either party can keep.

`crosslink journal show` lists a link's entries (or one task's, across both sides: what crossed
from it and into it, with the ids on each side, the delivery receipts); `export` writes the
self-contained bundle that `crosslink journal verify` checks offline (crosslink.journal.bundle).
"""

from __future__ import annotations

from pathlib import Path

from crosslink.base.settings import Settings, get_settings
from crosslink.journal.bundle import build_bundle, write_bundle
from crosslink.journal.chain import Entry
from crosslink.journal.store import Journal, journal_url, utc_now


def open_journal(links_path: str | None = None, settings: Settings | None = None) -> Journal:
    """The deployment's journal: CROSSLINK_JOURNAL_URL, else the SQLite file beside the links file."""
    settings = settings or get_settings()
    return Journal(journal_url(settings, links_path))


def item_history(journal: Journal, link: str, side: str | None = None, task: int | None = None) -> list[Entry]:
    """LINK's entries, or SIDE's task TASK's (what crossed from it, and into it from the other side)."""
    if task is not None and side is None:
        raise ValueError("a task number needs its side (partner or client): numbers repeat across accounts")
    return journal.entries(link, side=side, task=task)


def export_journal(journal: Journal, link: str, out: Path) -> dict:
    """Write LINK's bundle (entries, anchors, file hashes, manifest) to OUT; its manifest."""
    bundle = build_bundle(link, journal.entries(link), journal.anchors(link), utc_now())
    write_bundle(bundle, out)
    return bundle["manifest"]


def entry_line(entry: Entry) -> str:
    """One entry as a line for people: sequence, time, kind, from which ids to which, hashes."""
    source = " ".join(f"{key} {value}" for key, value in sorted(entry.source.items()))
    target = " ".join(f"{key} {value}" for key, value in sorted(entry.target.items()))
    arrow = f"{entry.side} {source} -> {target}" if target else f"{entry.side} {source}"
    return f"{entry.seq:>6}  {entry.at}  {entry.kind:<16} {arrow}  content {entry.content[:12]}  " \
           f"rules {entry.rules[:12]}  hash {entry.hash[:12]}"
