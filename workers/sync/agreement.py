"""What both sides of a task pair agree on once a run has carried its changes: the snapshots the
next runs compare against, and the values still expected from writes Planfix queued.

Why a module of its own: this is the decision every later run of the pair rests on (a key left
out of a snapshot is carried again; a value kept from before is still a person's change to carry
back), and it is easy to get subtly wrong: the chaos suite found concurrent status moves and
reassignments lost when a read-back was agreed wholesale. So it is a pure function of the values
the run read and wrote (agreement), tested on its own (tests/test_agreement.py), apart from the
write that stores its answer (save_agreement) and from the run that gathers its inputs.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from workers.field_diff import changed_fields, echoes, settled
from workers.state import LinkState

Task = tuple[str, int]  # (side, number)


@dataclass(frozen=True)
class Agreement:
    """What a run stores as agreed: a snapshot per task (SNAPSHOTS), and the values still
    expected per task (EXPECTATIONS; a task left out keeps the expectations it has)."""

    snapshots: dict[Task, dict[str, Any]]
    expectations: dict[Task, dict[str, Any]]


def must_read_back(*, read_back: bool, unconfirmed: Collection[str], target_now: Mapping[str, Any] | None,
                   written: Mapping[str, Any]) -> bool:
    """Whether the counterpart must be read again before agreeing: a write whose outcome was not
    simply "applied as sent" (READ_BACK: 202, per-field failures; UNCONFIRMED keys queued), or a
    new counterpart whose status the run does not know (none written, none read)."""
    return read_back or bool(unconfirmed) or (target_now is None and "status" not in written)


def agreement(source: Task, target: Task, *, source_now: Mapping[str, Any], target_now: Mapping[str, Any] | None,
              target_after: Mapping[str, Any], written: Mapping[str, Any],
              target_previous: Mapping[str, Any] | None, target_queued: Mapping[str, Any],
              source_queued: Mapping[str, Any], unconfirmed: Collection[str],
              expected: dict[str, Any]) -> Agreement:
    """What both sides now agree on: SOURCE's task as read (SOURCE_NOW), TARGET's as it showed
    before the run (TARGET_NOW; None when the run created it) and after (TARGET_AFTER: read back,
    or TARGET_NOW plus what was written), WRITTEN (the target values this run wrote and saw
    applied), TARGET_PREVIOUS (the target's snapshot before), the expectations of queued writes on
    either task (TARGET_QUEUED, SOURCE_QUEUED), the source keys whose write Planfix queued
    (UNCONFIRMED) and the target values still expected after this run (EXPECTED).

    The source's snapshot is its state as read (its changes have been carried or lost a
    conflict). The target's snapshot takes only the values this run changed; a field the
    target changed itself keeps its old snapshot value, so the target's own sync run still
    sees that change and carries it back.

    A write Planfix queued (202) is agreed only once seen: the source keys it carried leave
    the source's snapshot (so the next run carries them again, an absolute set), and the
    target values it should produce are remembered; a later run that reads exactly those
    values takes them into the target's snapshot, as if it had written them itself.
    """
    previous = target_previous or {}
    before = target_now or {}
    # Only what this run wrote and saw applied moves the target's snapshot; any other
    # difference in the read-back is a person's edit made meanwhile, which must still show
    # as a change of the target's so that its own run carries it back. (Taking every
    # difference from the read-back lost concurrent status moves and reassignments: the
    # chaos suite found them.) A read-back that differs from what we wrote is such an edit
    # too: the snapshot keeps our value.
    target_snapshot = {}
    for key, value in target_after.items():
        if key in written:
            target_snapshot[key] = (written[key] if changed_fields({key: written[key]}, {key: value})
                                    else value)
        elif key in previous:
            target_snapshot[key] = previous[key]
        elif not previous:
            target_snapshot[key] = before.get(key, value)
        # else left out, as that side's own run left it (a write of its that Planfix queued,
        # not seen yet) or never had it (a field mapped since): that run carries it next.
    target_snapshot.update(echoes(target_after, target_queued))
    source_snapshot = dict(source_now)
    if unconfirmed:
        # Left out of the source's snapshot, they count as changed for its next run, which
        # carries them again whatever they are by then: a person who put back the agreed
        # value meanwhile would otherwise see the queued write land late and stand.
        source_snapshot = {key: value for key, value in source_now.items() if key not in unconfirmed}
    expectations: dict[Task, dict[str, Any]] = {}
    if source_queued:
        # Values expected on the source that it now shows are in its snapshot: agreed.
        expectations[source] = settled(source_queued, source_snapshot)
    # What this run saw replaces older expectations: one not met by now was overwritten by
    # a person (a real change of the target's) or planned again by this very run. Writes
    # Planfix queued that are still to land stay (still_to_land; TaskWriter.applied).
    expectations[target] = expected
    return Agreement({source: source_snapshot, target: target_snapshot}, expectations)


def save_agreement(state: LinkState, agreed: Agreement) -> None:
    """Store AGREED in the link's state (a RunState holds it until the run closes, and saves it
    then in one transaction)."""
    state.save_snapshots(agreed.snapshots)
    for (side, number), values in agreed.expectations.items():
        state.save_queued_expectations(side, number, values)
