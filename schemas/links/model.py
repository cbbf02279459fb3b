"""The link configuration as frozen dataclasses: what binds two Planfix accounts, once checked.

Workers, producers and commands hold a ``Link`` and ask it questions (which side is the other,
which status maps to which, who is whose counterpart, which rule a field follows). None of that
needs marshmallow or YAML, so this module imports neither: ``schemas.links.schema`` builds these
objects from the file (and documents the defaults of its optional keys), ``schemas.links.lint``
checks them.

Secrets never live in links.yaml: a side names the environment VARIABLES holding its API token
and webhook secret, and ``Side.token(env)`` reads them late, failing with the variable's name.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

SIDES = ("partner", "client")
# The languages Crosslink writes its notes in (workers.notes).
NOTE_LANGUAGES = ("en", "ru")
DIRECTIONS = ("both", "partner_to_client", "client_to_partner", "none")
SCOPE_KINDS = ("project", "template", "custom_field", "tag", "participant")
TEMPLATE_KEYS = ("author", "side_label", "side", "time")
DEFAULT_HEADER = "<p><b>{author}</b> ({side_label}), {time}</p>"
DEFAULT_WITHDRAWN = "<p><i>Withdrawn on the {side_label} side at {time}.</i></p>"
DEFAULT_SIDE_LABELS = {"partner": "Partner", "client": "Client"}


# --------------------------------------------------------------------------------------------
# Errors


class SecretMissing(RuntimeError):
    """An environment variable that should hold a secret is unset. Names the variable only."""


# --------------------------------------------------------------------------------------------
# The configuration as frozen dataclasses


@dataclass(frozen=True)
class Scope:
    """Which tasks of a side belong to the link. ``kind`` is one of SCOPE_KINDS.

    project/template: ``value`` is the id. participant: ``value`` is "user:N".
    custom_field: the field ``field`` equals ``value``. tag: the field ``field`` contains the
    marker string ``value`` (as a substring of a text value or an item of a list value).
    """

    kind: str
    value: Any
    field: int | None = None


@dataclass(frozen=True)
class CreateSettings:
    process: int | None = None
    project: int | None = None
    template: int | None = None
    initial_status: int | None = None


@dataclass(frozen=True)
class SendControls:
    """What a side holds back from the other account by its own rule: everything (PAUSED),
    comments whose text matches EXCLUDE_COMMENTS (a regex, searched like comments.exclude), and
    tasks matching any of EXCLUDE_TASKS (filters shaped like a scope). Each only narrows what
    leaves the side's own account, so tightening them takes effect with that side's approval
    alone (crosslink.journal.approvals); loosening them needs both sides'."""

    paused: bool = False
    exclude_comments: str | None = None
    exclude_tasks: tuple[Scope, ...] = ()


@dataclass(frozen=True)
class Side:
    name: str
    base_url: str
    account: str
    token_env: str
    webhook_secret_env: str
    webhook_auth: str
    integration_user: str
    scope: Scope
    create: CreateSettings
    assignee_note_field: int | None = None
    # The language of the notes written on this side's tasks (workers.notes).
    language: str = "en"
    # What this side holds back from the other account (its half of the link's control).
    send: SendControls = field(default_factory=SendControls)
    # The people of this side's account ("user:N") whose approval of a new version of the link's
    # rules counts as the side's: governance, kept in the version so that changing it needs both.
    approvers: tuple[str, ...] = ()

    def token(self, env: Mapping[str, str]) -> str:
        return _read_secret(env, self.token_env, f"API token of the {self.name} side")

    def webhook_secret(self, env: Mapping[str, str]) -> str:
        return _read_secret(env, self.webhook_secret_env, f"webhook secret of the {self.name} side")


def _read_secret(env: Mapping[str, str], variable: str, what: str) -> str:
    value = env.get(variable)
    if not value:
        raise SecretMissing(f"environment variable {variable} is not set or empty ({what})")
    return value


@dataclass(frozen=True)
class StatusRule:
    when_side: str
    when_status: int
    then_side: str
    then_status: int


@dataclass(frozen=True)
class StatusMap:
    partner_to_client: Mapping[int, int]
    client_to_partner: Mapping[int, int]
    transitions: Mapping[str, Mapping[int, tuple[int, ...]]] = field(default_factory=dict)
    rules: tuple[StatusRule, ...] = ()
    on_forbidden: str = "path"

    def forward(self, source_side: str) -> Mapping[int, int]:
        """The map from SOURCE_SIDE's status ids to the other side's."""
        return self.partner_to_client if source_side == "partner" else self.client_to_partner

    def known(self, side: str) -> set[int]:
        """Every status id of SIDE that the maps mention."""
        other = "client" if side == "partner" else "partner"
        return set(self.forward(side)) | set(self.forward(other).values())


