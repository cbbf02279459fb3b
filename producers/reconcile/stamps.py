"""A task's change stamp as the poll reads it from the feed, and when it may count as final.

The stamp (dateOfLastUpdate|dateOfLastComment, crosslink.queue.names.change_stamp) is what the poll
compares with the one a run recorded, to tell whether the task needs a run at all. A second
change within the same second as one a run recorded, whose webhook is lost too, hides behind the
equal stamp until the task changes again; a run records a stamp only when nothing else can hide
behind it (crosslink.queue.names.stamp_seen).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from crosslink.queue.names import change_stamp

# A change stamp counts as final for a poll only if the poll came this long after the stamp's
# second: a later change within the same second, or on a Planfix clock ahead of ours, is then
# impossible to hide behind an equal stamp.
STAMP_SETTLE_S = 60.0


@dataclass(frozen=True)
class Stamp:
    """When a task last changed, as Planfix reported it.

    ``text`` (crosslink.queue.names.change_stamp) is compared for equality; ``epoch`` is set only when
    both dates carried seconds in UTC (dateTimeUtcSeconds), which is what lets a stamp count as
    final; ``comment_epoch`` is the last comment's time, when exact.
    """

    text: str
    epoch: float | None
    comment_epoch: float | None = None

    @property
    def update(self) -> str:
        return self.text.split("|", 1)[0]

    @property
    def comment(self) -> str:
        return self.text.split("|", 1)[1] if "|" in self.text else ""


def exact_epoch(text: str) -> float | None:
    """The epoch of a stamp part written with seconds in UTC (dateTimeUtcSeconds), else None."""
    try:
        return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z").timestamp()
    except ValueError:
        return None


def point_epoch(point: Any) -> float | None:
    """The exact epoch of a Planfix date object (a task's dates, a comment's dateTime), else None."""
    if not isinstance(point, Mapping) or not point.get("dateTimeUtcSeconds"):
        return None
    return exact_epoch(str(point["dateTimeUtcSeconds"]))


def task_stamp(task: Mapping[str, Any]) -> Stamp:
    """The change stamp of a task from dateOfLastUpdate and dateOfLastComment.

    A task never commented has no dateOfLastComment; that counts as exact. A date without
    seconds makes the whole stamp inexact.
    """
    text = change_stamp(task)
    update_epoch = point_epoch(task.get("dateOfLastUpdate"))
    comment_point = task.get("dateOfLastComment")
    comment_epoch = point_epoch(comment_point)
    if update_epoch is None or (comment_point and comment_epoch is None):
        return Stamp(text, None)
    return Stamp(text, max(update_epoch, comment_epoch or update_epoch), comment_epoch)
