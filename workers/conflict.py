"""Who wins when both sides changed the same field since the last sync.

Decided per field, not per task: edits to different fields never conflict. When both sides changed
a field, the side the link names as the field's ``owner`` wins; a field without an owner goes to
the source side of the running sync, i.e. the side whose event is being processed - the last event
wins. The losing side's value is then carried back by the winner's own sync run (its change is
still unsynced against its snapshot), so both sides converge on the winner's value.

Assumptions:
- "changed" means changed against the snapshot both sides last agreed on (workers.field_diff).
- A field that did not change on the source has nothing to carry: "skip", whatever the target did.
"""

from __future__ import annotations

from typing import Literal

from schemas.links import Link

Resolution = Literal["apply", "skip"]


def owner_of(link: Link, field: str, source_side: str) -> str | None:
    rule = link.fields.rule_for(field, source_side)
    return rule.owner if rule is not None else None


def resolve(link: Link, field: str, source_side: str, source_changed: bool,
            target_changed: bool) -> Resolution:
    """Whether SOURCE_SIDE's value of canonical FIELD should be written to the counterpart."""
    if not source_changed:
        return "skip"
    if not target_changed:
        return "apply"
    owner = owner_of(link, field, source_side)
    if owner is None or owner == source_side:
        return "apply"
    return "skip"
