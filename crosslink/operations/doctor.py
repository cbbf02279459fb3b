"""Will this link work? `crosslink doctor --link X` checks it against the live accounts and producer.

`crosslink lint-config` proves the links file is consistent in itself; it cannot know whether
the ids in it exist. A status id from the wrong account, a deactivated delegate, a token made
without the comment scope or a scenario posting the wrong secret all pass the lint and then fail
one sync job at a time, late and far from their cause. The doctor asks each side's account and
the producer directly and prints one line per check: `ok`, `FAIL` (with the config path where
there is one, and the fix), `skip` (an earlier failure makes the check meaningless), `note`
(what cannot be checked, said so) or `warn` (the link works, but not as the file says: its rules
in links.yaml are not the version both sides approved, crosslink.operations.rules_check). It
exits 1 when anything FAILs; a warning does not fail it.

What it does to the accounts: read-only calls only, through the accounts' shared limiter in Redis
(so it may run beside live workers without breaking 1 request/s), about eight per side. Write
scopes cannot be probed without writing, and the doctor never writes into an account, so it names
the write scopes the sync needs and says they were not probed. The webhook check posts a `test`
event to the producer, which keeps it in Redis instead of queuing a job.

Secrets never appear in the output: checks name the environment variable that holds a token or
secret, Planfix error texts come scrubbed by the client, and the Redis URL is shown without its
credentials.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import redis

from crosslink.base.logs import register_secret
from crosslink.base.settings import get_settings
from crosslink.operations.health import default_producer_url
from crosslink.operations.rules_check import FIRST, IN_FORCE, UNAPPROVED, WAITING, check_rules
from crosslink.operations.session import cli_client
from planfix.client import PlanfixClient
from planfix.errors import AccessDenied, AuthError, NotFound, PlanfixError, RateLimited, ScopeDenied, TransientError
from planfix.limiter import AccountLimiter
from producers.receiver import key_for_test_event
from producers.scenarios import hook_path, request_auth
from schemas.links import SIDES, ConfigError, Link, SecretMissing, find_link, load_links

# A check's outcome; FAIL in capitals so it stands out in a column of ok lines.
OK, FAIL, SKIP, NOTE, WARN = "ok", "FAIL", "skip", "note", "warn"

# How the doctor reports where links.yaml's rules stand: a change the sides have not approved is a
# warning (the link works, on the version in force), never a failure.
RULE_LEVELS = {IN_FORCE: OK, WAITING: WARN, UNAPPROVED: WARN, FIRST: NOTE}

# The read scopes the sync uses (Planfix's scope names, API-NOTES section 1), with what for.
READ_SCOPES = {
    "task_readonly": "read tasks, checklists, processes, statuses and custom fields",
    "comment_readonly": "read comments",
    "user_readonly": "look employees up (delegation, the poller's time zone)",
    "file_readonly": "download files to copy them across",
}
# The write scopes the sync uses. There is no read-only way to test one, so they are only named.
WRITE_SCOPES = ("task_add", "task_update", "comment_add", "comment_update", "file_add")
# Where an admin makes or edits a token (API-NOTES section 1), quoted in every token fix.
TOKEN_PAGE = "Planfix: Account management > API access > REST API"
# No account has file 0: GET /file/0 answers 404 to a token that may read files and 405 code 5
# to one that may not. Assumption: Planfix checks the scope, a property of the method, before it
# looks the object up (the emulator does; 405 "method not allowed" is a per-method answer).
NO_SUCH_FILE = 0
# The producer keeps a `test` event in Redis and queues nothing; task 1 only satisfies the schema.
TEST_EVENT_BODY = {"event": "test", "task": 1}
# The producer answers at once (it only writes to Redis); longer means it is not answering.
WEBHOOK_TIMEOUT_S = 10.0
# A Redis that needs longer to answer PING is as good as down for the doctor's purpose.
REDIS_TIMEOUT_S = 3.0
# How many of an account's statuses or fields a fix may list before it is too long to read.
MAX_LISTED = 12

T = TypeVar("T")


@dataclass(frozen=True)
class Finding:
    level: str  # OK | FAIL | SKIP | NOTE | WARN
    check: str  # what was checked, e.g. "partner scope user_readonly"
    message: str
    fix: str = ""

    def line(self) -> str:
        return f"{self.level:<4} {self.check}: {self.message}" + (f" (fix: {self.fix})" if self.fix else "")


def safe_redis_url(url: str) -> str:
    """URL without its user and password."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "") + parts.path


