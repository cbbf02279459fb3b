"""Every problem in a links file at once, each with its line and a fix: ``crosslink lint-config``.

A wrong mapping is worse than no sync: it silently moves statuses, reassigns people or overwrites
fields in somebody else's account. So the file is checked completely, and every problem is
reported at once with its line and a fix, the way JBI's ``jbi lint`` does. Marshmallow checks
shapes and types; the checks here catch what types cannot (maps that don't round-trip,
unreachable statuses, people used twice, ...). YAML's own nodes give each key its line.
"""

from __future__ import annotations

import difflib
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError, fields

from schemas.links.model import SIDES, TEMPLATE_KEYS, Link, LinksConfig, Role
from schemas.links.schema import LinksConfigSchema

# "did you mean" only offers names this similar; lower cut-offs suggest nonsense.
SUGGEST_CUTOFF = 0.6


@dataclass(frozen=True)
class LintIssue:
    """One problem: where it is (line, dotted path), what is wrong, and how to fix it."""

    line: int | None
    path: str
    message: str
    fix: str

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        return f"{where}{self.path}: {self.message} (fix: {self.fix})"


# --------------------------------------------------------------------------------------------
# Line numbers: where each key sits in the YAML text

PathKey = tuple[str, ...]


def _line_index(node: yaml.Node, path: PathKey, index: dict[PathKey, int], duplicates: list) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = (*path, key)
            if key in seen:
                duplicates.append((child, key_node.start_mark.line + 1))
            seen.add(key)
            index.setdefault(child, key_node.start_mark.line + 1)
            _line_index(value_node, child, index, duplicates)
    elif isinstance(node, yaml.SequenceNode):
        for position, item in enumerate(node.value):
            child = (*path, str(position))
            index.setdefault(child, item.start_mark.line + 1)
            _line_index(item, child, index, duplicates)


def _line_for(index: Mapping[PathKey, int], path: PathKey) -> int | None:
    for end in range(len(path), 0, -1):
        if path[:end] in index:
            return index[path[:end]]
    return None


def _render_path(path: PathKey) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if part.lstrip("-").isdigit() else (f".{part}" if text else part)
    return text or "(top)"


# --------------------------------------------------------------------------------------------
# Turning marshmallow errors into issues


def _field_names(schema: Schema) -> list[str]:
    return [f.data_key or name for name, f in schema.fields.items()]


def _container_at(path: PathKey) -> Any:
    """The schema (or Dict field) that holds the LAST element of PATH, or None."""
    current: Any = LinksConfigSchema()
    parts = list(path[:-1])
    while parts:
        part = parts.pop(0)
        if isinstance(current, Schema):
            by_key = {f.data_key or name: f for name, f in current.fields.items()}
            current = by_key.get(part)
            if current is None:
                return None
        elif isinstance(current, fields.Dict):
            current = current.value_field
        else:
            return None
        while True:
            if isinstance(current, fields.Nested):
                current = current.schema
            elif isinstance(current, fields.List) and parts:
                parts.pop(0)
                current = current.inner
            else:
                break
    return current


def _flatten(messages: Any, path: PathKey, out: list[tuple[PathKey, str]]) -> None:
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, (dict, list)):
                _flatten(message, path, out)
            else:
                out.append((path, str(message)))
        return
    if isinstance(messages, dict):
        for key, value in messages.items():
            key = str(key)
            if key == "_schema":
                _flatten(value, path, out)
            elif key in ("key", "value") and isinstance(_container_at(path), fields.Dict):
                _flatten(value, path, out)
            else:
                _flatten(value, (*path, key), out)
        return
    out.append((path, str(messages)))


