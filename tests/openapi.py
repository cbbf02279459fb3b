"""The official Planfix REST spec, loaded from ../shared/planfix/openapi.json with its known flaws
patched in memory (API-NOTES.md section 4), for the conformance tests.

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


def _patch(node: Any) -> Any:
    """Fix what keeps the spec from loading: string booleans, "0 // Line" integer enums."""
    if isinstance(node, dict):
        fixed = {key: _patch(value) for key, value in node.items()}
        if fixed.get("type") == "boolean" and isinstance(fixed.get("default"), str):
            fixed["default"] = fixed["default"].strip().lower() == "true"
        if fixed.get("type") == "integer" and isinstance(fixed.get("enum"), list):
            fixed["enum"] = [
                int(re.match(r"\s*(-?\d+)", str(member)).group(1)) for member in fixed["enum"]
            ]
        return fixed
    if isinstance(node, list):
        return [_patch(item) for item in node]
    return node


@lru_cache(maxsize=1)
def load_spec() -> dict[str, Any]:
    """The patched spec; skips the calling test when the file is missing."""
    path = spec_path()
    if not path.exists():
        pytest.skip(f"Planfix spec not found at {path} (set {SPEC_ENV} to point at openapi.json)")
    return _patch(json.loads(path.read_text(encoding="utf-8")))


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
