"""Marshmallow schemas for links.yaml: they check shapes and types and build the frozen model.

Shapes and types are declared once, here, and each schema's ``post_load`` turns what it read into
the dataclasses of ``schemas.links.model``, filling in what the file leaves out. The lint walks
these same schemas to name the keys allowed where it finds an unknown one; what types cannot
catch is checked there (``schemas.links.lint``).

Design decisions where the product brief is silent (all optional keys have these defaults):
- ``account`` defaults to host[:port] plus the path before ``/rest`` of ``base_url``; it keys the
  shared rate limiter, so two sides may not share one.
- ``create`` defaults to the account's default process and, for a project or template scope, to
  that project/template (mirrors must land inside the scope to sync back);
  ``create.initial_status`` names the status a freshly created task starts in on that side, so a
  status path under a transitions graph can be planned from it (null = move there directly).
- ``statuses.transitions`` describes, per side, the full graph of allowed moves: a status that is
  not a key has no allowed moves out of it. A side without a graph allows every move.
- ``fields``: every system field defaults to ``{direction: both, owner: null}``; ``assignees`` and
  ``status`` may be listed there too (same defaults). ``custom`` defaults to no custom fields.
  ``checklist`` and ``files`` (the task card's files) take only ``{direction: ...}``, default both.
  ``transform.map`` maps string values (list options) from partner to client; the client-to-partner
  direction uses its inverse, which is why a ``both`` field needs a one-to-one map. Values not in
  the map pass through unchanged.
- ``people``: no pairs, no roles, no representatives and no fallback by default. Pairs may pair
  employees or contacts ("user:N"/"contact:N"); representatives and fallback take "user:N" or
  "role:<name>".
- ``sides.<side>.send`` (what the side holds back from the other account, by its own rule):
  ``paused: false``, ``exclude_comments: null`` (a regex: a comment of this side whose text
  matches is not sent, on top of the link's ``comments`` policy) and ``exclude_tasks: []`` (filters
  shaped like a scope, ``[{project: 12}, {tag: {field: 7, value: "internal"}}]``: a task of this
  side matching any is not sent). Only the side they sit under is narrowed, so a change that only
  tightens them (pausing, a first exclusion regex or one extended as ``<old>|<more>``, more task
  filters, a field's direction no longer sent from this side) takes effect with this side's
  approval alone; loosening them, like any other change, needs both sides'
  (crosslink.journal.approvals).
- ``sides.<side>.approvers``: ``[]``. The employees of that side's account (``"user:N"``, never the
  side's ``integration_user``, whose comments are the sync's own) whose approval of a new version
  of the link's rules counts as the side's. They are governance, not what crosses, yet they are
  part of the version and its hash: who may approve for a side changes only with both sides'
  approval, so neither can quietly replace the other's approvers. A side naming none yet counts
  the approvers a proposal names for it.
- ``comments``: mode ``all``, no include/exclude, side labels "Partner"/"Client", and the header
  and withdrawn templates ``DEFAULT_HEADER`` and ``DEFAULT_WITHDRAWN``. Templates may use
  ``{author}``, ``{side_label}``, ``{side}``, ``{time}`` only.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

from schemas.links.model import (
    DEFAULT_HEADER,
    DEFAULT_SIDE_LABELS,
    DEFAULT_WITHDRAWN,
    DIRECTIONS,
    NOTE_LANGUAGES,
    SCOPE_KINDS,
    SIDES,
    SYSTEM_FIELDS,
    CommentPolicy,
    CreateSettings,
    CustomFieldRule,
    FieldMap,
    FieldRule,
    Link,
    People,
    PersonPair,
    Role,
    Scope,
    SendControls,
    Side,
    StatusMap,
    StatusRule,
    derive_account,
)

LINK_NAME_RE = r"^[a-z0-9-]+$"
USER_RE = r"^user:\d+$"
PERSON_RE = r"^(user|contact):\d+$"
PERSON_OR_ROLE_RE = r"^(user:\d+|role:[A-Za-z0-9_-]+)$"
ENV_NAME_RE = r"^[A-Z][A-Z0-9_]*$"

_side_choice = validate.OneOf(SIDES)


class _ScopeCustomFieldSchema(Schema):
    id = fields.Int(required=True)
    value = fields.Raw(required=True, allow_none=True)


class _ScopeTagSchema(Schema):
    field = fields.Int(required=True)
    value = fields.Str(required=True, validate=validate.Length(min=1))


class ScopeSchema(Schema):
    project = fields.Int()
    template = fields.Int()
    custom_field = fields.Nested(_ScopeCustomFieldSchema)
    tag = fields.Nested(_ScopeTagSchema)
    participant = fields.Str(validate=validate.Regexp(USER_RE, error="must be \"user:N\""))

    @validates_schema
    def _exactly_one(self, data: dict, **_: Any) -> None:
        if len(data) != 1:
            raise ValidationError(f"scope needs exactly one of {', '.join(SCOPE_KINDS)}; got {len(data)}")

    @post_load
    def _make(self, data: dict, **_: Any) -> Scope:
        ((kind, value),) = data.items()
        if kind == "custom_field":
            return Scope(kind, value["value"], value["id"])
        if kind == "tag":
            return Scope(kind, value["value"], value["field"])
        return Scope(kind, value)


class CreateSchema(Schema):
    process = fields.Int(allow_none=True, load_default=None)
    project = fields.Int(allow_none=True, load_default=None)
    template = fields.Int(allow_none=True, load_default=None)
    initial_status = fields.Int(allow_none=True, load_default=None)

    @post_load
    def _make(self, data: dict, **_: Any) -> CreateSettings:
        return CreateSettings(**data)


class SendSchema(Schema):
    paused = fields.Bool(load_default=False)
    exclude_comments = fields.Str(load_default=None, allow_none=True)
    exclude_tasks = fields.List(fields.Nested(ScopeSchema), load_default=list)

    @post_load
    def _make(self, data: dict, **_: Any) -> SendControls:
        return SendControls(data["paused"], data["exclude_comments"], tuple(data["exclude_tasks"]))


_env_name = validate.Regexp(ENV_NAME_RE, error="must be an UPPER_SNAKE environment variable name")


class SideSchema(Schema):
    base_url = fields.Url(required=True, require_tld=False, schemes={"http", "https"})
    account = fields.Str(load_default=None, allow_none=True)
    token_env = fields.Str(required=True, validate=_env_name)
    webhook_secret_env = fields.Str(required=True, validate=_env_name)
    webhook_auth = fields.Str(load_default="header", validate=validate.OneOf(("header", "basic")))
    integration_user = fields.Str(required=True, validate=validate.Regexp(USER_RE, error="must be \"user:N\""))
    scope = fields.Nested(ScopeSchema, required=True)
    create = fields.Nested(CreateSchema, load_default=None, allow_none=True)
    assignee_note_field = fields.Int(load_default=None, allow_none=True)
    language = fields.Str(load_default="en", validate=validate.OneOf(NOTE_LANGUAGES))
    send = fields.Nested(SendSchema, load_default=None, allow_none=True)
    approvers = fields.List(fields.Str(validate=validate.Regexp(USER_RE, error="must be \"user:N\"")),
                            load_default=list)

    @post_load
    def _make(self, data: dict, **_: Any) -> Side:
        create = data["create"] or CreateSettings()
        # Mirrors land inside the side's scope unless told otherwise, so they sync back.
        if data["scope"].kind in ("project", "template") and getattr(create, data["scope"].kind) is None:
            create = replace(create, **{data["scope"].kind: data["scope"].value})
        return Side(
            name="", base_url=data["base_url"], account=data["account"] or derive_account(data["base_url"]),
            token_env=data["token_env"], webhook_secret_env=data["webhook_secret_env"],
            webhook_auth=data["webhook_auth"], integration_user=data["integration_user"], scope=data["scope"],
            create=create, assignee_note_field=data["assignee_note_field"], language=data["language"],
            send=data["send"] or SendControls(), approvers=tuple(data["approvers"]),
        )


class SidesSchema(Schema):
    partner = fields.Nested(SideSchema, required=True)
    client = fields.Nested(SideSchema, required=True)

    @post_load
    def _make(self, data: dict, **_: Any) -> dict[str, Side]:
        return {name: replace(data[name], name=name) for name in SIDES}


class _RuleEndSchema(Schema):
    side = fields.Str(required=True, validate=_side_choice)
    status = fields.Int(required=True)


class RuleSchema(Schema):
    when = fields.Nested(_RuleEndSchema, required=True)
    then = fields.Nested(_RuleEndSchema, required=True)

    @post_load
    def _make(self, data: dict, **_: Any) -> StatusRule:
        return StatusRule(data["when"]["side"], data["when"]["status"], data["then"]["side"], data["then"]["status"])


class StatusesSchema(Schema):
    partner_to_client = fields.Dict(keys=fields.Int(), values=fields.Int(), required=True)
    client_to_partner = fields.Dict(keys=fields.Int(), values=fields.Int(), required=True)
    transitions = fields.Dict(
        keys=fields.Str(validate=_side_choice),
        values=fields.Dict(keys=fields.Int(), values=fields.List(fields.Int())),
        load_default=dict,
    )
    rules = fields.List(fields.Nested(RuleSchema), load_default=list)
    on_forbidden = fields.Str(load_default="path", validate=validate.OneOf(("path", "park")))

    @post_load
    def _make(self, data: dict, **_: Any) -> StatusMap:
        transitions = {side: {status: tuple(moves) for status, moves in graph.items()}
                       for side, graph in data["transitions"].items()}
        return StatusMap(data["partner_to_client"], data["client_to_partner"], transitions,
                         tuple(data["rules"]), data["on_forbidden"])


_person = validate.Regexp(PERSON_RE, error="must be \"user:N\" or \"contact:N\"")
_person_or_role = validate.Regexp(PERSON_OR_ROLE_RE, error="must be \"user:N\" or \"role:<name>\"")


class _PairSchema(Schema):
    partner = fields.Str(required=True, validate=_person)
    client = fields.Str(required=True, validate=_person)


class _RoleSchema(Schema):
    side = fields.Str(required=True, validate=_side_choice)
    user = fields.Str(required=True, validate=_person)


class _PerSideRefSchema(Schema):
    partner = fields.Str(load_default=None, allow_none=True, validate=_person_or_role)
    client = fields.Str(load_default=None, allow_none=True, validate=_person_or_role)


class PeopleSchema(Schema):
    pairs = fields.List(fields.Nested(_PairSchema), load_default=list)
    roles = fields.Dict(keys=fields.Str(validate=validate.Regexp(r"^[A-Za-z0-9_-]+$")),
                        values=fields.Nested(_RoleSchema), load_default=dict)
    representatives = fields.Nested(_PerSideRefSchema, load_default=None, allow_none=True)
    fallback = fields.Nested(_PerSideRefSchema, load_default=None, allow_none=True)

    @post_load
    def _make(self, data: dict, **_: Any) -> People:
        empty = {side: None for side in SIDES}
        return People(
            pairs=tuple(PersonPair(**pair) for pair in data["pairs"]),
            roles={name: Role(**role) for name, role in data["roles"].items()},
            representatives=data["representatives"] or empty,
            fallback=data["fallback"] or dict(empty),
        )


class FieldRuleSchema(Schema):
    direction = fields.Str(load_default="both", validate=validate.OneOf(DIRECTIONS))
    owner = fields.Str(load_default=None, allow_none=True, validate=_side_choice)


class DirectionOnlySchema(Schema):
    direction = fields.Str(load_default="both", validate=validate.OneOf(DIRECTIONS))

    @post_load
    def _make(self, data: dict, **_: Any) -> FieldRule:
        return FieldRule(data["direction"])


class _TransformSchema(Schema):
    map = fields.Dict(keys=fields.Str(), values=fields.Str(), required=True)


class CustomFieldRuleSchema(FieldRuleSchema):
    partner = fields.Int(required=True)
    client = fields.Int(required=True)
    transform = fields.Nested(_TransformSchema, load_default=None, allow_none=True)

    @post_load
    def _make(self, data: dict, **_: Any) -> CustomFieldRule:
        transform = data["transform"]["map"] if data["transform"] else None
        return CustomFieldRule(data["partner"], data["client"], data["direction"], data["owner"], transform)


class FieldsSchema(Schema):
    name = fields.Nested(FieldRuleSchema, load_default=None, allow_none=True)
    description = fields.Nested(FieldRuleSchema, load_default=None, allow_none=True)
    priority = fields.Nested(FieldRuleSchema, load_default=None, allow_none=True)
    start_date = fields.Nested(FieldRuleSchema, load_default=None, allow_none=True)
    end_date = fields.Nested(FieldRuleSchema, load_default=None, allow_none=True)
    parent = fields.Nested(FieldRuleSchema, load_default=None, allow_none=True)
    assignees = fields.Nested(FieldRuleSchema, load_default=None, allow_none=True)
    status = fields.Nested(FieldRuleSchema, load_default=None, allow_none=True)
    custom = fields.List(fields.Nested(CustomFieldRuleSchema), load_default=list)
    checklist = fields.Nested(DirectionOnlySchema, load_default=None, allow_none=True)
    files = fields.Nested(DirectionOnlySchema, load_default=None, allow_none=True)

    @post_load
    def _make(self, data: dict, **_: Any) -> FieldMap:
        rules = {name: FieldRule(**(data[name] or {})) for name in SYSTEM_FIELDS}
        return FieldMap(rules, tuple(data["custom"]), data["checklist"] or FieldRule(),
                        data["files"] or FieldRule())


class _SideLabelsSchema(Schema):
    partner = fields.Str(load_default=DEFAULT_SIDE_LABELS["partner"])
    client = fields.Str(load_default=DEFAULT_SIDE_LABELS["client"])


class CommentsSchema(Schema):
    mode = fields.Str(load_default="all", validate=validate.OneOf(("all", "matching")))
    include = fields.Str(load_default=None, allow_none=True)
    exclude = fields.Str(load_default=None, allow_none=True)
    side_labels = fields.Nested(_SideLabelsSchema, load_default=None, allow_none=True)
    header = fields.Str(load_default=DEFAULT_HEADER)
    withdrawn = fields.Str(load_default=DEFAULT_WITHDRAWN)

    @post_load
    def _make(self, data: dict, **_: Any) -> CommentPolicy:
        return CommentPolicy(data["mode"], data["include"], data["exclude"],
                             data["side_labels"] or dict(DEFAULT_SIDE_LABELS), data["header"], data["withdrawn"])


class LinkSchema(Schema):
    name = fields.Str(required=True, validate=validate.Regexp(LINK_NAME_RE, error="must match [a-z0-9-]+"))
    sides = fields.Nested(SidesSchema, required=True)
    statuses = fields.Nested(StatusesSchema, required=True)
    people = fields.Nested(PeopleSchema, load_default=None, allow_none=True)
    fields_ = fields.Nested(FieldsSchema, data_key="fields", load_default=None, allow_none=True)
    comments = fields.Nested(CommentsSchema, load_default=None, allow_none=True)

    @post_load
    def _make(self, data: dict, **_: Any) -> Link:
        return Link(data["name"], data["sides"], data["statuses"], data["people"] or People(),
                    data["fields_"] or FieldMap(), data["comments"] or CommentPolicy())


class LinksConfigSchema(Schema):
    links = fields.List(fields.Nested(LinkSchema), required=True, validate=validate.Length(min=1))
