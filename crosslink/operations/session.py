"""What every operator command on one link works with: its link, Redis and limited clients.

An operator's command (reconcile, acknowledge, pair, mirror, doctor, relink) runs beside live
workers, so its Planfix calls go through the accounts' shared limiter in Redis, and unlike a
worker it may simply sleep for its turn. Building that session once here keeps every command
closing what it opened the same way. Its link is the one the workers run: links.yaml's deployment
under the rules in force (link_in_force).
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import redis
import sqlalchemy as sa

from crosslink.base.logs import register_secret
from crosslink.base.settings import Settings, get_settings
from crosslink.journal.rules import link_from_rules
from crosslink.journal.store import Journal, journal_url
from crosslink.journal.versions import MappingVersions
from planfix.client import PlanfixClient
from planfix.limiter import AccountLimiter
from schemas.links import Link, find_link, load_links


def cli_client(link: Link, side: str, limiter: AccountLimiter,
               env: Mapping[str, str] | None = None) -> PlanfixClient:
    """A client for an operator command: it may sleep for the limiter instead of failing."""
    conf = link.sides[side]
    token = conf.token(os.environ if env is None else env)
    register_secret(token)
    return PlanfixClient(conf.base_url, token, account=conf.account, limiter=limiter,
                         sleep_on_limit=True, link=link.name)


@dataclass
class OperatorSession:
    """What an operator command on one link works with: the settings, the link, Redis, and a
    client per side that sleeps for the shared limiter (cli_client)."""

    settings: Settings
    link: Link
    store: redis.Redis
    clients: dict[str, PlanfixClient]


def load_link(link_name: str, links_path: str | None = None) -> Link:
    """The link named LINK_NAME in LINKS_PATH (else the settings'); KeyError naming the known ones."""
    return find_link(load_links(links_path or get_settings().links_path), link_name)


def stopping_signal(stop: BaseException) -> str:
    """The signal that stopped an operator's command, from what it raised (STOP): a
    KeyboardInterrupt is SIGINT, and crosslink.cli ends a command SIGNUM stopped with
    SystemExit(128 + SIGNUM); "exit" for any other SystemExit."""
    code = getattr(stop, "code", None)
    if isinstance(code, int) and code > 128:
        try:
            return signal.Signals(code - 128).name
        except ValueError:
            pass
    return "SIGINT" if isinstance(stop, KeyboardInterrupt) else "exit"


def link_in_force(link_name: str, links_path: str | None = None, settings: Settings | None = None) -> Link:
    """The link LINK_NAME as the workers run it (workers.runtime.Runtime.link): links.yaml's
    deployment with the rules of the version in force (crosslink.journal.versions), or the file's
    rules while the link has none yet (its first run records them as version 1). An operator's
    compare or repair under rules nobody approved yet would report drift the workers never make,
    and queue syncs by rules they do not run. A journal that does not exist yet (no SQLite file
    beside links.yaml) holds no version, and is not made here."""
    settings = settings or get_settings()
    in_file = load_link(link_name, links_path)
    url = sa.engine.make_url(journal_url(settings, links_path))
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        return in_file
    journal = Journal(str(url))
    try:
        version = MappingVersions(journal).active(link_name)
    finally:
        journal.close()
    return link_from_rules(version.rules, in_file) if version is not None else in_file


@contextmanager
def operator_session(link: Link, env: Mapping[str, str] | None = None) -> Iterator[OperatorSession]:
    """An OperatorSession for LINK, closed after: its settings and tokens from ENV, else this
    process's (a lab stack passes its own, which its processes have and this one does not)."""
    settings = get_settings() if env is None else Settings.from_env(dict(env))
    store = redis.Redis.from_url(settings.redis_url)
    limiter = AccountLimiter(store, rate_per_s=settings.rate_per_s, daily_quota=settings.daily_quota)
    clients = {side: cli_client(link, side, limiter, env) for side in link.sides}
    try:
        yield OperatorSession(settings, link, store, clients)
    finally:
        for client in clients.values():
            client.close()
        store.close()
