"""One normalised view of a Planfix task, so the decisions compare values and not API shapes.

Planfix returns TimePoint objects, people as {"id","name"} under users/groups, custom fields as
{field:{id,name,type}, value, stringValue}, and omits whatever was not asked for. The decision
modules need plain, comparable, JSON-serialisable values that survive a round trip through the
snapshot store unchanged; so lists (never tuples) are used throughout, and a value read twice from
an unchanged task yields an identical dict.

Canonical keys: name, description, priority, start_date, end_date, status, assignees, parent and
"cf:<id>" for each custom field the link maps on that side (plus the side's assignee note field).

Assumptions:
- Dates are compared and written as "dd-MM-yyyy HH:mm" from the TimePoint's date and time, i.e. in
  the integration user's timezone; both integration users are expected to share one timezone
  [verify]. A date without a time reads as 00:00.
- Only employees and contacts count as assignees; groups are not mirrored (they are per account).
- Custom values are reduced to what identifies them: {"id": x} for directory/people entries,
  {"date": d} for dates, scalars as they are (integral floats as ints), lists item by item, and an
  empty string or empty list as None. These reduced shapes are also valid write shapes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from schemas.links import Link
from workers.state import record_source_id

# Always fetched: identification, routing and the registry markers the sync relies on, and the
# last comment's date (a task that never had a comment needs no comment list: workers.hints).
# dateTime is the task's creation: an unpaired task older than the link waits for a decision
# (workers.plan.older_than_link); isDeleted: a paired task in the trash is no longer followed.
BASE_FIELDS = ("id", "status", "processId", "assignees", "parent", "project", "template",
               "sourceObjectId", "sourceDataVersion", "dateOfLastUpdate", "dateOfLastComment", "dateTime",
               "isDeleted")
# Canonical key -> the Planfix system field(s) it is read from.
SYSTEM_SOURCES = {
    "name": ("name",),
    "description": ("description",),
    "priority": ("priority",),
    "start_date": ("startDateTime", "hasStartDate"),
    "end_date": ("endDateTime", "hasEndDate"),
}
DEFAULT_PRIORITY = "NotUrgent"


def custom_ids(link: Link, side: str) -> list[int]:
    """The custom field ids of SIDE the link reads: mapped fields, the note field, the scope's field."""
    ids = [rule.id_on(side) for rule in link.fields.custom if rule.direction != "none"]
    conf = link.sides[side]
    if conf.assignee_note_field is not None:
        ids.append(conf.assignee_note_field)
    if conf.scope.kind in ("custom_field", "tag") and conf.scope.field is not None:
        ids.append(conf.scope.field)
    return sorted(set(ids))


def task_fields(link: Link, side: str) -> list[str]:
    """The `fields` list to request for SIDE's tasks: only what the link maps or needs."""
    wanted = list(BASE_FIELDS)
    for key, sources in SYSTEM_SOURCES.items():
        if link.fields.rules[key].direction != "none":
            wanted.extend(sources)
    if link.sides[side].scope.kind == "participant":
        wanted.append("participants")
    if link.fields.files.direction in ("both", f"{side}_to_{link.other(side)}"):
        # The card's files come with the task, so a run that looks at them pays no second
        # request (workers.sync.files.sync_task_files).
        wanted.append("files")
    wanted.extend(str(field_id) for field_id in custom_ids(link, side))
    return list(dict.fromkeys(wanted))


def _date(point: Any, present: Any) -> str | None:
    if present is False or not isinstance(point, Mapping) or not point.get("date"):
        return None
    return f"{point['date']} {point.get('time') or '00:00'}"


def _people(block: Any) -> list[str]:
    if not isinstance(block, Mapping):
        return []
    ids = {str(person["id"]) for person in block.get("users") or [] if isinstance(person, Mapping) and person.get("id")}
    return sorted(ids)


