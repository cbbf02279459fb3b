"""What changes between two versions of a link's rules, in sentences the people who approve read.

An approver in either company decides on a change of the rules that govern their correspondence
(issue 22); raw YAML or JSON is not something they can be asked to sign. So the change is told
per area (statuses, people and delegation, fields, comment policy, each side's scope, creation
and sending controls), one sentence per change, in the side's language, naming statuses, people
and fields by name where the caller knows them and by id where not. Every difference gets a
sentence: one no rule below words is still told, by its path, never dropped. Pure: no I/O.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from crosslink.journal.chain import UNSET_SIDE_KEYS
from crosslink.journal.diff_texts import TEXTS

# Names the caller knows, per side: {"partner": {"status:2": "In work", "user:4": "Irina"}}.
Names = Mapping[str, Mapping[str, str]]
# The areas a diff is told in, in this order.
GROUPS = ("statuses", "people", "fields", "comments", "side:partner", "side:client", "other")
# Paths whose value is told whole (a scope is one filter, a role one person on one side).
# A side's transitions graph is told whole: one that appears or goes changes every move.
WHOLE = (("sides", "*", "scope"), ("people", "roles", "*"), ("statuses", "transitions", "*"))


class _Missing:
    """A key one version has and the other lacks."""

    def __repr__(self) -> str:
        return "MISSING"


MISSING = _Missing()
Path = tuple[str, ...]


def readable_diff(old_rules: Mapping[str, Any], new_rules: Mapping[str, Any], lang: str = "en",
                  names: Names | None = None) -> list[str]:
    """The changes from OLD_RULES to NEW_RULES (chain.rules_of's form) as lines for people: a
    heading per area that changed, then one indented sentence per change, in LANG (en or ru).
    NAMES: what the caller knows of the ids ("status:2", "user:4", "field:100", per side)."""
    teller = _Teller(TEXTS[lang], names or {})
    told: dict[str, list[str]] = {}
    for path, before, after in _changes(_filled(old_rules), _filled(new_rules), ()):
        told.setdefault(_group(path), []).extend(teller.tell(path, before, after))
    if not told:
        return [teller.texts["same"]]
    lines: list[str] = []
    for group in GROUPS:
        if group in told:
            lines.append(teller.texts[group] + ":")
            lines += [f"  {sentence}" for sentence in told[group]]
    return lines


def _filled(rules: Mapping[str, Any]) -> Mapping[str, Any]:
    """RULES with each side's unset keys at their defaults, so that setting one reads as a change of it."""
    sides = {name: {**UNSET_SIDE_KEYS, **side} for name, side in rules.get("sides", {}).items()}
    return {**rules, "sides": sides}


def _changes(old: Any, new: Any, path: Path) -> Iterator[tuple[Path, Any, Any]]:
    """Each difference as (path, before, after): objects are walked key by key, except at WHOLE
    paths; lists and values are told whole. A key one side lacks is MISSING there."""
    if old == new:
        return
    walk = not any(_matches(pattern, path) for pattern in WHOLE)
    if walk and isinstance(old, (dict, _Missing)) and isinstance(new, (dict, _Missing)):
        old_keys = old if isinstance(old, dict) else {}
        new_keys = new if isinstance(new, dict) else {}
        for key in sorted(set(old_keys) | set(new_keys), key=_key_order):
            yield from _changes(old_keys.get(key, MISSING), new_keys.get(key, MISSING), (*path, key))
        return
    yield path, old, new


def _key_order(key: str) -> tuple[int, Any]:
    return (0, int(key)) if key.lstrip("-").isdigit() else (1, key)


def _matches(pattern: Path, path: Path) -> bool:
    return len(pattern) == len(path) and all(want in ("*", part) for want, part in zip(pattern, path))


def _group(path: Path) -> str:
    if path[0] == "sides" and len(path) > 1 and f"side:{path[1]}" in GROUPS:
        return f"side:{path[1]}"
    return path[0] if path[0] in GROUPS else "other"


@dataclass
class _Teller:
    """Sentences in one language, with the names the caller knows."""

    texts: Mapping[str, Any]
    names: Names

    def tell(self, path: Path, before: Any, after: Any) -> list[str]:
        for pattern, say in SAYINGS:
            if _matches(pattern, path):
                return say(self, path, before, after)
        return [self.texts["other_change"].format(path=".".join(path), after=self.value(after),
                                                  before=self.value(before))]

    def side(self, side: str) -> str:
        return self.texts["sides"].get(side, side)

    def ref(self, side: str, kind: str, number: Any) -> str:
        """An id as people read it: "'In work' (2)" when its name is known, else the id."""
        if number is MISSING or number is None:
            return self.texts["none"]
        key = number if isinstance(number, str) and ":" in number else f"{kind}:{number}"
        name = self.names.get(side, {}).get(key)
        return f"'{name}' ({number})" if name else str(number)

    def value(self, value: Any) -> str:
        if value is MISSING or value is None:
            return self.texts["none"]
        if isinstance(value, bool):
            return self.texts["yes"] if value else self.texts["no"]
        if isinstance(value, list):
            return ", ".join(self.value(item) for item in value) if value else self.texts["none"]
        if isinstance(value, dict):
            return json.dumps(value, ensure_ascii=False, sort_keys=True)
        return str(value)

    def direction(self, value: Any) -> str:
        return self.texts["directions"].get(value, self.value(value))

    def scope(self, side: str, scope: Any) -> str:
        """A scope-like filter ({"kind", "value", "field"}) in words."""
        if not isinstance(scope, dict):
            return self.value(scope)
        kind, value, field_id = scope.get("kind"), scope.get("value"), scope.get("field")
        template = self.texts["scopes"].get(kind)
        if template is None:
            return self.value(scope)
        return template.format(value=self.ref(side, kind, value), field=self.ref(side, "field", field_id),
                               raw=value)


# --- statuses ---------------------------------------------------------------------------------


def _status_map(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    side, other = path[1].split("_to_")
    words = {"side": t.side(side), "other": t.side(other), "status": t.ref(side, "status", path[2]),
             "after": t.ref(other, "status", after), "before": t.ref(other, "status", before)}
    key = "map_added" if before is MISSING else "map_removed" if after is MISSING else "map_changed"
    return [t.texts[key].format(**words)]


def _transitions(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    """A side's graph of allowed moves: without one every move is allowed; in one, a status that
    is not a key has no move out of it."""
    side = path[2]

    def moves(graph: Mapping[str, Any]) -> str:
        return "; ".join(f"{t.ref(side, 'status', status)} -> " + (", ".join(t.ref(side, "status", to) for to in targets)
                                                                  or t.texts["none"])
                         for status, targets in sorted(graph.items(), key=lambda item: _key_order(item[0])))
    if not isinstance(before, dict):
        return [t.texts["graph_added"].format(side=t.side(side), after=moves(after))]
    if not isinstance(after, dict):
        return [t.texts["graph_removed"].format(side=t.side(side), before=moves(before))]
    lines = []
    for status in sorted(set(before) | set(after), key=_key_order):
        old, new = before.get(status, []), after.get(status, [])
        if old != new:
            lines.append(t.texts["moves"].format(side=t.side(side), status=t.ref(side, "status", status),
                                                 after=", ".join(t.ref(side, "status", to) for to in new) or t.texts["none"],
                                                 before=", ".join(t.ref(side, "status", to) for to in old) or t.texts["none"]))
    return lines or [t.texts["order"]]


def _status_rules(t: _Teller, _path: Path, before: Any, after: Any) -> list[str]:
    def told(rule: Mapping[str, Any]) -> str:
        return t.texts["rule"].format(when_side=t.side(rule["when_side"]), then_side=t.side(rule["then_side"]),
                                      when=t.ref(rule["when_side"], "status", rule["when_status"]),
                                      then=t.ref(rule["then_side"], "status", rule["then_status"]))
    return _added_removed(t, before, after, told, "rule_added", "rule_removed")


def _on_forbidden(t: _Teller, _path: Path, before: Any, after: Any) -> list[str]:
    how = t.texts["forbidden"]
    return [t.texts["on_forbidden"].format(after=how.get(after, t.value(after)), before=how.get(before, t.value(before)))]


# --- people -----------------------------------------------------------------------------------


def _pairs(t: _Teller, _path: Path, before: Any, after: Any) -> list[str]:
    def told(pair: Mapping[str, Any]) -> str:
        return t.texts["pair"].format(partner=t.ref("partner", "user", pair["partner"]),
                                      client=t.ref("client", "user", pair["client"]))
    return _added_removed(t, before, after, told, "pair_added", "pair_removed")


def _role(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    def told(role: Any) -> str:
        if not isinstance(role, dict):
            return t.texts["none"]
        return t.texts["role_value"].format(side=t.side(role["side"]), person=t.ref(role["side"], "user", role["user"]))
    return [t.texts["role"].format(name=path[2], after=told(after), before=told(before))]


def _stand_in(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    group, side = path[1], path[2]
    # A representative acts in the OTHER account; a fallback is a person of its own side.
    account = side if group == "fallback" else ("client" if side == "partner" else "partner")
    return [t.texts[group].format(side=t.side(side), other=t.side(account), after=t.ref(account, "user", after),
                                  before=t.ref(account, "user", before))]


# --- fields -----------------------------------------------------------------------------------


def _field_rule(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    label = t.texts["field_names"].get(path[-2], path[-2])
    return _rule_change(t, label, path[-1], before, after)


def _rule_change(t: _Teller, label: str, key: str, before: Any, after: Any) -> list[str]:
    if key == "direction":
        return [t.texts["field_direction"].format(field=label, after=t.direction(after), before=t.direction(before))]
    if key == "owner":
        owners = t.texts["owners"]
        return [t.texts["field_owner"].format(field=label, after=owners.get(after or "", t.value(after)),
                                              before=owners.get(before or "", t.value(before)))]
    return [t.texts["field_transform"].format(field=label, after=t.value(after), before=t.value(before))]


def _custom_fields(t: _Teller, _path: Path, before: Any, after: Any) -> list[str]:
    def ids(rule: Mapping[str, Any]) -> tuple[Any, Any]:
        return rule.get("partner"), rule.get("client")

    old = {ids(rule): rule for rule in before} if isinstance(before, list) else {}
    new = {ids(rule): rule for rule in after} if isinstance(after, list) else {}
    lines = []
    for key in [*old, *(key for key in new if key not in old)]:
        label = t.texts["custom_field"].format(partner=t.ref("partner", "field", key[0]),
                                               client=t.ref("client", "field", key[1]))
        if key not in new:
            lines.append(t.texts["custom_removed"].format(field=label, before=t.direction(old[key].get("direction"))))
        elif key not in old:
            lines.append(t.texts["custom_added"].format(field=label, after=t.direction(new[key].get("direction"))))
        else:
            for name in sorted((set(old[key]) | set(new[key])) - {"partner", "client"}):
                if old[key].get(name) != new[key].get(name):
                    lines += _rule_change(t, label, name, old[key].get(name), new[key].get(name))
    if not lines:   # the same fields in another order: nothing travels differently
        lines.append(t.texts["custom_order"])
    return lines


# --- comments ---------------------------------------------------------------------------------


def _comments(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    key = path[1]
    if key == "mode":
        modes = t.texts["modes"]
        return [t.texts["comments_mode"].format(after=modes.get(after, t.value(after)),
                                                before=modes.get(before, t.value(before)))]
    if key in ("include", "exclude"):
        return _pattern(t, f"comments_{key}", before, after)
    template = t.texts.get(f"comments_{key}", t.texts["comments_other"])
    return [template.format(key=key, after=t.value(after), before=t.value(before))]


def _pattern(t: _Teller, key: str, before: Any, after: Any, **words: str) -> list[str]:
    """A regex set, changed or dropped (a dropped one has its own sentence: "matching none" misleads)."""
    quoted = [f"'{value}'" if isinstance(value, str) else t.texts["none"] for value in (after, before)]
    template = t.texts[f"{key}_dropped"] if after is None or after is MISSING else t.texts[key]
    return [template.format(after=quoted[0], before=quoted[1], **words)]


def _side_label(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    return [t.texts["side_label"].format(side=t.side(path[2]), after=t.value(after), before=t.value(before))]


# --- each side --------------------------------------------------------------------------------


def _scope(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    side = path[1]
    return [t.texts["scope"].format(side=t.side(side), after=t.scope(side, after), before=t.scope(side, before))]


def _create(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    side, key = path[1], path[3]
    kind = "status" if key == "initial_status" else key
    return [t.texts["create"].format(side=t.side(side), what=t.texts["create_keys"].get(key, key),
                                     after=t.ref(side, kind, after), before=t.ref(side, kind, before))]


def _paused(t: _Teller, path: Path, _before: Any, after: Any) -> list[str]:
    return [t.texts["paused" if after else "unpaused"].format(side=t.side(path[1]))]


def _exclude_comments(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    return _pattern(t, "exclude_comments", before, after, side=t.side(path[1]))


def _exclude_tasks(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    side = path[1]
    return _added_removed(t, before, after, lambda scope: t.scope(side, scope), "tasks_held", "tasks_sent",
                          side=t.side(side))


def _approvers(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    side = path[1]

    def people(value: Any) -> str:
        return ", ".join(t.ref(side, "user", person) for person in value) if value else t.texts["none"]
    return [t.texts["approvers"].format(side=t.side(side), after=people(after), before=people(before))]


def _side_setting(t: _Teller, path: Path, before: Any, after: Any) -> list[str]:
    side, key = path[1], path[2]
    kind = "field" if key == "assignee_note_field" else "user"
    return [t.texts[key].format(side=t.side(side), after=t.ref(side, kind, after), before=t.ref(side, kind, before))]


def _added_removed(t: _Teller, before: Any, after: Any, told: Callable[[Any], str], added: str, removed: str,
                   **words: str) -> list[str]:
    """One sentence per item of the list AFTER that BEFORE lacks, and per item it lost."""
    old = before if isinstance(before, list) else []
    new = after if isinstance(after, list) else []
    lines = [t.texts[removed].format(item=told(item), **words) for item in old if item not in new]
    lines += [t.texts[added].format(item=told(item), **words) for item in new if item not in old]
    return lines or [t.texts["order"]]


# Which sentence tells a change at which path ("*": any key); the first that matches tells it.
SAYINGS: tuple[tuple[Path, Callable[[_Teller, Path, Any, Any], list[str]]], ...] = (
    (("statuses", "partner_to_client", "*"), _status_map),
    (("statuses", "client_to_partner", "*"), _status_map),
    (("statuses", "transitions", "*"), _transitions),
    (("statuses", "rules"), _status_rules),
    (("statuses", "on_forbidden"), _on_forbidden),
    (("people", "pairs"), _pairs),
    (("people", "roles", "*"), _role),
    (("people", "representatives", "*"), _stand_in),
    (("people", "fallback", "*"), _stand_in),
    (("fields", "rules", "*", "*"), _field_rule),
    (("fields", "checklist", "direction"), _field_rule),
    (("fields", "files", "direction"), _field_rule),
    (("fields", "custom"), _custom_fields),
    (("comments", "side_labels", "*"), _side_label),
    (("comments", "*"), _comments),
    (("sides", "*", "scope"), _scope),
    (("sides", "*", "create", "*"), _create),
    (("sides", "*", "send", "paused"), _paused),
    (("sides", "*", "send", "exclude_comments"), _exclude_comments),
    (("sides", "*", "send", "exclude_tasks"), _exclude_tasks),
    (("sides", "*", "approvers"), _approvers),
    (("sides", "*", "language"), _side_setting),
    (("sides", "*", "integration_user"), _side_setting),
    (("sides", "*", "assignee_note_field"), _side_setting),
)
