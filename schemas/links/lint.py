"""Every problem in a links file at once, each with its line and a fix: ``crosslink lint-config``.

A wrong mapping is worse than no sync: it silently moves statuses, reassigns people or overwrites
fields in somebody else's account. So the file is checked completely, and every problem is
reported at once with its line and a fix, the way JBI's ``jbi lint`` does. Marshmallow checks
shapes and types; the checks here catch what types cannot (maps that don't round-trip,
unreachable statuses, people used twice, ...). YAML's own nodes give each key its line.

"At once" includes a file with both kinds: a schema error does not hide the semantic ones, or an
operator would fix the types only to meet a second round of problems. Each link the schema
rejects is salvaged (``_salvage``): the keys it complained about are cut out (a required one
gives way to a placeholder), the rest is built, and every check runs on it that reads nothing
that was cut, since a check of a placeholder or a default would report what the file never said.
"""

from __future__ import annotations

import copy
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
from schemas.links.schema import LinkSchema, LinksConfigSchema

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


# Every check of one link, in the order its findings are reported, with the parts of the link it
# reads (paths below the link): on a salvaged link a check runs only if none of them was cut.
_STATUS_MAPS = (("statuses", "partner_to_client"), ("statuses", "client_to_partner"))


def _on_sides(*keys: str) -> tuple[PathKey, ...]:
    return tuple(("sides", side, key) for side in SIDES for key in keys)


_LINK_CHECKS: tuple[tuple[Callable[[Link], Iterable[Finding]], tuple[PathKey, ...]], ...] = (
    (_sides_use_own_accounts, _on_sides("account", "base_url")),
    (_status_maps_round_trip, _STATUS_MAPS),
    (_status_rules_use_mapped_statuses, (*_STATUS_MAPS, ("statuses", "rules"))),
    (_status_targets_reachable, (("statuses",), *_on_sides("create"))),
    (_people_paired_once, (("people", "pairs"),)),
    (_stand_ins_can_act, (("people",),)),
    (_custom_fields_mapped_once_and_reversible, (("fields", "custom"),)),
    (_side_note_field_and_create_fit, (*_on_sides("assignee_note_field", "scope", "create"), ("fields", "custom"))),
    (_comment_regexes_compile, (("comments", "include"), ("comments", "exclude"))),
    (_send_controls_fit, _on_sides("send", "scope")),
    (_approvers_are_people_of_the_side, _on_sides("approvers", "integration_user")),
    (_comment_mode_has_include, (("comments", "mode"), ("comments", "include"))),
    (_comment_templates_format, (("comments", "header"), ("comments", "withdrawn"))),
)


def _overlaps(a: PathKey, b: PathKey) -> bool:
    """Whether one of the paths A and B lies within the other."""
    return a[:len(b)] == b or b[:len(a)] == a


def _check_link(link: Link, at: PathKey, out: list[tuple[PathKey, str, str]], cut: Iterable[PathKey] = ()) -> None:
    cut = list(cut)
    for check, reads in _LINK_CHECKS:
        if any(_overlaps(read, gone) for read in reads for gone in cut):
            continue  # it would judge a placeholder or a default, not the file
        for rel, message, fix in check(link):
            out.append(((*at, *rel), message, fix))


def _semantic_issues(links: Iterable[tuple[int, Link, list[PathKey]]], index: Mapping[PathKey, int]) -> list[LintIssue]:
    """The checks' findings on LINKS: (position in the file, the link, the paths cut out of it)."""
    found: list[tuple[PathKey, str, str]] = []
    first: dict[str, int] = {}
    for number, link, cut in links:
        at = ("links", str(number))
        if not any(_overlaps(("name",), gone) for gone in cut):
            if link.name in first:
                found.append(((*at, "name"), f"duplicate link name {link.name!r} (also links[{first[link.name]}])",
                              "give every link a unique name"))
            first.setdefault(link.name, number)
        _check_link(link, at, found, cut)
    return [LintIssue(_line_for(index, path), _render_path(path), message, fix) for path, message, fix in found]


# --------------------------------------------------------------------------------------------
# Salvage: the parts of a link the schema rejected cut out, so the checks can look at the rest

