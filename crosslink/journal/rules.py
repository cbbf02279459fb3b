"""A link's rules as a stored version holds them, turned back into the Link the sync runs on.

A version of a link's rules (crosslink.journal.versions) keeps them as plain JSON data
(crosslink.journal.chain.rules_of): no deployment details, which belong to wherever the link runs
now, and may be read back long after the file changed. So the Link in force is the rules of the
active version with the deployment keys of the current file's Link (its URLs, accounts and
environment variable names). The rebuild follows the model's own type hints, so a field added to
schemas.links.model travels without a change here; keys a version lacks (a side's send and
approvers, left out while unset) take the model's defaults. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from typing import Any

from crosslink.journal.chain import DEPLOYMENT_KEYS
from schemas.links import Link


class RulesMismatch(ValueError):
    """The rules cannot be those of the link they are put on (another link's, or malformed)."""


def link_from_rules(rules: Mapping[str, Any], deployment_link: Link) -> Link:
    """The Link that RULES (rules_of's form, as stored) describe, deployed as DEPLOYMENT_LINK is:
    each side's deployment keys (chain.DEPLOYMENT_KEYS) are taken from it, everything else from RULES."""
    if rules.get("name") != deployment_link.name:
        raise RulesMismatch(f"these are the rules of link {rules.get('name')!r}, not {deployment_link.name!r}")
    sides = rules.get("sides")
    if not isinstance(sides, Mapping) or set(sides) != set(deployment_link.sides):
        raise RulesMismatch(f"the rules name sides {sorted(sides or ())}, the link {sorted(deployment_link.sides)}")
    deployed = {**rules, "sides": {name: {**side, **{key: getattr(deployment_link.sides[name], key)
                                                      for key in DEPLOYMENT_KEYS}}
                                   for name, side in sides.items()}}
    try:
        return _build(Link, deployed)
    except (TypeError, ValueError, KeyError) as exc:
        raise RulesMismatch(f"the rules do not describe a link: {exc}") from exc


def _build(kind: Any, value: Any) -> Any:
    """VALUE (JSON data) as the type KIND names: dataclasses field by field, mappings with their
    keys converted back (JSON keys are strings: a status map's keys are ints), tuples, optionals."""
    if dataclasses.is_dataclass(kind):
        return _dataclass(kind, value)
    origin, args = typing.get_origin(kind), typing.get_args(kind)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return _build(inner, value)
    if origin in (Mapping, dict, typing.Mapping):
        key_kind, value_kind = args
        return {_build(key_kind, key): _build(value_kind, item) for key, item in _mapping(value).items()}
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise TypeError(f"expected a list, got {value!r}")
        return tuple(_build(args[0], item) for item in value)
    if kind is int:
        return _integer(value)
    if kind in (str, bool) and not isinstance(value, kind):
        raise TypeError(f"expected {kind.__name__}, got {value!r}")
    return value


def _dataclass(kind: type, value: Any) -> Any:
    hints = typing.get_type_hints(kind)
    data = _mapping(value)
    unknown = set(data) - {f.name for f in dataclasses.fields(kind)}
    if unknown:
        raise KeyError(f"{kind.__name__} has no {', '.join(sorted(unknown))}")
    return kind(**{f.name: _build(hints[f.name], data[f.name]) for f in dataclasses.fields(kind) if f.name in data})


def _integer(value: Any) -> int:
    """An int, or a mapping key that JSON made a string of one."""
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return int(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise TypeError(f"expected an integer, got {value!r}")


def _mapping(value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise TypeError(f"expected an object, got {value!r}")
    return value