def ref_id(value: Any) -> int | None:
    """The integer id of a Planfix reference ({"id": N} or N), or None."""
    if isinstance(value, Mapping):
        value = value.get("id")
    try:
        return int(value) or None
    except (TypeError, ValueError):
        return None


def normalise_value(value: Any) -> Any:
    """A custom field value reduced to a comparable, writable shape (see the module docstring)."""
    if value is None or value == "" or value == []:
        return None
    if isinstance(value, bool) or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else value
    if isinstance(value, Mapping):
        if "id" in value:
            return {"id": value["id"]}
        if "date" in value:
            return {"date": value["date"], **({"time": value["time"]} if value.get("time") else {})}
        return {key: normalise_value(item) for key, item in sorted(value.items())}
    if isinstance(value, (list, tuple)):
        items = [normalise_value(item) for item in value]
        return [item for item in items if item is not None] or None
    return str(value)


def custom_values(task: Mapping[str, Any]) -> dict[int, Any]:
    values: dict[int, Any] = {}
    for entry in task.get("customFieldData") or []:
        field_id = ref_id((entry or {}).get("field"))
        if field_id is not None:
            values[field_id] = normalise_value(entry.get("value"))
    return values


def canonical_task(task: Mapping[str, Any], link: Link, side: str) -> dict[str, Any]:
    """The normalised view of TASK (a Planfix TaskResponse) read on SIDE."""
    custom = custom_values(task)
    view: dict[str, Any] = {
        "name": task.get("name") or "",
        "description": task.get("description") or "",
        "priority": task.get("priority") or DEFAULT_PRIORITY,
        "start_date": _date(task.get("startDateTime"), task.get("hasStartDate")),
        "end_date": _date(task.get("endDateTime"), task.get("hasEndDate")),
        "status": ref_id(task.get("status")),
        "assignees": _people(task.get("assignees")),
        "parent": ref_id(task.get("parent")),
    }
    for field_id in custom_ids(link, side):
        view[f"cf:{field_id}"] = custom.get(field_id)
    return view


def _scope_value_matches(value: Any, wanted: Any) -> bool:
    value, wanted = normalise_value(value), normalise_value(wanted)
    if isinstance(value, Mapping) and not isinstance(wanted, Mapping):
        value = value.get("id")
    return value == wanted or (value is not None and str(value) == str(wanted))


def left_scope(link: Link, side: str, task: Mapping[str, Any], is_mirror: bool) -> bool:
    """Whether SIDE's paired TASK (raw) was taken out of the link: moved out of its scope. A
    mirror counts only where the side's create settings put mirrors in scope (a mirror made
    outside it, by design, has not left it)."""
    if in_scope(link, side, task):
        return False
    if not is_mirror:
        return True
    create, scope = link.sides[side].create, link.sides[side].scope
    return ((scope.kind == "project" and create.project == scope.value)
            or (scope.kind == "template" and create.template == scope.value))


def in_scope(link: Link, side: str, task: Mapping[str, Any]) -> bool:
    """Whether SIDE's TASK (raw TaskResponse) belongs to the link.

    participant: the user is among the task's participants or assignees. tag: the marker string
    is a substring of the field's text, or one item of its list value. The link's own record task
    (workers.anchors), made in the side's create project, is never the link's: not mirrored, not
    missing a mirror, not drift.
    """
    if task.get("sourceObjectId") == record_source_id(link.name, side):
        return False
    scope = link.sides[side].scope
    if scope.kind == "project":
        return ref_id(task.get("project")) == scope.value
    if scope.kind == "template":
        return ref_id(task.get("template")) == scope.value
    if scope.kind == "participant":
        return scope.value in _people(task.get("participants")) + _people(task.get("assignees"))
    value = custom_values(task).get(scope.field)
    if scope.kind == "custom_field":
        return _scope_value_matches(value, scope.value)
    if isinstance(value, str):
        return scope.value in value
    if isinstance(value, list):
        return any(scope.value == (item.get("id") if isinstance(item, Mapping) else item) for item in value)
    return False