def _listing(items: Iterable[Mapping[str, Any]]) -> str:
    items = list(items)
    shown = ", ".join(f"{item.get('id')} {item.get('name', '')}".strip() for item in items[:MAX_LISTED])
    return shown + (f", ... ({len(items)} in all)" if len(items) > MAX_LISTED else "") if items else "none"


def _add(refs: dict[Any, list[str]], key: Any, path: str) -> None:
    places = refs.setdefault(key, [])
    if path not in places:
        places.append(path)


class SideDoctor:
    """The checks of one side's account: token, read scopes, and every id the link names there."""

    def __init__(self, link: Link, at: str, side: str, limiter: AccountLimiter, env: Mapping[str, str],
                 out: list[Finding]):
        self.link, self.at, self.side, self.limiter, self.env, self.out = link, at, side, limiter, env, out
        self.conf = link.sides[side]
        self.other = link.other(side)

    def report(self, level: str, what: str, message: str, fix: str = "") -> None:
        self.out.append(Finding(level, f"{self.side} {what}", message, fix))

    def run(self) -> None:
        try:
            client = cli_client(self.link, self.side, self.limiter, self.env)
        except SecretMissing as exc:
            self.report(FAIL, "token", str(exc),
                        f"export {self.conf.token_env} with a REST API token of {self.conf.account} ({TOKEN_PAGE})")
            return
        with client:
            if not self.ping(client):
                self.report(SKIP, "scopes, statuses, users, custom fields", "the account does not accept the token")
                return
            granted, answers = {}, {}
            for scope, action in self.read_probes(client).items():
                granted[scope], answers[scope] = self.call(f"scope {scope}", scope, action)
                if granted[scope]:
                    self.report(OK, f"scope {scope}", "granted")
            self.check_statuses(client, granted["task_readonly"])
            self.check_users(granted["user_readonly"], answers["user_readonly"])
            self.check_custom_fields(client, granted["task_readonly"])
        self.report(NOTE, "write scopes", f"{', '.join(WRITE_SCOPES)} are needed too; not probed, as only "
                    "a write could test them", f"make sure the token in {self.conf.token_env} has them")

    # -- calls and their failures -------------------------------------------------------------

    def failure(self, what: str, exc: PlanfixError, scope: str) -> None:
        """Report EXC, raised by a call that needs SCOPE, as WHAT's failure with its fix."""
        env = self.conf.token_env
        if isinstance(exc, ScopeDenied):
            self.report(FAIL, f"scope {scope}", f"{exc.message}: the token in {env} lacks scope {scope}, "
                        f"which the sync needs to {READ_SCOPES[scope]}",
                        f"add scope {scope} to the token ({TOKEN_PAGE}) or make one with every scope the sync needs")
        elif isinstance(exc, AuthError):
            self.report(FAIL, "token", f"{self.conf.account} does not accept the token in {env}: {exc.message}",
                        f"make a REST API token for {self.conf.integration_user} ({TOKEN_PAGE}) and put it in {env}")
        elif isinstance(exc, AccessDenied):
            self.report(FAIL, what, exc.message,
                        f"give {self.conf.integration_user} access in Planfix, or check that the account "
                        "is paid up and not blocked")
        elif isinstance(exc, RateLimited):
            self.report(FAIL, what, f"{exc.message} (waited as long as a command may)",
                        "run the doctor again when the account's limit allows")
        elif isinstance(exc, TransientError):
            self.report(FAIL, what, f"no usable answer from {self.conf.base_url}: {exc.message}",
                        f"check sides.{self.side}.base_url and that the account is reachable from here")
        else:
            self.report(FAIL, what, exc.message, "see Planfix's answer above")

    def call(self, what: str, scope: str, action: Callable[[], T]) -> tuple[bool, T | None]:
        try:
            return True, action()
        except PlanfixError as exc:
            self.failure(what, exc, scope)
            return False, None

    def ping(self, client: PlanfixClient) -> bool:
        done, _ = self.call("ping", "task_readonly", client.ping)
        if done:
            self.report(OK, "token", f"{self.conf.base_url} accepts the token in {self.conf.token_env}")
        return done

    def read_probes(self, client: PlanfixClient) -> dict[str, Callable[[], Any]]:
        """One read-only call per scope; the user list is kept for the delegation check."""

        def no_such_file() -> None:
            try:
                client.get_file(NO_SUCH_FILE, fields="id")
            except NotFound:
                return None

        return {
            "task_readonly": lambda: next(iter(client.list_tasks(fields="id", page_size=1)), None),
            "comment_readonly": lambda: next(iter(client.list_comments(fields="id", page_size=1)), None),
            "user_readonly": lambda: client.list_users(only_active=False, fields="id,name,lastname,status"),
            "file_readonly": no_such_file,
        }

    # -- ids the link names on this side ------------------------------------------------------

    def status_refs(self) -> dict[int, list[str]]:
        side, other, statuses = self.side, self.other, self.link.statuses
        refs: dict[int, list[str]] = {}
        for source in statuses.forward(side):
            _add(refs, source, f"{self.at}.statuses.{side}_to_{other}[{source}]")
        for source, target in statuses.forward(other).items():
            _add(refs, target, f"{self.at}.statuses.{other}_to_{side}[{source}]")
        for status, moves in statuses.transitions.get(side, {}).items():
            for named in (status, *moves):
                _add(refs, named, f"{self.at}.statuses.transitions.{side}[{status}]")
        for number, rule in enumerate(statuses.rules):
            for end, rule_side, status in (("when", rule.when_side, rule.when_status),
                                           ("then", rule.then_side, rule.then_status)):
                if rule_side == side:
                    _add(refs, status, f"{self.at}.statuses.rules[{number}].{end}.status")
        if self.conf.create.initial_status is not None:
            _add(refs, self.conf.create.initial_status, f"{self.at}.sides.{side}.create.initial_status")
        return refs

    def user_refs(self) -> tuple[dict[str, list[str]], list[str]]:
        """("user:N" -> config paths, contacts named): every employee the link names on this side."""
        side, people, at = self.side, self.link.people, self.at
        named: list[tuple[str | None, str]] = [(self.conf.integration_user, f"{at}.sides.{side}.integration_user")]
        if self.conf.scope.kind == "participant":
            named.append((self.conf.scope.value, f"{at}.sides.{side}.scope.participant"))
        named += [(getattr(pair, side), f"{at}.people.pairs[{n}].{side}") for n, pair in enumerate(people.pairs)]
        named += [(role.user, f"{at}.people.roles.{name}.user") for name, role in people.roles.items()
                  if role.side == side]
        # A representative stands in on the OTHER side's account; a fallback is of its own side.
        named.append((people.representatives[self.other], f"{at}.people.representatives.{self.other}"))
        named.append((people.fallback[side], f"{at}.people.fallback.{side}"))
        refs: dict[str, list[str]] = {}
        contacts: list[str] = []
        for person, path in named:
            if person and person.startswith("user:"):
                _add(refs, person, path)
            elif person and person.startswith("contact:"):
                contacts.append(path)
        return refs, contacts

    def field_refs(self) -> dict[int, list[str]]:
        refs: dict[int, list[str]] = {}
        for number, rule in enumerate(self.link.fields.custom):
            _add(refs, rule.id_on(self.side), f"{self.at}.fields.custom[{number}].{self.side}")
        if self.conf.assignee_note_field is not None:
            _add(refs, self.conf.assignee_note_field, f"{self.at}.sides.{self.side}.assignee_note_field")
        if self.conf.scope.kind in ("custom_field", "tag") and self.conf.scope.field is not None:
            _add(refs, self.conf.scope.field, f"{self.at}.sides.{self.side}.scope.{self.conf.scope.kind}")
        return refs

    # -- the checks ---------------------------------------------------------------------------

    def check_statuses(self, client: PlanfixClient, can_read: bool) -> None:
        if not can_read:
            self.report(SKIP, "statuses", "needs scope task_readonly")
            return
        process = self.conf.create.process
        if process is not None:
            try:
                found, done = client.list_statuses(process), True
            except NotFound:
                self.missing_process(client, process)
                return
            except PlanfixError as exc:
                self.failure("statuses", exc, "task_readonly")
                return
            where, listed_as = f"process {process} (sides.{self.side}.create.process)", f"process {process}'s"
        else:
            done, processes = self.call("statuses", "task_readonly", client.list_processes)
            found = []
            for item in processes or []:
                ok, listed = self.call("statuses", "task_readonly", lambda: client.list_statuses(int(item["id"])))
                done = done and ok
                found += listed or []
            where, listed_as = "any task process of the account", "the account's"
        if not done:
            return
        known = {int(status["id"]) for status in found or []}
        missing = {status: paths for status, paths in self.status_refs().items() if status not in known}
        for status, paths in sorted(missing.items()):
            self.report(FAIL, f"status {status}", f"not a status of {where}; named at {', '.join(paths)}",
                        f"use one of {listed_as} statuses: {_listing(found or [])}; or create it in Planfix")
        if not missing:
            self.report(OK, "statuses", f"the {len(self.status_refs())} status ids the link names exist in {where}")

    def missing_process(self, client: PlanfixClient, process: int) -> None:
        _, processes = self.call("processes", "task_readonly", client.list_processes)
        self.report(FAIL, f"process {process}", f"no task process {process} in {self.conf.account}; named at "
                    f"{self.at}.sides.{self.side}.create.process",
                    f"use one of the account's processes: {_listing(processes or [])}")

    def check_users(self, can_read: bool, users: list[dict[str, Any]] | None) -> None:
        refs, contacts = self.user_refs()
        if contacts:
            self.report(NOTE, "contacts", f"contacts are not checked (named at {', '.join(contacts)})")
        if not can_read:
            self.report(SKIP, "users", "needs scope user_readonly")
            return
        by_id = {str(user.get("id")): user for user in users or []}
        problems = 0
        for person, paths in refs.items():
            user = by_id.get(person)
            if user is None:
                problems += 1
                self.report(FAIL, f"user {person}", f"no such employee in {self.conf.account}; named at "
                            f"{', '.join(paths)}", f"name an employee of the {self.side} account, or add "
                            f"{person} there in Planfix")
            elif user.get("status") == "Inactive" or user.get("isDeleted"):
                problems += 1
                name = " ".join(filter(None, (user.get("name"), user.get("lastname"))))
                self.report(FAIL, f"user {person}", f"{name or person} is inactive in {self.conf.account}; "
                            f"named at {', '.join(paths)}", "reactivate the employee in Planfix, or name an active one")
        if not problems:
            self.report(OK, "users", f"the {len(refs)} employees the link names exist and are active")

    def check_custom_fields(self, client: PlanfixClient, can_read: bool) -> None:
        refs = self.field_refs()
        if not refs:
            self.report(OK, "custom fields", "the link names none")
            return
        if not can_read:
            self.report(SKIP, "custom fields", "needs scope task_readonly")
            return
        done, fields = self.call("custom fields", "task_readonly", client.list_custom_fields)
        if not done:
            return
        known = {int(field["id"]) for field in fields or []}
        missing = {field: paths for field, paths in refs.items() if field not in known}
        for field, paths in sorted(missing.items()):
            self.report(FAIL, f"custom field {field}", f"no task custom field {field} in {self.conf.account}; "
                        f"named at {', '.join(paths)}", f"use one of the account's task custom fields: "
                        f"{_listing(fields or [])}; or create it in Planfix")
        if not missing:
            self.report(OK, "custom fields", f"the {len(refs)} task custom fields the link names exist")


