"""Tasks: created, partly updated field by field, and read with opt-in `fields`.

The task is what the sync exists to mirror, so here the emulator is strictest about Planfix's
ways: tasks addressed by number (the internal id differs), a create that fails whole on any bad
field (400 code 41) but an update that applies what it can and lists per-field `failures`, status
moves held to the process's transitions, unknown custom fields dropped without a word, and a read
that shows only the fields it asks for.

Leans on other parts through `self`: people and processes (directory), file ids (files), the
per-field failure guard and source fields (base) and the change events (`_emit`).
"""

from __future__ import annotations

import copy
from typing import Any, Callable

from planfix.emulator.timepoints import parse_write, timepoint
from planfix.emulator.world.base import PEOPLE_FIELDS, Account, ApiError, WorldCore, as_int, parse_fields

# The internal task id ({{Задача.Идентификатор}}) differs from the number by this much, so a
# client that confuses the two fails loudly (REST never accepts the internal id).
INTERNAL_ID_OFFSET = 7_000_000

# Plain task fields a write may set, each with the type its value must have.
SIMPLE_TASK_FIELDS = {
    "resultChecking": bool, "duration": int, "durationUnit": str, "durationType": str,
    "overdue": bool, "closeToDeadLine": bool, "notAcceptedInTime": bool, "inFavorites": bool,
    "isSummary": bool, "isSequential": bool, "isDeleted": bool, "hasStartTime": bool,
    "hasEndTime": bool, "additionalDescriptionData": str,
}
# What a task has in these fields until someone writes them; enum-typed ones restricted to the spec's values.
SIMPLE_TASK_DEFAULTS = {"durationUnit": "Day", "durationType": "CalendarDays"}
SIMPLE_TASK_ENUMS = {"durationUnit": ("Minute", "Hour", "Day", "Week", "Month"),
                     "durationType": ("CalendarDays", "WorkerDays")}
# A task's date fields: written as a string or a date object, read back as a timepoint.
DATE_FIELDS = ("dateTime", "startDateTime", "endDateTime", "delayedTillDate")

# How one system field of a task reads: (the world, the task's account, the task) -> the value a
# read shows, None to leave it out. The world is typed Any as this module is one part of World and
# cannot import the whole.
TaskView = Callable[[Any, Account, dict[str, Any]], Any]


