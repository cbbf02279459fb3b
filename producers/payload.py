"""Turns the raw body of a Planfix scenario request into a flat dict, leniently but never by guessing.

Planfix substitutes variables as plain text, so a task name with a quote breaks the JSON, a list
arrives as a string, and the admin may have chosen a form or multipart body instead; many
scenario editors also label the documented JSON body ``application/x-www-form-urlencoded``. We
never trust the body beyond a few identifiers (the worker reads the real state over REST), so
reading it means finding those identifiers, and nothing else matters.

What decides the task, though, must come from the template, never from text a person typed into
the task: a name such as ``x", "task": "7096`` or a file link ``...&task=7097`` is in the body
too. So:

- **The body's shape wins over its Content-Type.** A body that opens with ``{`` or ``[`` is read
  as JSON, whatever the label says; ``multipart/form-data`` as its form fields; anything else
  with ``=`` as an urlencoded form.
- **One value per key.** A known key (``task``, ``event``, ``comment``, ``account``) given twice
  with different values is refused with that reason, in valid JSON (a duplicate key, which
  ``json.loads`` would quietly resolve to the last one), in a form, in multipart fields and in a
  repaired body alike. The same value twice is fine.
- **The repair rule, for JSON that does not parse:** a key counts only where a template's own
  key stands: quoted, right after the opening brace or a comma (whitespace aside), and followed
  by a colon. Free text ("Related task: 7099", ``&task=7097``, ``see "task": 99``) never stands
  there; a quote-breaking name that forges one (``x", "task": "7096``) makes two different
  candidates, and the body is refused. What the rule cannot catch: a template that has no
  ``task`` key of its own and a name that forges one; such a template never syncs anything, which
  the admin sees in ``crosslink rejected`` from its first event.
- **A form is a form when it starts with a field name** (letters, digits, ``_.-[]``): text
  that starts with prose ("see https://files/get?id=1&task=7097") is not one.
- **No fishing in text that is neither JSON nor a form**: it is refused.

``redact`` removes a side's webhook secret from whatever we keep or show of a request. Pure
functions: no I/O.
"""

from __future__ import annotations

import base64
import io
import json
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, quote, quote_plus

from python_multipart import parse_form
from python_multipart.exceptions import FormParserError

from producers.scenarios import BASIC_USER

# The keys we read; everything else in the body is ignored anyway.
KNOWN_KEYS = ("task", "event", "comment", "account")
# See the module docstring: a quoted known key right after "{" or "," and before ":", then its
# value (quoted, possibly cut off by the breakage, or bare up to a delimiter).
_TEMPLATE_KEY = re.compile(
    r"""(?:^|[{,])\s*(?P<q>["'])(?P<key>task|event|comment|account)(?P=q)\s*:\s*"""
    r"""(?:(?P<vq>["'])(?P<quoted>[^"'\r\n]*)|(?P<bare>[^\s,}\]"']*))"""
)
# A form starts with a field name; text that starts with prose ("see https://...?a=1&task=7")
# is not a form, however many "=" it holds.
_FORM_NAME = re.compile(r"[\w.\-\[\]]+")
# Where a secret may sit under its own name in a body or a query string: such values are removed
# even when they are not this side's secret (an admin pasting another side's, or an API token).
SECRET_NAMES = ("secret", "webhook_secret", "token", "access_token", "api_key", "apikey", "password",
                "passwd", "authorization", "x-crosslink-secret", "key", "signature")
