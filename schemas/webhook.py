"""The payload a Planfix automation scenario sends to our producer.

Planfix fills the body template by plain text substitution, so what arrives is whatever the
admin's template became: numbers as strings, lists as strings like ``"[]"``, missing fields,
quotes that break the JSON. The receiver repairs what it can into a flat dict; this schema then
decides what is usable. Only the task number is required: the worker fetches the real state over
REST, so nothing else in the body is trusted.
"""

from __future__ import annotations

from marshmallow import EXCLUDE, Schema, ValidationError, fields, pre_load, validate

EVENTS = ("task_created", "task_changed", "comment_added", "comment_changed", "test")
# A task number above this cannot be real; such a value is a substitution gone wrong.
MAX_TASK_NUMBER = 10**12


def _blank_to_none(value: object) -> object:
    if isinstance(value, str) and value.strip() in ("", "null", "None", "[]", "{}"):
        return None
    return value


class WebhookEventSchema(Schema):
    """task (number, required), event, comment id, account domain; unknown keys ignored."""

    class Meta:
        unknown = EXCLUDE

    task = fields.Integer(
        required=True,
        strict=False,
        validate=validate.Range(min=1, max=MAX_TASK_NUMBER),
        error_messages={"required": "the task number ({{Задача.Номер}}) is missing"},
    )
    event = fields.String(load_default="task_changed", validate=validate.OneOf(EVENTS))
    comment = fields.Integer(load_default=None, allow_none=True, strict=False,
                             validate=validate.Range(min=1, max=MAX_TASK_NUMBER))
    account = fields.String(load_default=None, allow_none=True)

    @pre_load
    def lenient(self, data: dict, **_: object) -> dict:
        if not isinstance(data, dict):
            raise ValidationError("the body is not an object")
        cleaned = {key: _blank_to_none(value) for key, value in data.items()}
        for key in ("task", "comment"):
            value = cleaned.get(key)
            if isinstance(value, str):
                value = value.strip().lstrip("#")
                # ASCII digits only: int() would also read "1_2", "١٢" or "１２" as numbers.
                if value and not (value.isascii() and value.isdigit()):
                    raise ValidationError({key: [f"{value[:40]!r} is not a number"]})
                cleaned[key] = value
            elif isinstance(value, float) and not value.is_integer():
                raise ValidationError({key: [f"{value!r} is not a whole number"]})
            elif isinstance(value, bool):
                raise ValidationError({key: [f"{value!r} is not a number"]})
        if cleaned.get("event") is None:
            cleaned.pop("event", None)
        if cleaned.get("task") is None:
            cleaned.pop("task", None)
        return cleaned
