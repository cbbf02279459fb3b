"""The link configuration (links.yaml): what binds two Planfix accounts, checked before anything runs.

Four rooms, each importing only the ones above it in this list:
- ``model``: the configuration as frozen dataclasses and its constants (no marshmallow, no YAML);
- ``schema``: marshmallow schemas that check shapes and types and build the model, and the
  defaults of every optional key;
- ``lint``: every problem in a file at once, with its line and a fix (``crosslink lint-config``);
- ``load``: the start-up path, where any problem raises ``ConfigError``.

Importers name only ``schemas.links``, never a module inside it, so the modules behind these names
can be rearranged without touching an importer. ``__all__`` lists exactly the names code elsewhere
imports today.
"""

from __future__ import annotations

from schemas.links.lint import LintIssue, lint_file, reachable_statuses
from schemas.links.load import ConfigError, load_links, parse_links
from schemas.links.model import (
    DIRECTIONS,
    NOTE_LANGUAGES,
    SIDES,
    SYSTEM_FIELDS,
    CreateSettings,
    CustomFieldRule,
    FieldRule,
    Link,
    LinksConfig,
    People,
    PersonPair,
    Role,
    Scope,
    SecretMissing,
    SendControls,
    Side,
    StatusRule,
    derive_account,
    find_link,
)

__all__ = [
    "DIRECTIONS",
    "NOTE_LANGUAGES",
    "SIDES",
    "SYSTEM_FIELDS",
    "ConfigError",
    "CreateSettings",
    "CustomFieldRule",
    "FieldRule",
    "Link",
    "LinksConfig",
    "LintIssue",
    "People",
    "PersonPair",
    "Role",
    "Scope",
    "SecretMissing",
    "SendControls",
    "Side",
    "StatusRule",
    "derive_account",
    "find_link",
    "lint_file",
    "load_links",
    "parse_links",
    "reachable_statuses",
]
