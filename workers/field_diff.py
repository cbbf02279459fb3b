"""What changed on a task since the last sync, and which way each field may flow.

A sync run carries only what its side changed since the last state both sides agreed on (the
snapshot). Comparing against the snapshot instead of the counterpart is what lets the two sides
edit different fields at the same time without overwriting each other.

Assumptions:
- Canonical values come from workers.canonical, so equal values compare equal; tuples and lists
  are treated as the same (a snapshot read back from JSON has lists where a fresh view may not).
- No snapshot means "never synced": every field counts as changed.
- A key present on one side of the comparison only counts as changed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from schemas.links import Link

# Directions under which a field read on the given side flows to the other one.
FLOWS_FROM = {
    "partner": frozenset({"both", "partner_to_client"}),
    "client": frozenset({"both", "client_to_partner"}),
}


def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    return value


def changed_fields(previous: Mapping[str, Any] | None, current: Mapping[str, Any]) -> set[str]:
    """The canonical keys whose value differs between PREVIOUS (a snapshot, or None) and CURRENT."""
    if previous is None:
        return set(current)
    keys = set(previous) | set(current)
    missing = object()
    return {key for key in keys
            if _plain(previous.get(key, missing)) != _plain(current.get(key, missing))}


# In a map of expected values, the values of KEY sent before its last one in the same run (the
# steps of a status path) are listed under ALTERNATIVES + KEY: any of them may be what landed.
ALTERNATIVES = "~"
# ... and the last value of KEY that Planfix queued (HTTP 202) under QUEUED + KEY. Such a write is
# sure to land, later and after those queued before it (API-NOTES section 3); any other expected
# value may never have been applied (its answer lost, its run killed).
QUEUED = "^"


def _base(key: str) -> str:
    return key.removeprefix(ALTERNATIVES).removeprefix(QUEUED)


def echoes(now: Mapping[str, Any], expected: Mapping[str, Any]) -> dict[str, Any]:
    """The keys of NOW whose value is one the sync's own unagreed writes should give them
    (EXPECTED: a write Planfix queued, or writes sent by a run that has not agreed on them: LinkState.expect_ahead), with that value."""
    found = {}
    for key, value in now.items():
        candidates = ([expected[key]] if key in expected else []) + list(expected.get(ALTERNATIVES + key, ()))
        if any(not changed_fields({key: candidate}, {key: value}) for candidate in candidates):
            found[key] = value
    return found


def landed_unagreed(expected: Mapping[str, Any], now: Mapping[str, Any],
                    agreed: Mapping[str, Any] | None) -> dict[str, Any]:
    """The echoes in NOW of the sync's own unagreed writes (EXPECTED) that no run agreed on
    yet (AGREED: the task's snapshot, None before any): what a write whose answer was lost, or
    whose run was killed, gave the task, found by the first run that reads it."""
    return {key: value for key, value in echoes(now, expected).items()
            if changed_fields({key: value}, {key: (agreed or {}).get(key)})}


def agreed_with_echoes(snapshot: Mapping[str, Any] | None, now: Mapping[str, Any],
                       expected: Mapping[str, Any]) -> dict[str, Any] | None:
    """SNAPSHOT, with every key whose value NOW is an echo of the sync's own writes (echoes)
    taking that value. Taken as a person's change, an echo was carried back and undid the write
    it echoed (a stand-in delegated back as a real assignee; a status path's middle step moving
    the source back)."""
    if snapshot is None:
        return None
    return {**snapshot, **echoes(now, expected)}


def settled(expected: Mapping[str, Any], now: Mapping[str, Any]) -> dict[str, Any]:
    """EXPECTED without the keys (and their alternatives) NOW shows an echo of: those writes landed."""
    landed = echoes(now, expected)
    return {key: value for key, value in expected.items() if _base(key) not in landed}


def entries_of(expected: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """EXPECTED's entries for KEYS: their values, alternatives and queued marks."""
    keys = set(keys)
    return {key: value for key, value in expected.items() if _base(key) in keys}


def without_entries(expected: Mapping[str, Any], keys: Iterable[str]) -> dict[str, Any]:
    """EXPECTED less its entries for KEYS."""
    keys = set(keys)
    return {key: value for key, value in expected.items() if _base(key) not in keys}


def with_queued(sent: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """SENT after a write of VALUES that Planfix queued (with_sent, each key marked QUEUED)."""
    merged = with_sent(sent, values)
    merged.update({QUEUED + key: value for key, value in values.items()})
    return merged


def still_to_land(expected: Mapping[str, Any], now: Mapping[str, Any],
                  agreed: Mapping[str, Any] | None) -> dict[str, Any]:
    """The values writes Planfix queued (EXPECTED's QUEUED keys) are still to give a task that
    shows NOW: each such key whose queued value NOW does not show, while it shows the value AGREED
    on or an earlier one of ours, as before a queued write lands. A run plans from the task as it
    will be once they land: it shows 12 with a queued 13 behind, and a source moved to 12 must
    still be sent (quick chaos seed 6: a run that saw 12 wrote nothing, the 13 landed later and
    was carried back as the client's move). A value nothing of ours explains is a person's, left
    to the usual comparison."""
    landing = {}
    for key, value in expected.items():
        if not key.startswith(QUEUED):
            continue
        field = key.removeprefix(QUEUED)
        shown = now.get(field)
        if not changed_fields({field: value}, {field: shown}):
            continue
        ours = [*([agreed[field]] if agreed and field in agreed else []),
                *expected.get(ALTERNATIVES + field, ()),
                *([expected[field]] if field in expected else [])]
        if any(not changed_fields({field: candidate}, {field: shown}) for candidate in ours):
            landing[field] = value
    return landing


def with_sent(sent: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """SENT (expected values, as above) after a write of VALUES: a key written again keeps its
    earlier values as alternatives."""
    merged = dict(sent)
    for key, value in values.items():
        if key in merged and changed_fields({key: merged[key]}, {key: value}):
            merged[ALTERNATIVES + key] = [*merged.get(ALTERNATIVES + key, ()), merged[key]]
        merged[key] = value
    return merged


def flows(link: Link, field: str, source_side: str) -> bool:
    """Whether canonical FIELD read on SOURCE_SIDE is carried to the other side.

    ``field`` is a canonical key ("name", "assignees", "status", "cf:<source side id>"); a custom
    field the link does not map never flows.
    """
    rule = link.fields.rule_for(field, source_side)
    return rule is not None and rule.direction in FLOWS_FROM[source_side]
