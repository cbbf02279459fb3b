"""A task's checklist: items added, read, renamed, ticked and nested, never deleted.

The sync mirrors checklists between accounts, so the emulator keeps Planfix's checklist rules,
down to the error codes its spec gives (600, 601) and the 405 for a delete. Items of every task
live in one account-wide table keyed by item id; a change to an item is a change of its task,
which is what fires the account's "task changed" scenarios.

Leans on other parts through `self`: the task (`_task`), people (`_people`, `_people_view`), the
per-field failure guard (`_guard`) and the task's change event (`_emit`).
"""

from __future__ import annotations

import copy
from typing import Any

from planfix.emulator.timepoints import timepoint
from planfix.emulator.world.base import Account, ApiError, WorldCore, as_int, page_bounds, parse_fields

# Checklist error codes as the spec's examples give them: 600 item not found (GET/update),
# 601 create failed (name or parent missing/unknown).
CHECKLIST_NOT_FOUND = 600
CHECKLIST_CREATE_FAILED = 601


class ChecklistsMixin(WorldCore):
    """Checklist items of every task in the account, with the spec's codes for what goes wrong."""

    # The spec's ChecklistItem has id, name, isDone, parent (another item), dateTime and
    # assignees; no author and no sourceObjectId/sourceDataVersion, so neither is stored or shown
    # (a sync must keep its own registry of which item mirrors which). Keys Planfix does not know
    # are ignored, as for tasks. Items cannot be deleted: the REST DELETE answers 405
    # (live-verified, API-NOTES section 3). A change to an item is a change of its task.

    def _checklist_item(self, account: Account, task: dict[str, Any], item_id: Any) -> dict[str, Any]:
        try:
            item = account.checklist.get(int(item_id))
        except (TypeError, ValueError):
            item = None
        if item is None or item["task"] != task["id"]:
            raise ApiError(400, CHECKLIST_NOT_FOUND, f"Checklist item not found by id - {item_id}")
        return item

    def _render_checklist_item(self, account: Account, item: dict[str, Any], fields: str | None, *,
                               everything: bool = False) -> dict[str, Any]:
        names, _ = parse_fields(fields)
        full = {"name": item["name"], "isDone": item["isDone"],
                "parent": {"id": item["parent"]} if item["parent"] else None,
                "dateTime": timepoint(item["dateTime"]),
                "assignees": self._people_view(account, item["assignees"])}
        if everything:
            names = set(full)
        out: dict[str, Any] = {"id": item["id"]}
        for name in sorted(names):
            if full.get(name) is not None:
                out[name] = full[name]
        return out

    def _apply_checklist(self, account: Account, task: dict[str, Any], item: dict[str, Any], key: str,
                         value: Any) -> None:
        if key == "name":
            if not isinstance(value, str) or not value.strip():
                raise ValueError("Checklist item name is required")
            item["name"] = value
        elif key == "isDone":
            if not isinstance(value, bool):
                raise ValueError("isDone must be true or false")
            item["isDone"] = value
        elif key == "parent":
            parent = as_int(value, "parent id") if value not in (None, {}) else 0
            if parent:
                cursor: int | None = parent
                while cursor:
                    found = account.checklist.get(cursor)
                    if found is None or found["task"] != task["id"]:
                        raise ValueError(f"Parent task or checklist item not found by id - {parent}")
                    if cursor == item["id"]:
                        raise ValueError("a checklist item cannot be its own ancestor")
                    cursor = found["parent"]
            item["parent"] = parent or None
        elif key == "assignees":
            item["assignees"] = self._people(account, value)

        # Anything else (sourceObjectId included: the spec has no such item field) is ignored.

    def _touch(self, account: Account, task: dict[str, Any], author: int) -> None:
        task["dateOfLastUpdate"] = self.clock()
        self._emit(account, "task_changed", task, author)

    def list_checklist(self, account_name: str, number: Any, body: dict[str, Any]) -> list[dict[str, Any]]:
        """POST /task/{id}/checklist/list: the task's items in id order, paged, fields opt-in."""
        with self.lock:
            account = self.account(account_name)
            task = self._task(account, number)
            offset, size = page_bounds(body)
            items = [item for _, item in sorted(account.checklist.items()) if item["task"] == task["id"]]
            return [self._render_checklist_item(account, item, body.get("fields"))
                    for item in items[offset:offset + size]]

    def get_checklist_item(self, account_name: str, number: Any, item_id: Any,
                           fields: str | None = None) -> dict[str, Any]:
        with self.lock:
            account = self.account(account_name)
            task = self._task(account, number)
            return self._render_checklist_item(account, self._checklist_item(account, task, item_id), fields)

    def create_checklist_item(self, account_name: str, number: Any, body: dict[str, Any], *,
                              author: int) -> int:
        """Add an item to task NUMBER as AUTHOR (REST token user or a person in the UI).

        Any invalid value is a 400 code 601 and nothing is created, as the spec's examples show.
        """
        with self.lock:
            account = self.account(account_name)
            task = self._task(account, number)
            if not isinstance(body, dict):
                raise ApiError(400, 30, "The request body must be a JSON object")
            item: dict[str, Any] = {"id": account.next_checklist_item, "task": task["id"], "name": "",
                                    "isDone": False, "parent": None, "dateTime": self.clock(),
                                    "assignees": {"users": [], "groups": []}, "author": author}
            if "name" not in body:
                raise ApiError(400, CHECKLIST_CREATE_FAILED, "Checklist item name is required")
            for key, value in body.items():
                try:
                    self._apply_checklist(account, task, item, key, value)
                except (ValueError, TypeError) as exc:
                    raise ApiError(400, CHECKLIST_CREATE_FAILED, str(exc)) from None
            account.checklist[item["id"]] = item
            account.next_checklist_item += 1
            self._touch(account, task, author)
            return item["id"]

    def update_checklist_item(self, account_name: str, number: Any, item_id: Any, body: dict[str, Any], *,
                              author: int) -> list[dict[str, str]]:
        """Partial update as AUTHOR; per-field failures, the rest applied (like a task update)."""
        with self.lock:
            account = self.account(account_name)
            task = self._task(account, number)
            item = self._checklist_item(account, task, item_id)
            if not isinstance(body, dict):
                raise ApiError(400, 30, "The request body must be a JSON object")
            before = copy.deepcopy(item)
            failures: list[dict[str, str]] = []
            for key, value in body.items():
                self._guard(failures, key, lambda: self._apply_checklist(account, task, item, key, value))
            if item != before:
                self._touch(account, task, author)
            return failures
