"""The official Planfix REST spec, loaded from ../shared/planfix/openapi.json with its known flaws
patched in memory (API-NOTES.md section 4), for the conformance tests.

Every spec fix lives here, so the conformance tests validate whole bodies and none carries a local
workaround. The patches, each for the reason given where it is applied:
- string booleans as defaults (``"false"``) become real booleans;
- enums written as ``"3000 // Comment date"`` become their integers, under ``type: integer`` and
  ``type: number`` alike (the ComplexXxxFilter.type members are declared ``number``);
- ``CustomFieldValueRequest.value`` / ``CustomFieldValueResponse.value`` accept any JSON value but
  null (the spec says ``object``; its own examples and Planfix send strings, numbers, arrays);
- ``UserResponse.id`` accepts "user:N" besides N (the spec says integer, yet the documented
  ``prefixedId: true`` returns "user:N").

The spec is never copied into this repository. Where it is absent, every test that needs it skips
with a message saying where it was looked for.
"""

from __future__ import annotations

import copy
import json
import os
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

# Where the spec lives beside a checkout (the shared folder sits next to the repository).
SPEC_ENV = "CROSSLINK_PLANFIX_SPEC"
DEFAULT_SPEC = Path(__file__).resolve().parents[2] / "shared" / "planfix" / "openapi.json"


def spec_path() -> Path:
    return Path(os.environ.get(SPEC_ENV) or DEFAULT_SPEC)


def _leading_int(member: Any) -> Any:
    """3000 from "3000 // Comment date"; members that are already numbers stay as they are."""
    if isinstance(member, str):
        return int(re.match(r"\s*(-?\d+)", member).group(1))
    return member


def _patch(node: Any) -> Any:
    """Fix what keeps the spec from loading: string booleans, "0 // Line" enums of numbers."""
    if isinstance(node, dict):
        fixed = {key: _patch(value) for key, value in node.items()}
        if fixed.get("type") == "boolean" and isinstance(fixed.get("default"), str):
            fixed["default"] = fixed["default"].strip().lower() == "true"
        # Under `integer` (CustomField.type, ...) and `number` (ComplexCommentFilter.type and the
        # other filter types) alike, Planfix sends and expects the bare number.
        if fixed.get("type") in ("integer", "number") and isinstance(fixed.get("enum"), list):
            fixed["enum"] = [_leading_int(member) for member in fixed["enum"]]
        return fixed
    if isinstance(node, list):
        return [_patch(item) for item in node]
    return node


# Custom field values: the shape depends on the field type (API-NOTES "Custom fields": a list
# option is a string, a number a number, files and value sets are arrays, an employee or a date
# an object, a checkbox a boolean). The spec's `type: object` fits only the last kinds.
ANY_CUSTOM_VALUE = {"anyOf": [{"type": "string"}, {"type": "number"}, {"type": "boolean"},
                              {"type": "array", "items": {}}, {"type": "object"}]}
# UserResponse.id: `prefixedId: true` on /user/list (which the client sends) answers "user:N".
PREFIXED_USER_ID = {"type": "string", "pattern": r"^user:\d+$"}


def _patch_components(spec: dict[str, Any]) -> None:
    """The schema-level fixes above, by component name; fails loudly if the spec moved them."""
    schemas = spec["components"]["schemas"]
    for name in ("CustomFieldValueRequest", "CustomFieldValueResponse"):
        value = schemas[name]["properties"]["value"]
        if value.get("type") != "object":
            raise RuntimeError(f"{name}.value changed upstream; revisit tests/openapi.py")
        schemas[name]["properties"]["value"] = {"description": value.get("description", ""),
                                                **copy.deepcopy(ANY_CUSTOM_VALUE)}
    user_id = schemas["UserResponse"]["properties"]["id"]
    if user_id.get("type") != "integer":
        raise RuntimeError("UserResponse.id changed upstream; revisit tests/openapi.py")
    schemas["UserResponse"]["properties"]["id"] = {
        "description": user_id.get("description", ""),
        "anyOf": [{key: user_id[key] for key in ("type", "format") if key in user_id},
                  dict(PREFIXED_USER_ID)],
    }


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """The patched spec; skips the calling test when the file is missing."""
    path = spec_path()
    if not path.exists():
        pytest.skip(f"Planfix spec not found at {path} (set {SPEC_ENV} to point at openapi.json)")
    spec = _patch(json.loads(path.read_text(encoding="utf-8")))
    _patch_components(spec)
    return spec


def _schema_with_components(schema: dict[str, Any]) -> dict[str, Any]:
    spec = load_spec()
    wrapped = copy.deepcopy(schema)
    wrapped["components"] = spec["components"]
    return wrapped


def operation(method: str, path: str) -> dict[str, Any]:
    """The spec's operation object for METHOD PATH, e.g. ("post", "/task/{id}")."""
    return load_spec()["paths"][path][method.lower()]


def request_schema(method: str, path: str) -> dict[str, Any]:
    body = operation(method, path)["requestBody"]["content"]
    media = body.get("application/json") or next(iter(body.values()))
    return media["schema"]


def response_schema(method: str, path: str, status: int | str) -> dict[str, Any] | None:
    """The JSON schema the spec gives for that status, or None where it gives none."""
    responses = operation(method, path)["responses"]
    response = responses.get(str(status))
    if response is None:
        raise AssertionError(f"the spec has no {status} response for {method.upper()} {path}")
    content = response.get("content") or {}
    media = content.get("application/json")
    return media.get("schema") if media else None


def validate(schema: dict[str, Any], instance: Any) -> None:
    """Raise jsonschema.ValidationError when INSTANCE does not fit the OpenAPI 3.0 SCHEMA."""
    from openapi_schema_validator import OAS30Validator

    OAS30Validator(_schema_with_components(schema)).validate(instance)


def validate_request(method: str, path: str, body: Any) -> None:
    validate(request_schema(method, path), body)


def validate_response(method: str, path: str, status: int, body: Any) -> None:
    schema = response_schema(method, path, status)
    if schema is not None:
        validate(schema, body)
