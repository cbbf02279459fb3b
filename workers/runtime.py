"""What one worker process holds for its whole life: the links, one Redis client, one limiter,
and one Planfix client per (link, side) sharing one HTTP connection pool.

Built lazily and per process id, because Celery's prefork pool forks after import: a client
made before the fork would share sockets between children.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from functools import cached_property

import redis

from crosslink.base.logs import register_secret
from crosslink.base.settings import Settings, get_settings
from crosslink.journal.rules import link_from_rules
from crosslink.journal.store import Journal, journal_url
from crosslink.journal.versions import MappingVersions
from crosslink.queue.enqueue import Enqueuer
from planfix.client import CONNECT_TIMEOUT_S, PlanfixClient
from planfix.http import Http
from planfix.limiter import AccountLimiter
from schemas.links import Link, LinksConfig, load_links
from workers.idempotency import LEASE_TTL_MS, MIN_LEASE_TTL_MS, WriteOnce, scaled_ttl_ms
from workers.record import Recorder
from workers.state import LinkState
from workers.sync import ADMISSION_LIMIT_WAIT_S

# Planfix answers within a few seconds; a write still unanswered after the settings' read
# timeout (CROSSLINK_PLANFIX_TIMEOUT_S, 10 s) is treated as "maybe applied" and checked before
# it is retried.
# Kept-alive connections of a worker process, over all Planfix hosts (httpx counts them together):
# its slots send one request at a time each, to at most two accounts per link.
HTTP_KEEP_ALIVE = 10
# How long a worker process runs a link on the version in force it read (seconds): a version
# both sides approved is in force for every run begun this long after.
IN_FORCE_TTL_S = 1.0


@dataclass
class Runtime:
    settings: Settings
    config: LinksConfig
    env: dict[str, str] = field(default_factory=lambda: dict(os.environ))
    _clients: dict[tuple[str, str], PlanfixClient] = field(default_factory=dict)
    # Each link as its version in force has it, and when that was read (link).
    _in_force: dict[str, tuple[float, Link]] = field(default_factory=dict)

    @cached_property
    def redis(self) -> redis.Redis:
        return redis.Redis.from_url(self.settings.redis_url)

    @cached_property
    def limiter(self) -> AccountLimiter:
        return AccountLimiter(self.redis, rate_per_s=self.settings.rate_per_s,
                              daily_quota=self.settings.daily_quota)

    @cached_property
    def http(self) -> Http:
        return Http(timeout=self.settings.planfix_timeout_s, connect_timeout=CONNECT_TIMEOUT_S, max_idle=HTTP_KEEP_ALIVE)

    @cached_property
    def enqueuer(self) -> Enqueuer:
        """For the jobs a worker sends the producers' way (more batches: workers.tasks)."""
        return Enqueuer(self.settings.redis_url)

    @cached_property
    def writes(self) -> WriteOnce:
        return WriteOnce(self.redis, lease_ttl_ms=scaled_ttl_ms(LEASE_TTL_MS, MIN_LEASE_TTL_MS,
                                                                self.settings.time_scale))

    @cached_property
    def journal(self) -> Journal:
        """The links' journals (CROSSLINK_JOURNAL_URL, else SQLite beside the links file)."""
        return Journal(journal_url(self.settings, self.settings.links_path))

    @cached_property
    def versions(self) -> MappingVersions:
        return MappingVersions(self.journal)

    def recorder(self, link: Link) -> Recorder:
        """LINK's journal, its entries stamped with LINK's rules (the version in force: link)."""
        return Recorder(self.journal, link)

    def link(self, name: str) -> Link:
        """The link NAME as the version of its rules in force has it (crosslink.journal.versions),
        with links.yaml's deployment (URLs, accounts, secrets' variables): a change to the file's
        rules is in force only once both sides approved it. A link with no version yet is set up
        here: its file's rules are version 1."""
        known = self._in_force.get(name)
        if known is not None and time.monotonic() - known[0] < IN_FORCE_TTL_S:
            return known[1]
        in_file = self.file_link(name)
        version = self.versions.active(name) or self.versions.ensure_first(in_file)
        link = link_from_rules(version.rules, in_file)
        self._in_force[name] = (time.monotonic(), link)
        return link

    def file_link(self, name: str) -> Link:
        """The link NAME as links.yaml has it now, rules approved or not."""
        for link in self.config.links:
            if link.name == name:
                return link
        raise KeyError(f"no link named {name!r} in {self.settings.links_path}")

    def state(self, link: str) -> LinkState:
        return LinkState(self.redis, link)

    def client(self, link: Link, side: str) -> PlanfixClient:
        key = (link.name, side)
        if key not in self._clients:
            conf = link.sides[side]
            token = conf.token(self.env)
            register_secret(token)
            # Each run sets how long its requests may wait for the limiter inside the worker
            # slot (workers.sync): a run's first request never waits for its link's turn here.
            self._clients[key] = PlanfixClient(
                conf.base_url, token, account=conf.account, limiter=self.limiter, http=self.http,
                timeout=self.settings.planfix_timeout_s, sleep_on_limit=True, max_limit_sleep_s=ADMISSION_LIMIT_WAIT_S,
                lane=link.name, link=link.name,
            )
        return self._clients[key]


_runtime: tuple[int, Runtime] | None = None


def runtime() -> Runtime:
    """This process's runtime, built on first use after any fork."""
    global _runtime
    if _runtime is None or _runtime[0] != os.getpid():
        settings = get_settings()
        _runtime = (os.getpid(), Runtime(settings=settings, config=load_links(settings.links_path)))
    return _runtime[1]


def reset_runtime() -> None:
    global _runtime
    _runtime = None
