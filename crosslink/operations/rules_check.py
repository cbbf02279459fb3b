"""Does the links file hold the rules in force? What `crosslink lint-config` and `crosslink doctor`
say about approvals.

Editing links.yaml no longer changes what crosses: a link's rules change only as a version both
sides approved (docs/mapping.md, crosslink.journal.versions). An operator who edits the file and
restarts would otherwise find nothing changed and not know why, so both commands compare each
link's rules in the file (crosslink.journal.chain.rule_version) with its versions in the journal
and say where the file stands: the rules in force (nothing to say), a proposal waiting for the
sides that have not approved it yet, a change nobody has proposed (with the command that proposes
it), or a link with no version yet (version 1 is recorded at the first worker start).

lint-config is meant to run anywhere, offline and in CI, so the journal is read only when its
database is at hand: an SQLite file that already exists (beside the links file, or the one
CROSSLINK_JOURNAL_URL names), or a server that answers within JOURNAL_CONNECT_TIMEOUT_S.
Nothing here creates a journal: opening an SQLite URL would make the file.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic.util import CommandError

from crosslink.base.settings import Settings, get_settings
from crosslink.journal.approvals import ACTIVE, PROPOSED
from crosslink.journal.chain import rule_version
from crosslink.journal.store import Journal, journal_url
from crosslink.journal.versions import MappingVersions, Version
from schemas.links import Link, LintIssue, lint_file, load_links

# Where the file stands against the link's versions.
IN_FORCE, WAITING, UNAPPROVED, FIRST = "in force", "waiting", "unapproved", "first"
# What asks for an operator's action: a warning, never an error (the file itself is sound).
WARNINGS = frozenset({WAITING, UNAPPROVED})
# A journal server that does not answer this fast is taken as out of reach: lint-config stays
# quick where no database is at hand (libpq otherwise waits for TCP, minutes on a dropped route).
JOURNAL_CONNECT_TIMEOUT_S = 3


@dataclass(frozen=True)
class Standing:
    """Where LINK's rules in the links file stand (STATE), said for people, with the command to run."""

    link: str
    state: str
    message: str
    fix: str = ""


@dataclass(frozen=True)
class RulesCheck:
    """The STANDINGS of the links checked against the journal at JOURNAL (shown without its
    password); UNREAD says why none were checked (no journal at hand, or one that cannot be read)."""

    journal: str
    standings: tuple[Standing, ...] = ()
    unread: str | None = None


def standing(link: Link, history: Sequence[Version], file_name: str = "links.yaml") -> Standing:
    """Where LINK (as FILE_NAME has it) stands against its versions, HISTORY (oldest first).

    Assumes at most one version is in force and at most one proposal waits
    (crosslink.journal.approvals.decide keeps it so)."""
    name, digest = link.name, rule_version(link)
    active = next((version for version in history if version.state == ACTIVE), None)
    pending = next((version for version in history if version.state == PROPOSED), None)
    if active is None:
        return Standing(name, FIRST, f"no rule version recorded yet: {file_name}'s rules will be set up as "
                                     "version 1, approved by both sides as the link's set-up, at the first worker start")
    if digest == active.rules_hash:
        return Standing(name, IN_FORCE, f"{file_name} holds the rules in force (v{active.number})")
    if pending is not None and digest == pending.rules_hash:
        approved = sorted(pending.approvals())
        awaiting = sorted(pending.needs - set(approved)) or sorted(pending.needs)
        done = f" ({', '.join(approved)} approved)" if approved else ""
        return Standing(name, WAITING, f"{file_name} holds proposed v{pending.number}: waiting for approval by "
                                       f"{' and '.join(awaiting)}{done}; the rules in force (v{active.number}) "
                                       "stay until then",
                        f"see who approved what: crosslink mapping show --link {name}")
    earlier = next((version for version in reversed(history) if version.rules_hash == digest), None)
    held = f" back to those of v{earlier.number} ({earlier.state})" if earlier is not None else ""
    supersede = f"; proposing it supersedes pending v{pending.number}" if pending is not None else ""
    return Standing(name, UNAPPROVED, f"{file_name} changes the rules in force (v{active.number}){held}: "
                                      f"not approved yet{supersede}",
                    f"propose it with: crosslink mapping propose --link {name} "
                    f"(what it changes: crosslink mapping diff --link {name})")


def out_of_reach(url: str) -> str | None:
    """Why the journal database at URL cannot be read without making one (None: it can): an
    SQLite file must exist, a server must answer within JOURNAL_CONNECT_TIMEOUT_S."""
    parsed = sa.engine.make_url(url)
    shown = parsed.render_as_string(hide_password=True)
    if parsed.drivername.startswith("sqlite"):
        found = bool(parsed.database) and parsed.database != ":memory:" and Path(parsed.database).is_file()
        return None if found else f"no journal database at {shown}"
    timeout = {"connect_timeout": JOURNAL_CONNECT_TIMEOUT_S} if parsed.drivername.startswith("postgresql") else {}
    engine = sa.create_engine(parsed, connect_args=timeout)
    try:
        with engine.connect():
            return None
    except sa.exc.SQLAlchemyError as exc:
        return f"the journal at {shown} does not answer ({type(exc).__name__})"
    finally:
        engine.dispose()


def check_rules(links: Sequence[Link], links_path: str | None = None, settings: Settings | None = None) -> RulesCheck:
    """Where each of LINKS (from LINKS_PATH, else the settings' file) stands against its versions
    in the deployment's journal (CROSSLINK_JOURNAL_URL, else the SQLite file beside the links
    file), when that journal is at hand."""
    settings = settings or get_settings()
    source = links_path or settings.links_path
    url = journal_url(settings, source)
    shown = sa.engine.make_url(url).render_as_string(hide_password=True)
    unreachable = out_of_reach(url)
    if unreachable:
        return RulesCheck(shown, unread=unreachable)
    try:
        journal = Journal(url)
    except (sa.exc.SQLAlchemyError, CommandError) as exc:
        return RulesCheck(shown, unread=f"the journal at {shown} cannot be read ({type(exc).__name__})")
    try:
        versions = MappingVersions(journal)
        file_name = Path(source).name
        return RulesCheck(shown, tuple(standing(link, versions.history(link.name), file_name) for link in links))
    except sa.exc.SQLAlchemyError as exc:
        return RulesCheck(shown, unread=f"the journal at {shown} cannot be read ({type(exc).__name__})")
    finally:
        journal.close()


@dataclass(frozen=True)
class LintReport:
    """`crosslink lint-config`'s verdict on a file: its ISSUES (errors), and once it has none,
    where each link's rules stand against the journal (RULES; None: the file did not load)."""

    issues: list[LintIssue]
    rules: RulesCheck | None = None

    def notices(self) -> list[Standing]:
        """What to tell about the rules: every standing but the rules in force."""
        return [found for found in (self.rules.standings if self.rules else ()) if found.state != IN_FORCE]


def lint_links_file(path: str) -> LintReport:
    """Lint the links file at PATH; when it is sound, check its links' rules against the journal."""
    issues = lint_file(path)
    if issues:
        return LintReport(issues)
    return LintReport([], check_rules(load_links(path).links, path))