def _issue_for(path: PathKey, message: str, index: Mapping[PathKey, int]) -> LintIssue:
    line = _line_for(index, path)
    fix = "correct the value"
    if message == "Unknown field.":
        container = _container_at(path)
        names = _field_names(container) if isinstance(container, Schema) else []
        close = difflib.get_close_matches(path[-1], names, n=1, cutoff=SUGGEST_CUTOFF)
        message = f"unknown key {path[-1]!r}"
        fix = f"did you mean {close[0]!r}?" if close else f"remove it; allowed here: {', '.join(names)}"
    elif message.startswith("Missing data"):
        message = "required key is missing"
        fix = f"add {path[-1]!r}"
    elif "Must be one of" in message:
        fix = message.replace("Must be one of:", "use one of:")
    return LintIssue(line, _render_path(path), message, fix)


# --------------------------------------------------------------------------------------------
# Checks beyond types


def reachable_statuses(graph: Mapping[int, Iterable[int]], initial: int | None) -> set[int]:
    """Statuses reachable in GRAPH from INITIAL, or (without one) from every status nothing leads to.

    A graph in which every status has a way in (a pure cycle) has no natural start: all of its
    statuses count as reachable then.
    """
    targets = {status for moves in graph.values() for status in moves}
    roots = {initial} if initial is not None else {status for status in graph if status not in targets}
    if not roots:
        roots = set(graph)
    seen = set(roots)
    queue = deque(roots)
    while queue:
        for nxt in graph.get(queue.popleft(), ()):
            if nxt not in seen:
                seen.add(nxt)
                queue.append(nxt)
    return seen


def _person_or_role_issue(value: str | None, roles: Mapping[str, Role]) -> str | None:
    if value and value.startswith("role:") and value[5:] not in roles:
        return f"names unknown role {value[5:]!r}"
    return None


# A problem a check found in one link: the path below the link, what is wrong, how to fix it.
Finding = tuple[PathKey, str, str]


def _sides_use_own_accounts(link: Link) -> Iterator[Finding]:
    partner, client = link.sides["partner"], link.sides["client"]
    if partner.account == client.account:
        yield (("sides", "client", "account"), f"both sides use account {client.account!r}",
               "give each side its own account (base_url or account)")


def _status_maps_round_trip(link: Link) -> Iterator[Finding]:
    statuses = link.statuses
    for side in SIDES:
        other = link.other(side)
        forward, backward = statuses.forward(side), statuses.forward(other)
        for source, target in forward.items():
            if target not in backward:
                yield (("statuses", f"{side}_to_{other}", str(source)),
                       f"{other} status {target} is a target but {other}_to_{side} never maps it back",
                       f"add '{target}: <{side} status>' to {other}_to_{side}")


def _status_rules_use_mapped_statuses(link: Link) -> Iterator[Finding]:
    statuses = link.statuses
    for number, rule in enumerate(statuses.rules):
        for end, rule_side, status in (("when", rule.when_side, rule.when_status),
                                       ("then", rule.then_side, rule.then_status)):
            if status not in statuses.known(rule_side):
                yield (("statuses", "rules", str(number), end, "status"),
                       f"{rule_side} status {status} is not in the status maps",
                       f"use a {rule_side} status from the maps: {sorted(statuses.known(rule_side))}")


def _status_targets_reachable(link: Link) -> Iterator[Finding]:
    statuses = link.statuses
    for side, graph in statuses.transitions.items():
        other = link.other(side)
        reachable = reachable_statuses(graph, link.sides[side].create.initial_status)
        wanted = set(statuses.forward(other).values()) | {
            rule.then_status for rule in statuses.rules if rule.then_side == side}
        for status in sorted(wanted - reachable):
            yield (("statuses", "transitions", side),
                   f"{side} status {status} is a sync target but can't be reached in the {side} transitions graph",
                   f"add a move into {status} to transitions.{side} (or set create.initial_status)")


def _people_paired_once(link: Link) -> Iterator[Finding]:
    for side in SIDES:
        seen: dict[str, int] = {}
        for number, pair in enumerate(link.people.pairs):
            person = getattr(pair, side)
            if person in seen:
                yield (("people", "pairs", str(number), side),
                       f"{side} person {person} is already paired in pairs[{seen[person]}]",
                       "pair each person once; use representatives for stand-ins")
            seen.setdefault(person, number)


