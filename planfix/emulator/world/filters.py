"""The task list and its filters: which tasks a ComplexTaskFilter list picks.

The reconciliation poller, backfill and the sync's batched reads find tasks through POST /task/list
with filters (by date changed, status, assignee, custom field, parent, number), so the emulator
answers them as Planfix does, and an unsupported filter type is a 400, never a silent match. The
comparisons are shared with the comment list's author filter.

Leans on the tasks part through `self` to render what it picks (`_render_task`).
"""

from __future__ import annotations

from typing import Any

from planfix.emulator.timepoints import date_matches, parse_write
from planfix.emulator.world.base import Account, ApiError, WorldCore, page_bounds


class TaskFiltersMixin(WorldCore):
    """POST /task/list: paging, the filters a sync uses, and the comparisons behind them."""

    def list_tasks(self, account_name: str, body: dict[str, Any]) -> list[dict[str, Any]]:
        with self.lock:
            account = self.account(account_name)
            offset, size = page_bounds(body)
            filters = body.get("filters") or []
            if not isinstance(filters, list):
                raise ApiError(400, 41, "filters must be a list")
            now = self.clock()
            try:
                chosen = [task for _, task in sorted(self._task_candidates(account, filters))
                          if all(self._task_filter(account, task, flt, now) for flt in filters)]
            except (ValueError, TypeError, KeyError) as exc:
                raise ApiError(400, 41, f"Invalid filter: {exc}") from None
            return [self._render_task(account, task, body.get("fields"))
                    for task in chosen[offset:offset + size]]

    @staticmethod
    def _task_candidates(account: Account, filters: list[Any]) -> list[tuple[int, dict[str, Any]]]:
        """The tasks a filter list can match: those named by an "equal" task-number filter (57)
        when there is one (looked up, not scanned: a sync reads its batch that way), else all."""
        for flt in filters:
            if isinstance(flt, dict) and str(flt.get("type")) == "57" and flt.get("operator", "equal") == "equal":
                value = flt.get("value")
                numbers = value if isinstance(value, list) else [value]
                try:
                    wanted = {int(number) for number in numbers}
                except (TypeError, ValueError):
                    break  # _task_filter answers it with a 400
                return [(number, account.tasks[number]) for number in wanted if number in account.tasks]
        return list(account.tasks.items())

    def _task_filter(self, account: Account, task: dict[str, Any], flt: dict[str, Any], now: float) -> bool:
        """Whether TASK passes one ComplexTaskFilter. Unsupported types raise (a 400), never pass."""
        kind = int(flt["type"])
        operator = flt.get("operator", "equal")
        value = flt.get("value")
        if kind in (12, 38, 79, 21):
            moment = {12: task["dateTime"], 38: task["dateOfLastUpdate"], 21: task["dateOfLastComment"],
                      79: max(task["dateOfLastUpdate"], task["dateOfLastComment"] or 0)}[kind]
            return date_matches(moment, operator, value, now)
        if kind in (2, 97, 1):
            if kind == 1:
                actual = {task["assigner"]} if task["assigner"] else set()
            else:
                actual = set(task["assignees"]["users"])
                if kind == 2:
                    actual |= {f"group:{g}" for g in task["assignees"]["groups"]}
            wanted = {str(v) for v in (value if isinstance(value, list) else [value])}
            return self._compare_sets(actual, wanted, operator)
        if kind in (152, 153):
            field_id = int(flt.get("field") or value)
            has = task["customFieldData"].get(field_id) not in (None, "", [])
            return has if kind == 152 else not has
        if 101 <= kind <= 117:
            field_id = int(flt["field"])
            stored = task["customFieldData"].get(field_id)
            if isinstance(value, dict) and "dateType" in value:
                try:
                    epoch = parse_write(stored)[0] if stored is not None else None
                except ValueError:
                    epoch = None
                return date_matches(epoch, operator, value, now)
            if isinstance(stored, dict):
                stored = stored.get("id")
            return self._compare(stored, value, operator)
        if kind == 307:
            root = int(value)
            cursor = task["parent"]
            while cursor:
                if cursor == root:
                    return operator != "notequal"
                cursor = account.tasks[cursor]["parent"] if cursor in account.tasks else None
            return operator == "notequal"
        scalar = {57: task["id"], 10: task["status"], 24: task["processId"], 5: task["project"],
                  51: task["template"] or task["object"], 73: task["parent"]}
        if kind not in scalar:
            raise ValueError(f"filter type {kind} is not supported by the emulator")
        return self._compare(scalar[kind], value, operator)

    @staticmethod
    def _compare_sets(actual: set[str], wanted: set[str], operator: str) -> bool:
        if operator == "equal":
            return bool(actual & wanted)
        if operator == "notequal":
            return not actual & wanted
        raise ValueError(f"operator {operator!r} does not apply to people")

    @staticmethod
    def _compare(actual: Any, value: Any, operator: str) -> bool:
        """equal/notequal accept a list (any of); gt/lt compare numbers, else strings."""
        if operator in ("equal", "notequal"):
            options = value if isinstance(value, list) else [value]
            hit = any(actual is not None and str(actual) == str(option) for option in options)
            return hit if operator == "equal" else not hit
        if actual is None:
            return False
        try:
            left, right = float(actual), float(value)
        except (TypeError, ValueError):
            left, right = str(actual), str(value)
        comparisons = {"gt": left > right, "lt": left < right,
                       "gtAndEqual": left >= right, "ltAndEqual": left <= right}
        if operator not in comparisons:
            raise ValueError(f"operator {operator!r} is not supported")
        return comparisons[operator]
