"""The journal's chain, pure: canonical form, content hashes, sealing an entry, checking a chain.

An entry's hash is the SHA-256 of the canonical JSON of every other field, the previous entry's
hash among them, so an entry cannot change, move or vanish without every later hash changing; an
anchor (the head's sequence and hash posted in both accounts) pins the chain up to that point in
places neither party alone can rewrite. Nothing here does I/O.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from schemas.links import Link

# The previous hash of a link's first entry.
GENESIS = "0" * 64
# What an entry records. Each is one crossing, or a change of the link's own state.
KINDS = ("task created", "field change", "status", "assignee", "comment", "comment version", "withdrawn", "file",
         "checklist item", "severed", "resumed", "mapping version", "note", "anchor")
# A link side's settings that are deployment, not rules: changing them changes nothing that crosses.
DEPLOYMENT_KEYS = ("base_url", "account", "token_env", "webhook_secret_env", "webhook_auth")
# A side's rules added after links had rule versions, as their defaults read in plain form: left
# out of the rules while unset, so an existing link's rule version does not change on upgrade.
UNSET_SIDE_KEYS: Mapping[str, Any] = {"send": {"paused": False, "exclude_comments": None, "exclude_tasks": []},
                                      "approvers": []}


def canonical(value: Any) -> bytes:
    """VALUE as canonical JSON: keys sorted, no spaces, UTF-8 (the form every hash is taken of)."""
    return json.dumps(_plain(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def content_hash(value: Any) -> str:
    """SHA-256 (hex) of VALUE: bytes as they are (a file), anything else in its canonical form."""
    return hashlib.sha256(value if isinstance(value, bytes) else canonical(value)).hexdigest()


def rules_of(link: Link) -> dict[str, Any]:
    """LINK's rules as plain JSON data: statuses, people, fields, comment policy and each side's
    scope, creation, language, sending controls and approvers, without its deployment details
    (URLs, accounts, environment variable names; secrets are never in the model). This is what a
    version of the link's rules holds (crosslink.journal.versions) and what rule_version hashes.

    A side's ``send`` and ``approvers`` are left out while they are the defaults, so that a link
    written before they existed keeps its rule version: an upgrade is not a change of rules."""
    rules = _plain(link)
    for side in rules["sides"].values():
        for key in DEPLOYMENT_KEYS:
            side.pop(key, None)
        for key, default in UNSET_SIDE_KEYS.items():
            if side.get(key) == default:
                side.pop(key)
    return rules


def rule_version(link: Link) -> str:
    """The hash of LINK's rules (rules_of): a new URL or token variable is not a new rule version."""
    return content_hash(rules_of(link))


def _plain(value: Any) -> Any:
    """VALUE as JSON types: dataclasses and mappings as objects, sequences as lists, sets sorted."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (set, frozenset)):
        return sorted(_plain(item) for item in value)
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


@dataclass(frozen=True)
class Entry:
    """One journal entry. SOURCE and TARGET name the ids on each side (task, comment, file,
    version); CONTENT is the SHA-256 of what crossed in its canonical form (files: their bytes)."""

    link: str
    seq: int
    at: str
    kind: str
    side: str
    source: Mapping[str, Any]
    target: Mapping[str, Any]
    content: str
    rules: str
    prev: str
    hash: str = ""

    def body(self) -> dict[str, Any]:
        """Every field but the hash: what the hash is taken of."""
        return {name: _plain(getattr(self, name)) for name in
                ("link", "seq", "at", "kind", "side", "source", "target", "content", "rules", "prev")}

    def as_dict(self) -> dict[str, Any]:
        return {**self.body(), "hash": self.hash}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Entry:
        return cls(**{name: data[name] for name in
                      ("link", "seq", "at", "kind", "side", "source", "target", "content", "rules", "prev", "hash")})


def seal(entry: Entry) -> Entry:
    """ENTRY with its hash."""
    return dataclasses.replace(entry, hash=hashlib.sha256(canonical(entry.body())).hexdigest())


def next_entry(head: tuple[int, str] | None, *, link: str, at: str, kind: str, side: str,
               source: Mapping[str, Any], target: Mapping[str, Any], content: str, rules: str) -> Entry:
    """The sealed entry that follows HEAD (the link's last sequence and hash; None: none yet)."""
    if kind not in KINDS:
        raise ValueError(f"unknown journal entry kind {kind!r}; known: {', '.join(KINDS)}")
    seq, prev = head if head is not None else (0, GENESIS)
    return seal(Entry(link, seq + 1, at, kind, side, dict(source), dict(target), content, rules, prev))


@dataclass(frozen=True)
class Anchor:
    """The journal's head as posted in one account: sequence and hash, where (side, task, comment)."""

    link: str
    seq: int
    hash: str
    at: str
    side: str
    task: int | None = None
    comment: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class Failure:
    """The first thing wrong with a chain: at which entry (its position in the list, 1-based) and why."""

    position: int
    seq: int | None
    reason: str

    def __str__(self) -> str:
        where = f"entry {self.position}" + (f" (seq {self.seq})" if self.seq is not None else "")
        return f"{where}: {self.reason}"


@dataclass
class Check:
    """What checking a chain found: its head, and the first failure if any."""

    entries: int = 0
    head: tuple[int, str] | None = None
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures


def check_chain(link: str, entries: Iterable[Entry], anchors: Iterable[Anchor] = ()) -> Check:
    """Check that ENTRIES are LINK's chain, whole from its first entry and unaltered, and that each
    of ANCHORS names an entry of it by its sequence and hash. Stops at the first broken entry:
    what follows it cannot be trusted either."""
    check = Check()
    prev, seq = GENESIS, 0
    hashes: dict[int, str] = {}
    for position, entry in enumerate(entries, start=1):
        problem = _entry_problem(link, entry, seq, prev)
        if problem:
            check.failures.append(Failure(position, entry.seq, problem))
            return check
        seq, prev = entry.seq, entry.hash
        hashes[seq] = prev
        check.entries = position
    check.head = (seq, prev) if seq else None
    for anchor in anchors:
        failure = _anchor_problem(anchor, hashes, seq)
        if failure:
            check.failures.append(failure)
            return check
    return check


def _entry_problem(link: str, entry: Entry, seq: int, prev: str) -> str:
    if entry.link != link:
        return f"belongs to link {entry.link!r}, not {link!r}"
    if entry.seq != seq + 1:
        return f"sequence {entry.seq} follows {seq}: an entry is missing, inserted or out of order"
    if entry.prev != prev:
        return "its previous hash is not the previous entry's: an entry before it was changed, removed or moved"
    if seal(entry).hash != entry.hash:
        return "its hash does not match its content: the entry was edited"
    if entry.kind not in KINDS:
        return f"unknown kind {entry.kind!r}"
    return ""


def _anchor_problem(anchor: Anchor, hashes: Mapping[int, str], last: int) -> Failure | None:
    if anchor.seq > last:
        return Failure(last + 1, anchor.seq, f"anchored in the {anchor.side} account at {anchor.at} but missing: "
                                             f"the journal was cut off after sequence {last}")
    if hashes.get(anchor.seq) != anchor.hash:
        position = sorted(hashes).index(anchor.seq) + 1 if anchor.seq in hashes else 0
        return Failure(position, anchor.seq, f"its hash differs from the one anchored in the {anchor.side} "
                                             f"account at {anchor.at}: the journal was rewritten up to here")
    return None