def _stand_ins_can_act(link: Link) -> Iterator[Finding]:
    people = link.people
    for group in ("representatives", "fallback"):
        for side in SIDES:
            value = getattr(people, group)[side]
            problem = _person_or_role_issue(value, people.roles)
            if problem:
                yield (("people", group, side), problem,
                       f"define it under people.roles or use one of: {sorted(people.roles) or 'user:N'}")
                continue
            # A representative stands in on the OTHER account; a fallback is a person of its own side.
            needed = link.other(side) if group == "representatives" else side
            role = people.roles.get(value[5:]) if value and value.startswith("role:") else None
            if role and role.side != needed and people.counterpart(role.side, role.user) is None:
                yield (("people", group, side),
                       f"role {value[5:]!r} is a {role.side} person without a {needed} counterpart, "
                       f"so it can't act in the {needed} account",
                       f"pair {role.user} under people.pairs, or name a {needed} \"user:N\"")


def _custom_fields_mapped_once_and_reversible(link: Link) -> Iterator[Finding]:
    seen_ids: dict[tuple[str, int], int] = {}
    for number, rule in enumerate(link.fields.custom):
        for side in SIDES:
            key = (side, rule.id_on(side))
            if key in seen_ids:
                yield (("fields", "custom", str(number), side),
                       f"{side} custom field {key[1]} is already mapped in custom[{seen_ids[key]}]",
                       "map each custom field once")
            seen_ids.setdefault(key, number)
        if rule.transform and rule.direction == "both" and len(set(rule.transform.values())) != len(rule.transform):
            yield (("fields", "custom", str(number), "transform", "map"),
                   "transform map is not one-to-one, so it can't be reversed for direction both",
                   "make every target value unique, or set direction to partner_to_client")


def _side_note_field_and_create_fit(link: Link) -> Iterator[Finding]:
    for side in SIDES:
        note_field = link.sides[side].assignee_note_field
        if note_field is not None and link.fields.custom_rule(side, note_field):
            yield (("sides", side, "assignee_note_field"),
                   f"field {note_field} is also a synced custom field",
                   "use a separate field for the assignee note")
        scope, create = link.sides[side].scope, link.sides[side].create
        made_in = {"project": create.project, "template": create.template}.get(scope.kind)
        if scope.kind in ("project", "template") and made_in != scope.value:
            yield (("sides", side, "create", scope.kind),
                   f"mirrors are created outside the side's scope ({scope.kind} {scope.value})",
                   f"set create.{scope.kind}: {scope.value}")


def _comment_regexes_compile(link: Link) -> Iterator[Finding]:
    for key in ("include", "exclude"):
        pattern = getattr(link.comments, key)
        if pattern is not None:
            try:
                re.compile(pattern)
            except re.error as exc:
                yield (("comments", key), f"regex does not compile: {exc}", "fix the regular expression")


def _send_controls_fit(link: Link) -> Iterator[Finding]:
    for side in SIDES:
        send = link.sides[side].send
        if send.exclude_comments is not None:
            try:
                re.compile(send.exclude_comments)
            except re.error as exc:
                yield (("sides", side, "send", "exclude_comments"), f"regex does not compile: {exc}",
                       "fix the regular expression")
        for number, task_filter in enumerate(send.exclude_tasks):
            if task_filter == link.sides[side].scope:
                yield (("sides", side, "send", "exclude_tasks", str(number)),
                       "the filter is the side's scope: it holds back every task",
                       "set send.paused: true to stop sending everything, or narrow the filter")


def _approvers_are_people_of_the_side(link: Link) -> Iterator[Finding]:
    for side in SIDES:
        approvers = link.sides[side].approvers
        robot = link.sides[side].integration_user
        for number, person in enumerate(approvers):
            if person == robot:
                yield (("sides", side, "approvers", str(number)),
                       f"{person} is the side's integration_user: its comments are the sync's own",
                       "name people of the account who decide for it")
            elif person in approvers[:number]:
                yield (("sides", side, "approvers", str(number)), f"{person} is named twice", "name each once")


