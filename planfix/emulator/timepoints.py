"""Planfix's date shapes, in one place, because every resource and every filter speaks them.

Planfix writes dates as TimePoint objects or "dd-MM-yyyy HH:mm[:ss]" strings and filters on dates
with `{"dateType": ...}` objects (API-NOTES.md section 2). The emulator keeps every instant as
epoch seconds and converts at the edges. Planfix interprets dates in the token employee's time
zone; the emulator treats every employee as UTC, which is what the sync's tests configure.
"""

from __future__ import annotations

import calendar
from datetime import datetime, timedelta, timezone
from typing import Any

DAY_S = 86400


def timepoint(epoch: float) -> dict[str, str]:
    """The TimePoint object Planfix returns for an instant."""
    moment = datetime.fromtimestamp(int(epoch), tz=timezone.utc)
    return {
        "date": moment.strftime("%d-%m-%Y"),
        "time": moment.strftime("%H:%M"),
        "datetime": moment.strftime("%Y-%m-%dT%H:%MZ"),
        "dateTimeUtcSeconds": moment.strftime("%Y-%m-%dT%H:%M:%S+0000"),
    }


def _parse_dmy(text: str) -> datetime:
    text = text.strip()
    for pattern in ("%d-%m-%Y %H:%M:%S", "%d-%m-%Y %H:%M", "%d-%m-%Y"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=timezone.utc)
        except ValueError:
            continue
    raise ValueError(f"not a Planfix date: {text!r} (expected dd-MM-yyyy [HH:mm[:ss]])")


def parse_write(value: Any) -> tuple[float, bool]:
    """(epoch, has_time) from a written date: a TimePoint object or a "dd-MM-yyyy HH:mm" string.

    Raises ValueError with a readable message for anything else.
    """
    if isinstance(value, str):
        moment = _parse_dmy(value)
        return moment.timestamp(), len(value.strip()) > 10
    if isinstance(value, dict):
        if value.get("dateTimeUtcSeconds"):
            moment = datetime.strptime(value["dateTimeUtcSeconds"], "%Y-%m-%dT%H:%M:%S%z")
            return moment.timestamp(), True
        if value.get("date"):
            text = str(value["date"])
            has_time = bool(value.get("time"))
            if has_time:
                text = f"{text} {value['time']}"
            return _parse_dmy(text).timestamp(), has_time
    raise ValueError(f"not a Planfix date: {value!r}")


def _day_start(epoch: float) -> float:
    return float(int(epoch) // DAY_S * DAY_S)


def filter_range(value: Any, now: float) -> tuple[float, float]:
    """[start, end) in epoch seconds for a filter's date value.

    Supports the forms the spec's examples use: otherDate, otherRange, otherRange_withTime,
    today, yesterday, tomorrow, thisWeek, lastWeek, thisMonth, last (dateValue days back,
    today included). Raises ValueError for anything else so a caller never filters silently wrong.
    """
    if not isinstance(value, dict) or "dateType" not in value:
        raise ValueError("a date filter value must be an object with dateType")
    kind = value["dateType"]
    today = _day_start(now)
    if kind == "today":
        return today, today + DAY_S
    if kind == "yesterday":
        return today - DAY_S, today
    if kind == "tomorrow":
        return today + DAY_S, today + 2 * DAY_S
    if kind in ("thisWeek", "lastWeek"):
        weekday = datetime.fromtimestamp(today, tz=timezone.utc).weekday()
        monday = today - weekday * DAY_S
        if kind == "lastWeek":
            monday -= 7 * DAY_S
        return monday, monday + 7 * DAY_S
    if kind == "thisMonth":
        moment = datetime.fromtimestamp(today, tz=timezone.utc)
        first = moment.replace(day=1)
        days = calendar.monthrange(moment.year, moment.month)[1]
        return first.timestamp(), (first + timedelta(days=days)).timestamp()
    if kind == "last":
        days = int(value.get("dateValue", 1))
        return today - (days - 1) * DAY_S, today + DAY_S
    if kind == "otherDate":
        start = _day_start(_parse_dmy(str(value["dateValue"])).timestamp())
        return start, start + DAY_S
    if kind == "otherRange":
        start = _day_start(_parse_dmy(str(value["dateFrom"])).timestamp())
        end = _day_start(_parse_dmy(str(value["dateTo"])).timestamp()) + DAY_S
        return start, end
    if kind == "otherRange_withTime":
        start = _parse_dmy(str(value["dateFrom"])).timestamp()
        # dateTo names a minute; the whole minute is inside the range.
        end = _parse_dmy(str(value["dateTo"])).timestamp() + 60
        return start, end
    raise ValueError(f"dateType {kind!r} is not supported by the emulator")


def date_matches(epoch: float | None, operator: str, value: Any, now: float) -> bool:
    """Whether an instant passes a date filter; an absent date never matches."""
    if epoch is None:
        return False
    start, end = filter_range(value, now)
    if operator == "equal":
        return start <= epoch < end
    if operator == "notequal":
        return not start <= epoch < end
    if operator == "gt":
        return epoch >= end
    if operator == "lt":
        return epoch < start
    if operator == "gtAndEqual":
        return epoch >= start
    if operator == "ltAndEqual":
        return epoch < end
    raise ValueError(f"operator {operator!r} is not supported")