def check_webhook(link: Link, side: str, store: redis.Redis, redis_shown: str, producer_url: str,
                  env: Mapping[str, str], out: list[Finding]) -> None:
    """Post a test event as SIDE's scenarios would, and look for it in Redis."""
    conf = link.sides[side]
    what = f"{side} webhook"
    try:
        secret = conf.webhook_secret(env)
    except SecretMissing as exc:
        out.append(Finding(FAIL, what, str(exc), f"export {conf.webhook_secret_env} with the secret the "
                                                  f"{side} account's scenarios send"))
        return
    register_secret(secret)
    arrival = key_for_test_event(link.name, side)
    store.delete(arrival)  # a test event of an earlier run proves nothing about this one
    url = producer_url.rstrip("/") + hook_path(link.name, side)
    try:
        response = httpx.post(url, json=TEST_EVENT_BODY, headers=request_auth(conf.webhook_auth, secret),
                              timeout=WEBHOOK_TIMEOUT_S)
    except httpx.HTTPError as exc:
        out.append(Finding(FAIL, what, f"the producer at {producer_url} is unreachable ({type(exc).__name__})",
                           "start it (`crosslink producer` or `crosslink run`), or pass --producer-url"))
        return
    problem = {
        401: (f"the producer refused the secret in {conf.webhook_secret_env} (HTTP 401)",
              f"the producer, this shell and the {side} account's scenarios must hold the same secret "
              f"(sent as {conf.webhook_auth} auth)"),
        404: (f"the producer knows no link {link.name!r} side {side!r} (HTTP 404)",
              "restart the producer with this links file (CROSSLINK_LINKS)"),
        503: ("the producer cannot reach its Redis (HTTP 503)", "check the producer's REDIS_URL"),
    }.get(response.status_code)
    if problem is None and response.status_code != 200:
        problem = (f"the producer answered HTTP {response.status_code}", "see the producer's log")
    if problem is None and store.get(arrival) is None:
        problem = (f"the producer answered 200 but the test event did not arrive in Redis at {redis_shown}",
                   "the producer and the doctor must use the same REDIS_URL")
    if problem is not None:
        out.append(Finding(FAIL, what, *problem))
        return
    out.append(Finding(OK, what, f"a test event posted to {url} arrived in Redis"))


