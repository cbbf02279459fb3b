"""Turns the raw body of a Planfix scenario request into a flat dict, as leniently as possible.

Planfix substitutes variables as plain text, so a task name with a quote breaks the JSON, a list
arrives as a string, and the admin may have chosen a form body instead. We never trust the body
beyond a few identifiers (the worker reads the real state over REST), so repairing it means
finding those identifiers. Pure functions: no I/O.
"""

from __future__ import annotations

import json
import re
from urllib.parse import parse_qsl

# Keys we look for when the JSON is broken; everything else in the body is ignored anyway.
KNOWN_KEYS = ("task", "event", "comment", "account")
_REPAIR = re.compile(
    r"""["']?\b(?P<key>task|event|comment|account)\b["']?\s*[:=]\s*["']?(?P<value>[^"',}&\s]*)""",
    re.IGNORECASE,
)


class PayloadError(ValueError):
    """The body could not be read as an event at all."""


def parse_body(raw: bytes, content_type: str | None) -> dict[str, object]:
    """A dict of the body's fields: JSON, form, or the known keys fished out of broken text."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
    text = text.strip().lstrip("\ufeff")
    if not text:
        raise PayloadError("the body is empty")
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded" and text[:1] in "{[":
        try:
            parsed = json.loads(text)
        except (ValueError, RecursionError):
            parsed = None
        if isinstance(parsed, dict):
            return parsed
        if isinstance(parsed, list):
            raise PayloadError("the body is a JSON list, not an object")
    if kind == "application/x-www-form-urlencoded" or ("=" in text and text[:1] not in "{["):
        form = dict(parse_qsl(text, keep_blank_values=True))
        if form:
            return form
    found: dict[str, object] = {}
    for match in _REPAIR.finditer(text):
        # The first occurrence is the template's own field; later ones are free text inside it.
        found.setdefault(match.group("key").lower(), match.group("value"))
    if found:
        return found
    raise PayloadError("the body is neither JSON, nor a form, nor text naming a task")