_NAMED_SECRET = re.compile(
    r"""(?P<name>(?<![\w-])["']?(?:""" + "|".join(re.escape(name) for name in SECRET_NAMES) + r""")["']?\s*[:=]\s*)"""
    r"""(?P<value>"[^"]*"?|'[^']*'?|[^&,;}\s"']+)""",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


class PayloadError(ValueError):
    """The body could not be read as an event at all, or it names a key twice, differently."""


def parse_body(raw: bytes, content_type: str | None) -> dict[str, object]:
    """A dict of the body's fields: JSON, multipart, form, or the template's own keys of broken
    JSON (the rule in the module docstring)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        text = raw.decode("utf-8", errors="replace")
    text = text.strip().lstrip("\ufeff").strip()
    if not text:
        raise PayloadError("the body is empty")
    kind = (content_type or "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        return _one_value_each(_multipart_fields(raw, content_type or ""), "multipart field")
    if text[:1] in "{[":
        try:
            parsed = json.loads(text, object_pairs_hook=_JsonObject)
        except (ValueError, RecursionError):
            return _repair(text)
        if isinstance(parsed, _JsonObject):
            conflicting = [key for key in KNOWN_KEYS if key in parsed.conflicts]
            if conflicting:
                raise PayloadError(_conflict_reason(conflicting[0], parsed.conflicts[conflicting[0]], "JSON key"))
            return dict(parsed)
        raise PayloadError("the body is a JSON list, not an object")
    if "=" in text:
        pairs = parse_qsl(text, keep_blank_values=True)
        if pairs and _FORM_NAME.fullmatch(pairs[0][0]):
            return _one_value_each(pairs, "form field")
    raise PayloadError("the body is neither JSON, nor a form, nor multipart")


class _JsonObject(dict):
    """A JSON object that remembers the keys it was given twice with different values
    (json.loads keeps the last one silently)."""

    def __init__(self, pairs: list[tuple[str, object]]):
        super().__init__()
        self.conflicts: dict[str, list[object]] = {}
        for key, value in pairs:
            if key in self and not _same(self[key], value):
                self.conflicts.setdefault(key, [self[key]]).append(value)
            self[key] = value


def _same(first: object, second: object) -> bool:
    """Whether two values of one key say the same thing ("42" and 42 do)."""
    return str(first).strip().lstrip("#") == str(second).strip().lstrip("#")


def _conflict_reason(key: str, values: list[object], where: str) -> str:
    shown = ", ".join(repr(str(value)[:40]) for value in values[:4])
    return f"conflicting values for {key!r} ({where} given more than once: {shown})"


def _one_value_each(pairs: Iterable[tuple[str, object]], where: str) -> dict[str, object]:
    fields: dict[str, object] = {}
    conflicts: dict[str, list[object]] = {}
    for key, value in pairs:
        if key in fields and not _same(fields[key], value):
            conflicts.setdefault(key, [fields[key]]).append(value)
        fields[key] = value
    for key in KNOWN_KEYS:
        if key in conflicts:
            raise PayloadError(_conflict_reason(key, conflicts[key], where))
    return fields


def _repair(text: str) -> dict[str, object]:
    """The known keys of JSON that does not parse, by the repair rule (module docstring)."""
    candidates = []
    for match in _TEMPLATE_KEY.finditer(text):
        value = match.group("quoted") if match.group("vq") else match.group("bare")
        candidates.append((match.group("key"), value))
    if not candidates:
        raise PayloadError("the body is broken JSON with none of the template's keys "
                           f"({', '.join(KNOWN_KEYS)}) where a key stands")
    return _one_value_each(candidates, "repaired broken JSON: key")


def _multipart_fields(raw: bytes, content_type: str) -> list[tuple[str, object]]:
    """The text fields of a multipart/form-data body (uploaded files are ignored)."""
    fields: list[tuple[str, object]] = []

    def on_field(field) -> None:  # python_multipart.Field
        if field.field_name is not None:
            value = field.value or b""
            fields.append((field.field_name.decode("utf-8", errors="replace"),
                           value.decode("utf-8", errors="replace")))

    try:
        parse_form({"Content-Type": content_type.encode("latin-1", errors="replace")}, io.BytesIO(raw),
                   on_field, lambda _file: None)
    except (FormParserError, ValueError) as exc:
        raise PayloadError(f"the multipart body cannot be read: {str(exc)[:120]}") from None
    if not fields:
        raise PayloadError("the multipart body has no fields")
    return fields


def secret_forms(secret: str) -> list[str]:
    """The ways SECRET may appear in a request's text: as is, URL-encoded (both ways), JSON-escaped
    and inside a Basic credential; the longest first, so that no form is half replaced."""
    if not secret:
        return []
    forms = {secret, quote(secret, safe=""), quote_plus(secret), json.dumps(secret)[1:-1]}
    for user in ("", BASIC_USER):
        forms.add(base64.b64encode(f"{user}:{secret}".encode()).decode())
    return sorted((form for form in forms if form), key=len, reverse=True)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """TEXT without SECRETS (by value, in every form secret_forms gives) and without the value of
    any parameter named like a secret (SECRET_NAMES), in JSON, forms, queries or headers."""
    for secret in secrets:
        for form in secret_forms(secret):
            text = text.replace(form, REDACTED)
    return _NAMED_SECRET.sub(lambda match: match.group("name") + REDACTED, text)