def _comment_mode_has_include(link: Link) -> Iterator[Finding]:
    if link.comments.mode == "matching" and not link.comments.include:
        yield (("comments", "mode"), "mode matching needs an include regex", "set comments.include")


def _comment_templates_format(link: Link) -> Iterator[Finding]:
    for key in ("header", "withdrawn"):
        try:
            getattr(link.comments, key).format(**{name: "" for name in TEMPLATE_KEYS})
        except (KeyError, IndexError, ValueError) as exc:
            yield (("comments", key), f"template is invalid ({exc!r})",
                   f"use only {{{'}, {'.join(TEMPLATE_KEYS)}}} and double any literal braces")


# Every check of one link, in the order its findings are reported.
_LINK_CHECKS: tuple[Callable[[Link], Iterable[Finding]], ...] = (
    _sides_use_own_accounts,
    _status_maps_round_trip,
    _status_rules_use_mapped_statuses,
    _status_targets_reachable,
    _people_paired_once,
    _stand_ins_can_act,
    _custom_fields_mapped_once_and_reversible,
    _side_note_field_and_create_fit,
    _comment_regexes_compile,
    _send_controls_fit,
    _approvers_are_people_of_the_side,
    _comment_mode_has_include,
    _comment_templates_format,
)


def _check_link(link: Link, at: PathKey, out: list[tuple[PathKey, str, str]]) -> None:
    for check in _LINK_CHECKS:
        for rel, message, fix in check(link):
            out.append(((*at, *rel), message, fix))


def _semantic_issues(config: LinksConfig, index: Mapping[PathKey, int]) -> list[LintIssue]:
    found: list[tuple[PathKey, str, str]] = []
    first: dict[str, int] = {}
    for number, link in enumerate(config.links):
        at = ("links", str(number))
        if link.name in first:
            found.append(((*at, "name"), f"duplicate link name {link.name!r} (also links[{first[link.name]}])",
                          "give every link a unique name"))
        first.setdefault(link.name, number)
        _check_link(link, at, found)
    return [LintIssue(_line_for(index, path), _render_path(path), message, fix) for path, message, fix in found]


# --------------------------------------------------------------------------------------------
# Entry points


def lint_text(text: str, source_name: str) -> tuple[LinksConfig | None, list[LintIssue]]:
    """TEXT's configuration (None when it can't be built) and every problem found in it."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        return None, [LintIssue(mark.line + 1 if mark else None, "(file)", f"not valid YAML: {exc}",
                                "fix the YAML syntax")]
    index: dict[PathKey, int] = {}
    duplicates: list[tuple[PathKey, int]] = []
    if root is not None:
        _line_index(root, (), index, duplicates)
    issues = [LintIssue(line, _render_path(path), f"key {path[-1]!r} appears twice", "keep one of them")
              for path, line in duplicates]
    if not isinstance(data, dict):
        return None, issues + [LintIssue(1, "(top)", "the file must be a mapping with a 'links' list",
                                         "start the file with 'links:'")]
    try:
        config = LinksConfigSchema().load(data)
    except ValidationError as exc:
        flat: list[tuple[PathKey, str]] = []
        _flatten(exc.messages, (), flat)
        return None, issues + [_issue_for(path, message, index) for path, message in flat]
    loaded = LinksConfig(tuple(config["links"]), source_name)
    issues += _semantic_issues(loaded, index)
    return loaded, sorted(issues, key=lambda issue: (issue.line or 0, issue.path))


def lint_file(path: str | Path) -> list[LintIssue]:
    """Every problem in the links file at PATH; empty when it is fine."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [LintIssue(None, "(file)", f"can't read {path}: {exc.strerror}", "check the path")]
    return lint_text(text, str(path))[1]