class TasksMixin(WorldCore):
    """Every task of the account by number: creating, updating and rendering one."""

    # -- lookup, create, update ---------------------------------------------------------------

    def _task(self, account: Account, number: Any, *, for_update: bool = False) -> dict[str, Any]:
        try:
            task = account.tasks.get(int(number))
        except (TypeError, ValueError):
            task = None
        if task is None:
            where = "for update " if for_update else ""
            raise ApiError(404, 1000, f"Task {where}not found by id {number}")
        return task

    def create_task(self, account_name: str, body: dict[str, Any], *, author: int) -> int:
        """Create a task as AUTHOR (REST token user or a UI user); returns the new task number.

        Any invalid field is a 400 code 41 and nothing is created (Planfix: "Status not find by id").
        """
        with self.lock:
            account = self.account(account_name)
            return self._create_task(account, body, author)

    def _create_task(self, account: Account, body: dict[str, Any], author: int, *,
                     number: int | None = None, emit: bool = True) -> int:
        if not isinstance(body, dict):
            raise ApiError(400, 30, "The request body must be a JSON object")
        if not str(body.get("name") or "").strip():
            raise ApiError(400, 40, "Required parameter is missing: name")
        now = self.clock()
        process_id = body.get("processId")
        if process_id is None and isinstance(body.get("template"), dict):
            template = account.templates.get(as_int(body["template"], "template"))
            process_id = (template or {}).get("processId")
        if process_id is None:
            if not account.processes:
                raise ApiError(400, 41, "The account has no task process")
            process_id = next(iter(account.processes))
        try:
            process = self._process(account, as_int(process_id, "processId"))
        except ValueError as exc:
            raise ApiError(400, 41, str(exc)) from None
        number = number if number is not None else account.next_task
        task: dict[str, Any] = {
            "id": number, "internal_id": number + INTERNAL_ID_OFFSET, "name": "", "description": "",
            "priority": "NotUrgent", "processId": process["id"], "status": process["statuses"][0]["id"],
            "project": None, "template": None, "object": None, "parent": None,
            "assigner": f"user:{author}", "author": author, "counterparty": None,
            "assignees": {"users": [], "groups": []}, "participants": {"users": [], "groups": []},
            "auditors": {"users": [], "groups": []},
            "dateTime": now, "startDateTime": None, "endDateTime": None, "delayedTillDate": None,
            "hasStartTime": False, "hasEndTime": False, "dateOfLastUpdate": now,
            "dateOfLastComment": None, "customFieldData": {}, "files": [],
            "sourceObjectId": None, "sourceDataVersion": None, "isDeleted": False, "type": "Task",
        }
        for key, kind in SIMPLE_TASK_FIELDS.items():
            task.setdefault(key, SIMPLE_TASK_DEFAULTS.get(key, kind()))
        failures = self._apply(account, task, {k: v for k, v in body.items() if k != "processId"},
                               creating=True)
        if failures:
            first = failures[0]
            raise ApiError(400, 41, f"{first['field']}: {first['error']}")
        task["dateOfLastUpdate"] = now
        account.tasks[number] = task
        account.next_task = max(account.next_task, number + 1)
        if emit:
            self._emit(account, "task_created", task, author)
        return number

    def update_task(self, account_name: str, number: Any, body: dict[str, Any], *,
                    author: int) -> list[dict[str, str]]:
        """Partial update as AUTHOR; returns per-field failures (the rest of the body is applied).

        A status outside the task's process, or a move the process's transitions forbid, is a
        failure entry with the status unchanged [verify: what Planfix does for a forbidden move].
        """
        with self.lock:
            account = self.account(account_name)
            task = self._task(account, number, for_update=True)
            if not isinstance(body, dict):
                raise ApiError(400, 30, "The request body must be a JSON object")
            before = copy.deepcopy(task)
            failures = self._apply(account, task, body, creating=False)
            if task != before:
                task["dateOfLastUpdate"] = self.clock()
                self._emit(account, "task_changed", task, author)
            return failures

    def _apply(self, account: Account, task: dict[str, Any], body: dict[str, Any], *,
               creating: bool) -> list[dict[str, str]]:
        failures: list[dict[str, str]] = []
        if "processId" in body:
            self._guard(failures, "processId", lambda: self._set_process(account, task, body["processId"]))
        for key, value in body.items():
            if key in ("id", "processId", "sourceId"):
                continue
            self._guard(failures, key, lambda: self._set_field(account, task, key, value, creating))
        return failures

    # -- field setters ------------------------------------------------------------------------

    def _set_process(self, account: Account, task: dict[str, Any], value: Any) -> None:
        process = self._process(account, as_int(value, "processId"))
        task["processId"] = process["id"]
        if self._status(account, process["id"], task["status"]) is None:
            task["status"] = process["statuses"][0]["id"]

    def _set_field(self, account: Account, task: dict[str, Any], key: str, value: Any,
                   creating: bool) -> None:
        if key in ("name", "description", "priority"):
            self._set_text(task, key, value)
        elif key == "status":
            self._set_status(account, task, value, creating)
        elif key in ("project", "template", "object", "parent"):
            self._set_link(account, task, key, value)
        elif key in ("assigner", "counterparty"):
            task[key] = self._person_ref(account, value) if value else None
        elif key in PEOPLE_FIELDS:
            task[key] = self._people(account, value)
        elif key in (*DATE_FIELDS, "hasStartDate", "hasEndDate"):
            self._set_date(task, key, value)
        elif key in SIMPLE_TASK_FIELDS:
            self._set_simple(task, key, value)
        elif key == "customFieldData":
            self._set_custom_values(account, task, value)
        elif key == "files":
            task["files"] = self._file_ids(account, value)
        elif key in ("sourceObjectId", "sourceDataVersion"):
            self._set_source(task, key, value)

        # Anything else Planfix does not know is ignored, as it ignores it.

    @staticmethod
    def _set_text(task: dict[str, Any], key: str, value: Any) -> None:
        if key in ("name", "description"):
            if not isinstance(value, str):
                raise ValueError(f"{key} must be a string")
        elif value not in ("NotUrgent", "Urgent"):
            raise ValueError("priority is NotUrgent or Urgent")
        task[key] = value

    def _set_status(self, account: Account, task: dict[str, Any], value: Any, creating: bool) -> None:
        status_id = as_int(value, "status id")
        if self._status(account, task["processId"], status_id) is None:
            raise ValueError(f"Status not find by id {status_id}")
        transitions = account.processes[task["processId"]]["transitions"]
        current = task["status"]
        if (not creating and transitions is not None and status_id != current
                and status_id not in transitions.get(current, set())):
            raise ValueError(f"Status change from {current} to {status_id} is not allowed in this process")
        task["status"] = status_id

    @staticmethod
    def _set_link(account: Account, task: dict[str, Any], key: str, value: Any) -> None:
        """project, template/object or parent: a reference to something the account has, or none."""
        if key == "project":
            project = as_int(value, "project id") if value not in (None, {}) else 0
            if project and project not in account.projects:
                raise ValueError(f"Project not found by id {project}")
            task["project"] = project or None
        elif key in ("template", "object"):
            ref = as_int(value, f"{key} id") if value not in (None, {}) else 0
            if ref and account.templates and ref not in account.templates:
                raise ValueError(f"Template not found by id {ref}")
            task[key] = ref or None
        else:
            parent = as_int(value, "parent id") if value not in (None, {}) else 0
            if parent:
                if parent not in account.tasks or parent == task["id"]:
                    raise ValueError(f"Parent task not found by id {parent}")
                cursor: int | None = parent
                while cursor:
                    if cursor == task["id"]:
                        raise ValueError("a task cannot be its own ancestor")
                    cursor = account.tasks[cursor]["parent"]
            task["parent"] = parent or None

    @staticmethod
    def _set_date(task: dict[str, Any], key: str, value: Any) -> None:
        if key in ("hasStartDate", "hasEndDate"):
            if value is False:
                task["startDateTime" if key == "hasStartDate" else "endDateTime"] = None
            return
        if value in (None, ""):
            task[key] = None
            return
        epoch, has_time = parse_write(value)
        task[key] = epoch
        if key == "startDateTime":
            task["hasStartTime"] = has_time
        elif key == "endDateTime":
            task["hasEndTime"] = has_time

    @staticmethod
    def _set_simple(task: dict[str, Any], key: str, value: Any) -> None:
        kind = SIMPLE_TASK_FIELDS[key]
        if kind is int and (isinstance(value, bool) or not isinstance(value, int)):
            raise ValueError(f"{key} must be an integer")
        if kind is not int and not isinstance(value, kind):
            raise ValueError(f"{key} must be a {kind.__name__}")
        if key in SIMPLE_TASK_ENUMS and value not in SIMPLE_TASK_ENUMS[key]:
            raise ValueError(f"{key} must be one of {', '.join(SIMPLE_TASK_ENUMS[key])}")
        task[key] = value

    @staticmethod
    def _set_custom_values(account: Account, task: dict[str, Any], entries: Any) -> None:
        """Partial: only the named fields change. Unknown fields are silently not stored, and list
        fields get no enum check, exactly as live-verified on Planfix."""
        if not isinstance(entries, list):
            raise ValueError("customFieldData must be a list of {field:{id}, value}")
        for entry in entries:
            field_id = as_int((entry or {}).get("field"), "custom field id")
            if field_id not in account.custom_fields:
                continue
            if entry.get("value") is None:
                task["customFieldData"].pop(field_id, None)
            else:
                task["customFieldData"][field_id] = copy.deepcopy(entry["value"])

    # -- rendering ----------------------------------------------------------------------------

    def _status_view(self, account: Account, task: dict[str, Any]) -> dict[str, Any]:
        status = self._status(account, task["processId"], task["status"]) or {"id": task["status"]}
        return {"id": status["id"], "name": status.get("name", ""), "color": status.get("color", "#ffffff"),
                "isActive": bool(status.get("isActive", True))}

    def _custom_view(self, account: Account, field_id: int, value: Any) -> dict[str, Any]:
        spec = account.custom_fields[field_id]
        view = {"field": {"id": field_id, "name": spec.get("name", ""), "type": spec["type"]}, "value": value}
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            view["stringValue"] = str(value)
        return view

    def _render_task(self, account: Account, task: dict[str, Any], fields: str | None, *,
                     everything: bool = False) -> dict[str, Any]:
        names, custom = parse_fields(fields)
        if everything:
            names = set(_TASK_VIEWS)
            custom = sorted(task["customFieldData"])
        out: dict[str, Any] = {"id": task["id"]}
        for name in sorted(names):
            view = _TASK_VIEWS.get(name)  # an unknown field is left out, as Planfix does
            value = view(self, account, task) if view is not None else None
            if value is not None:
                out[name] = value
        known = [field_id for field_id in custom if field_id in account.custom_fields]
        if known:
            out["customFieldData"] = [self._custom_view(account, f, task["customFieldData"].get(f))
                                      for f in known]
        return out

    def get_task(self, account_name: str, number: Any, fields: str | None = None) -> dict[str, Any]:
        with self.lock:
            account = self.account(account_name)
            return self._render_task(account, self._task(account, number), fields)