def run_doctor(link: Link, at: str, redis_url: str, producer_url: str, env: Mapping[str, str],
               rate_per_s: float) -> list[Finding]:
    """Every check of LINK (AT is its config path, "links[0]"), in the order they are printed."""
    out: list[Finding] = []
    store = redis.Redis.from_url(redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S)
    redis_shown = safe_redis_url(redis_url)
    try:
        try:
            store.ping()
        except redis.RedisError as exc:
            out.append(Finding(FAIL, "redis", f"{redis_shown} does not answer ({type(exc).__name__})",
                               "start Redis or set REDIS_URL: the doctor paces its Planfix calls with the "
                               "accounts' shared limiter there, and test events arrive there"))
            out.append(Finding(SKIP, "accounts, webhooks", "need Redis"))
            return out
        out.append(Finding(OK, "redis", f"{redis_shown} answers"))
        limiter = AccountLimiter(store, rate_per_s=rate_per_s)
        for side in SIDES:
            SideDoctor(link, at, side, limiter, env, out).run()
            check_webhook(link, side, store, redis_shown, producer_url, env, out)
    finally:
        store.close()
    return out


class LinkUnreadable(Exception):
    """The link to check cannot be loaded: no such link in the links file, or a links file that
    does not load; the message says which, for the operator."""