@dataclass(frozen=True)
class Role:
    side: str
    user: str


@dataclass(frozen=True)
class PersonPair:
    partner: str
    client: str


@dataclass(frozen=True)
class People:
    pairs: tuple[PersonPair, ...] = ()
    roles: Mapping[str, Role] = field(default_factory=dict)
    representatives: Mapping[str, str | None] = field(default_factory=lambda: {s: None for s in SIDES})
    fallback: Mapping[str, str | None] = field(default_factory=lambda: {s: None for s in SIDES})

    def counterpart(self, side: str, person: str) -> str | None:
        """The paired person on the other side of SIDE's PERSON, if any."""
        other = "client" if side == "partner" else "partner"
        for pair in self.pairs:
            if getattr(pair, side) == person:
                return getattr(pair, other)
        return None


@dataclass(frozen=True)
class FieldRule:
    direction: str = "both"
    owner: str | None = None


@dataclass(frozen=True)
class CustomFieldRule:
    partner: int
    client: int
    direction: str = "both"
    owner: str | None = None
    transform: Mapping[str, str] | None = None

    def id_on(self, side: str) -> int:
        return self.partner if side == "partner" else self.client

    def convert(self, value: Any, source_side: str) -> Any:
        """VALUE read on SOURCE_SIDE as it should be written on the other side."""
        if not self.transform:
            return value
        table = dict(self.transform) if source_side == "partner" else {v: k for k, v in self.transform.items()}
        if isinstance(value, list):
            return [table.get(item, item) if isinstance(item, str) else item for item in value]
        if isinstance(value, str):
            return table.get(value, value)
        return value


SYSTEM_FIELDS = ("name", "description", "priority", "start_date", "end_date", "parent", "assignees", "status")


@dataclass(frozen=True)
class FieldMap:
    """How each field travels. ``checklist`` and ``files`` (the task card's files) take only a
    direction: they are lists whose items are mirrored one by one and never deleted, so an owner
    has nothing to decide."""

    rules: Mapping[str, FieldRule] = field(default_factory=lambda: {name: FieldRule() for name in SYSTEM_FIELDS})
    custom: tuple[CustomFieldRule, ...] = ()
    checklist: FieldRule = field(default_factory=FieldRule)
    files: FieldRule = field(default_factory=FieldRule)

    def custom_rule(self, side: str, field_id: int) -> CustomFieldRule | None:
        for rule in self.custom:
            if rule.id_on(side) == field_id:
                return rule
        return None

    def rule_for(self, key: str, side: str) -> FieldRule | CustomFieldRule | None:
        """The rule for canonical KEY ("name", "cf:100", ...) as read on SIDE."""
        if key.startswith("cf:"):
            try:
                return self.custom_rule(side, int(key[3:]))
            except ValueError:
                return None
        return self.rules.get(key)


@dataclass(frozen=True)
class CommentPolicy:
    mode: str = "all"
    include: str | None = None
    exclude: str | None = None
    side_labels: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_SIDE_LABELS))
    header: str = DEFAULT_HEADER
    withdrawn: str = DEFAULT_WITHDRAWN


@dataclass(frozen=True)
class Link:
    name: str
    sides: Mapping[str, Side]
    statuses: StatusMap
    people: People = field(default_factory=People)
    fields: FieldMap = field(default_factory=FieldMap)
    comments: CommentPolicy = field(default_factory=CommentPolicy)

    def other(self, side: str) -> str:
        if side not in SIDES:
            raise ValueError(f"unknown side {side!r}; a link has sides {SIDES}")
        return "client" if side == "partner" else "partner"


@dataclass(frozen=True)
class LinksConfig:
    links: tuple[Link, ...]
    source: str = "<string>"


def find_link(config: LinksConfig, name: str) -> Link:
    for link in config.links:
        if link.name == name:
            return link
    known = ", ".join(link.name for link in config.links) or "none"
    raise KeyError(f"no link named {name!r} in {config.source} (links: {known})")


def derive_account(base_url: str) -> str:
    """host[:port] plus any path before /rest: unique per Planfix account (and emulator account)."""
    parts = urlsplit(base_url)
    path = parts.path.rstrip("/")
    if path.endswith("/rest"):
        path = path[: -len("/rest")]
    return parts.netloc + path
