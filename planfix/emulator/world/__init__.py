"""The emulator's in-memory Planfix: accounts, their tasks and comments, limits, faults, request log.

The sync is tested, demonstrated and benchmarked against this instead of real accounts, so it
keeps to what API-NOTES.md and the official spec say Planfix does, including the inconvenient
parts: tasks addressed by number, opt-in `fields`, silent 200s for unknown custom fields, per-field
`failures`, 1 req/s and a daily quota per account, deliveries that may fail. Everything HTTP-shaped
lives in app.py; this package is plain Python so tests and the demo can drive it directly.

`World` is put together here from one mixin per resource, each in a module of its own so that
each file holds one concern: accounts (seed, tokens, users), limits (rate, quota, faults, request
log), directory (people, processes, statuses, custom fields), tasks, filters (the task list),
comments, files, checklists, events (scenarios fired by every change). What they share lives in
base, which imports none of them. Callers import from here alone (`from planfix.emulator.world
import World, ApiError`): the names in `__all__`.

One `threading.RLock` guards the whole world, since uvicorn serves it from a thread while tests and
the "web UI" act on it from others.
"""

from __future__ import annotations

import hashlib
from typing import Any

from planfix.emulator.world.accounts import AccountsMixin
from planfix.emulator.world.base import ApiError
from planfix.emulator.world.checklists import ChecklistsMixin
from planfix.emulator.world.comments import CommentsMixin
from planfix.emulator.world.directory import DirectoryMixin
from planfix.emulator.world.events import EventsMixin
from planfix.emulator.world.files import FilesMixin
from planfix.emulator.world.filters import TaskFiltersMixin
from planfix.emulator.world.limits import RATE_WINDOW_S, LimitsMixin
from planfix.emulator.world.tasks import INTERNAL_ID_OFFSET, TasksMixin

# What the emulator's app, the lab and the tests take from the world.
__all__ = ["INTERNAL_ID_OFFSET", "RATE_WINDOW_S", "ApiError", "World"]


class World(AccountsMixin, LimitsMixin, DirectoryMixin, TasksMixin, TaskFiltersMixin, CommentsMixin,
            FilesMixin, ChecklistsMixin, EventsMixin):
    """Every emulated account, plus the request log, faults and the scenario dispatcher."""

    # -- checkers' view -----------------------------------------------------------------------

    def dump_tasks(self, account_name: str) -> list[dict[str, Any]]:
        """Every task with every system field, custom value, comment (deleted ones included),
        checklist item, and card file (with the sha256 of its bytes)."""
        with self.lock:
            account = self.account(account_name)
            dump = []
            for number, task in sorted(account.tasks.items()):
                view = self._render_task(account, task, None, everything=True)
                view["internalId"] = task["internal_id"]
                view["comments"] = [self._render_comment(account, c, None, everything=True)
                                    for _, c in sorted(account.comments.items()) if c["task"] == number]
                view["checklist"] = [self._render_checklist_item(account, item, None, everything=True)
                                     for _, item in sorted(account.checklist.items()) if item["task"] == number]
                # Card files with a digest of their bytes, so a checker can tell a copy is faithful.
                view["files"] = [{**self._file_view(account, f),
                                  "sha256": hashlib.sha256(account.files[f]["content"]).hexdigest()}
                                 for f in task["files"] if f in account.files]
                dump.append(view)
            return dump