def doctor_link(link_name: str, links_path: str | None = None,
                producer_url: str | None = None) -> tuple[Link, list[Finding]]:
    """The link named LINK_NAME in LINKS_PATH (else the settings') and run_doctor's findings on
    it, against the configured Redis and PRODUCER_URL (else where this machine reaches the
    producer); LinkUnreadable when the link cannot be loaded."""
    settings = get_settings()
    try:
        config = load_links(links_path or settings.links_path)
        link = find_link(config, link_name)
    except KeyError as exc:
        raise LinkUnreadable(str(exc.args[0])) from None
    except (ConfigError, OSError) as exc:
        raise LinkUnreadable(f"{exc} (see `crosslink lint-config`)") from None
    findings = run_doctor(link, f"links[{config.links.index(link)}]", settings.redis_url,
                          producer_url or default_producer_url(), os.environ, settings.rate_per_s)
    return link, findings + rules_findings(link, links_path or settings.links_path)


def rules_findings(link: Link, links_path: str) -> list[Finding]:
    """Whether LINK's rules in LINKS_PATH are the version in force in the journal, when the
    journal is at hand (the doctor makes none): ok, warn (not approved yet, or waiting for a
    side) or note (not checked; no version yet)."""
    checked = check_rules([link], links_path)
    if checked.unread:
        return [Finding(NOTE, "rules", f"approvals not checked: {checked.unread}",
                        "none before the link's first start is right (version 1 is recorded then); else run "
                        "the doctor where the deployment's journal is: beside its links file, or its "
                        "CROSSLINK_JOURNAL_URL")]
    return [Finding(RULE_LEVELS[found.state], "rules", found.message, found.fix) for found in checked.standings]
