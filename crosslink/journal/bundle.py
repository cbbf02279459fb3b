"""A link's journal as one self-contained file, and its check with nothing else at hand.

`crosslink journal export` writes it; `crosslink journal verify` reads it offline (no Redis, no
Planfix, no database): every entry, the anchors posted in both accounts, the hashes of the files
that crossed, and a manifest naming the head. Either party can keep a copy and check it later.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crosslink.journal.chain import Anchor, Check, Entry, Failure, check_chain

FORMAT = "crosslink-journal/1"


def build_bundle(link: str, entries: Iterable[Entry], anchors: Iterable[Anchor], exported_at: str) -> dict[str, Any]:
    """LINK's bundle: its ENTRIES (in sequence), ANCHORS, the files that crossed (by hash), and a
    manifest with the head."""
    entries, anchors = list(entries), list(anchors)
    files = sorted({entry.content for entry in entries if entry.kind == "file"})
    head = {"seq": entries[-1].seq, "hash": entries[-1].hash} if entries else None
    return {
        "manifest": {"format": FORMAT, "link": link, "exported_at": exported_at, "entries": len(entries),
                     "anchors": len(anchors), "files": len(files), "head": head,
                     "rule_versions": sorted({entry.rules for entry in entries})},
        "entries": [entry.as_dict() for entry in entries],
        "anchors": [anchor.as_dict() for anchor in anchors],
        "files": [{"sha256": digest} for digest in files],
    }


def write_bundle(bundle: Mapping[str, Any], path: Path) -> None:
    path.write_text(json.dumps(bundle, ensure_ascii=False, indent=1, sort_keys=True), encoding="utf-8")


@dataclass
class BundleCheck:
    """What verifying a bundle found; `first` names the first entry (or part) that fails."""

    link: str = ""
    chain: Check = field(default_factory=Check)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.chain.ok and not self.problems

    @property
    def first(self) -> str:
        if self.chain.failures:
            return str(self.chain.failures[0])
        return self.problems[0] if self.problems else ""


def verify_file(path: Path) -> BundleCheck:
    """Verify the bundle at PATH; a file that is not a bundle is a failure, not an error."""
    try:
        bundle = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return BundleCheck(problems=[f"not a readable journal bundle: {exc}"])
    return verify_bundle(bundle)


def verify_bundle(bundle: Any) -> BundleCheck:
    """Check BUNDLE: its format, every entry's place and hash in the chain, every anchor against
    the entry it names, the manifest's head and counts against the entries, and the file list
    against the file entries."""
    try:
        manifest = bundle["manifest"]
        if manifest.get("format") != FORMAT:
            return BundleCheck(problems=[f"format {manifest.get('format')!r} is not {FORMAT!r}"])
        link = manifest["link"]
        entries = [Entry.from_dict(item) for item in bundle["entries"]]
        anchors = [Anchor(**item) for item in bundle["anchors"]]
        files = {item["sha256"] for item in bundle["files"]}
    except (KeyError, TypeError, AttributeError) as exc:
        return BundleCheck(problems=[f"not a journal bundle: missing or malformed {exc}"])
    check = BundleCheck(link=link, chain=check_chain(link, entries, anchors))
    if not check.chain.ok:
        return check
    check.problems += _manifest_problems(manifest, entries, anchors, files)
    return check


def _manifest_problems(manifest: Mapping[str, Any], entries: list[Entry], anchors: list[Anchor],
                       files: set[str]) -> list[str]:
    problems = []
    head = {"seq": entries[-1].seq, "hash": entries[-1].hash} if entries else None
    if manifest.get("head") != head:
        shown = head["seq"] if head else 0
        problems.append(str(Failure(len(entries), shown, f"the manifest's head {manifest.get('head')} is not the "
                                                         f"last entry's: entries were cut off or added")))
    if manifest.get("entries") != len(entries) or manifest.get("anchors") != len(anchors):
        problems.append("the manifest's counts differ from the bundle's entries or anchors")
    crossed = {entry.content for entry in entries if entry.kind == "file"}
    if files != crossed:
        problems.append(f"the file list differs from the file entries: {len(files ^ crossed)} hash(es) differ")
    return problems