# A cut that leaves a required key missing climbs one level a round: the schema nests no deeper
# than this below a link (sides.partner.send.exclude_tasks[0].tag.field is 6).
MAX_SALVAGE_ROUNDS = 8


def _placeholder_side(side: str) -> dict[str, Any]:
    return {"base_url": f"http://{side}.invalid/rest", "token_env": "LINT_PLACEHOLDER",
            "webhook_secret_env": "LINT_PLACEHOLDER", "integration_user": "user:0", "scope": {"project": 0}}


# What stands in for a required part of a link once it is cut: valid, and never judged (every
# check reading it is skipped).
_PLACEHOLDERS: dict[PathKey, Callable[[], Any]] = {
    ("name",): lambda: "lint-placeholder",
    ("sides",): lambda: {side: _placeholder_side(side) for side in SIDES},
    **{("sides", side): (lambda side=side: _placeholder_side(side)) for side in SIDES},
    ("statuses",): lambda: {"partner_to_client": {}, "client_to_partner": {}},
    ("statuses", "partner_to_client"): dict,
    ("statuses", "client_to_partner"): dict,
    # A required key of a side alone, so one bad value does not take the whole side.
    **{("sides", side, key): (lambda side=side, key=key: _placeholder_side(side)[key])
       for side in SIDES for key in _placeholder_side(side)},
}


def _cut(data: Any, path: PathKey) -> PathKey:
    """Remove PATH from DATA (a placeholder where a required part must stay) and return what was
    cut: an item of a list takes its whole list (removing it would renumber the items after it,
    whose own problems are reported by their numbers)."""
    parent = data
    for depth, part in enumerate(path[:-1]):
        child = _child(parent, part)
        if isinstance(child, list):
            return _cut(data, path[:depth + 1])
        if child is None:
            return path[:depth + 1]  # already gone with an earlier cut
        parent = child
    if not isinstance(parent, dict):
        return path
    if path in _PLACEHOLDERS:
        parent[path[-1]] = _PLACEHOLDERS[path]()
    else:
        for key in [key for key in parent if str(key) == path[-1]]:
            del parent[key]
    return path


def _child(container: Any, part: str) -> Any:
    if isinstance(container, dict):
        return next((value for key, value in container.items() if str(key) == part), None)
    return None


def _salvage(raw: Any) -> tuple[Link, list[PathKey]] | None:
    """RAW (one link as the file has it) built with what the schema rejected cut out, and the
    paths cut; None when nothing of it can be built (not a mapping, or no cut makes it load)."""
    if not isinstance(raw, dict):
        return None
    data, cut = copy.deepcopy(raw), []
    for _ in range(MAX_SALVAGE_ROUNDS):
        try:
            return LinkSchema().load(data), cut
        except ValidationError as exc:
            flat: list[tuple[PathKey, str]] = []
            # Flattened as the file's first link, so the schema walk knows its Dict fields.
            _flatten(exc.messages, ("links", "0"), flat)
        for path, _message in ((path[2:], message) for path, message in flat):
            # A part cut before and wanted again (a required key) goes with its parent.
            while path and any(path[:len(gone)] == gone for gone in cut) and path not in _PLACEHOLDERS:
                path = path[:-1]
            if not path or path in cut:
                return None
            cut.append(_cut(data, path))
    return None


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
        issues += [_issue_for(path, message, index) for path, message in flat]
        raw_links = data.get("links") if isinstance(data.get("links"), list) else []
        salvaged = [(number, *found) for number, found in enumerate(map(_salvage, raw_links)) if found]
        issues += _semantic_issues(salvaged, index)
        return None, _in_file_order(issues)
    loaded = LinksConfig(tuple(config["links"]), source_name)
    issues += _semantic_issues(((number, link, []) for number, link in enumerate(loaded.links)), index)
    return loaded, _in_file_order(issues)


def _in_file_order(issues: list[LintIssue]) -> list[LintIssue]:
    return sorted(issues, key=lambda issue: (issue.line or 0, issue.path))


def lint_file(path: str | Path) -> list[LintIssue]:
    """Every problem in the links file at PATH; empty when it is fine."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return [LintIssue(None, "(file)", f"can't read {path}: {exc.strerror}", "check the path")]
    return lint_text(text, str(path))[1]