def _ref(value: Any) -> dict[str, Any] | None:
    return {"id": value} if value else None


def _when(value: float | None) -> dict[str, Any] | None:
    return timepoint(value) if value is not None else None


def _project_view(account: Account, task: dict[str, Any]) -> dict[str, Any] | None:
    project = account.projects.get(task["project"] or 0)
    return {"id": project["id"], "name": project["name"]} if project else None


def _simple_view(key: str) -> TaskView:
    return lambda world, account, task: task[key]


def _people_field_view(key: str) -> TaskView:
    return lambda world, account, task: world._people_view(account, task[key])


def _date_view(key: str) -> TaskView:
    return lambda world, account, task: _when(task[key])


# How each system field of a task reads, by name: a read renders only the fields it asks for.
_TASK_VIEWS: dict[str, TaskView] = {
    **{key: _simple_view(key) for key in ("name", "description", "priority", "processId", "type",
                                          "sourceObjectId", "sourceDataVersion", *SIMPLE_TASK_FIELDS)},
    **{key: _date_view(key) for key in (*DATE_FIELDS, "dateOfLastUpdate", "dateOfLastComment")},
    **{key: _people_field_view(key) for key in PEOPLE_FIELDS},
    "status": lambda world, account, task: world._status_view(account, task),
    "assigner": lambda world, account, task: world._person_view(account, task["assigner"]),
    "counterparty": lambda world, account, task: world._person_view(account, task["counterparty"]),
    "parent": lambda world, account, task: _ref(task["parent"]),
    "template": lambda world, account, task: _ref(task["template"]),
    "object": lambda world, account, task: _ref(task["object"]),
    "project": lambda world, account, task: _project_view(account, task),
    "hasStartDate": lambda world, account, task: task["startDateTime"] is not None,
    "hasEndDate": lambda world, account, task: task["endDateTime"] is not None,
    "files": lambda world, account, task: [world._file_view(account, f) for f in task["files"]
                                           if f in account.files],
    "dataTags": lambda world, account, task: [],
}
