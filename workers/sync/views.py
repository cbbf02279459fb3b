"""Pure readings of Planfix task and comment bodies that a sync run needs: the canonical values an
update will give a task, the names of the people a task shows, a comment's time and a note's
quotation as text.

Why a module of its own: these are functions of their arguments alone (no Redis, no requests),
used by the run, by comment mirroring and by the notes a run leaves, and by `crosslink backfill`
(expected_view, people_names, through workers.sync); kept apart, they are tested without a run.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from workers.canonical import normalise_value, ref_id
from workers.plan import DATE_FIELDS, PLAIN_FIELDS

# A value or text a note quotes is cut to this many characters (a description can be long).
NOTE_QUOTE_CHARS = 200


def timepoint_text(point: Mapping[str, Any] | None) -> str:
    """A Planfix time point (a comment's dateTime) as a mirror's header shows it."""
    if not point:
        return ""
    date, time_ = point.get("date", ""), point.get("time", "")
    return f"{date} {time_}".strip() or str(point.get("datetime", ""))


def expected_view(target_now: Mapping[str, Any] | None, body: Mapping[str, Any]) -> dict[str, Any]:
    """The canonical values the target will hold once the update BODY is applied, for the keys
    BODY sets (a pure function: it reads the body the planner built, in the shapes it builds).

    Assumptions: custom fields are only expected for keys the canonical target view has (the
    link reads them on that side); a date is written as the canonical "dd-MM-yyyy HH:mm" text and
    cleared with has*Date false; parent 0 detaches.
    """
    now = target_now or {}
    view: dict[str, Any] = {key: body[key] for key in PLAIN_FIELDS if key in body}
    for key, (write_key, has_key) in DATE_FIELDS.items():
        if write_key in body:
            view[key] = body[write_key]
        elif body.get(has_key) is False:
            view[key] = None
    if "parent" in body:
        view["parent"] = ref_id(body["parent"])
    if "status" in body:
        view["status"] = ref_id(body["status"])
    if "assignees" in body:
        view["assignees"] = sorted(str(person["id"]) for person in
                                   (body["assignees"] or {}).get("users", []) or [])
    for entry in body.get("customFieldData") or []:
        key = f"cf:{ref_id((entry or {}).get('field'))}"
        if key in now:
            view[key] = normalise_value(entry.get("value"))
    return view


def people_names(task: Mapping[str, Any]) -> dict[str, str]:
    """The names TASK shows for the people on it (assignees, participants, auditors, assigner), by id."""
    names: dict[str, str] = {}
    for role in ("assignees", "participants", "auditors"):
        for person in (task.get(role) or {}).get("users", []) or []:
            if person.get("id") and person.get("name"):
                names[person["id"]] = person["name"]
    assigner = task.get("assigner") or {}
    if assigner.get("id") and assigner.get("name"):
        names[assigner["id"]] = assigner["name"]
    return names


def quoted(html: str) -> str:
    """HTML as a note quotes it: its plain text, cut to NOTE_QUOTE_CHARS."""
    text = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html)).strip()
    return text if len(text) <= NOTE_QUOTE_CHARS else text[:NOTE_QUOTE_CHARS] + "..."
