"""One settings object behind a cached accessor, read from the environment.

Every variable is documented in `.env.example`. Secrets (API tokens, webhook secrets) are not
settings: links.yaml names the variables that hold them, and only the link code reads those.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Settings:
    redis_url: str
    links_path: str
    producer_host: str
    producer_port: int
    # Multiplies every sync back-off and probe delay; the tests and the demo shrink it.
    time_scale: float
    log_level: str
    log_json: bool
    # Planfix allows 1 request/s and 20,000-100,000 a day per account (by plan).
    rate_per_s: float
    daily_quota: int
    # The shortest period between two reconciliation polls of one Planfix account (changes no
    # webhook reported); the budget below usually makes it longer (producers/reconcile).
    reconcile_period_s: float = 60.0
    # How often the beat ticks: each tick polls the accounts whose period has run out, so a poll
    # comes at most this long after its period.
    reconcile_tick_s: float = 10.0
    # The share of each account's daily quota that reconciliation may spend: its polls and its
    # comment audit together (producers/reconcile).
    reconcile_share: float = 0.05
    # The part of reconcile_share the comment audit may spend (edits and deletions of comments,
    # which no feed dates); the polls have the rest (poll_share). 0 turns the audit off.
    audit_share: float = 0.0125
    # How long the broker holds a job a dead worker took before delivering it again (Celery's
    # Redis visibility timeout); only the chaos suite shortens it, to see redelivery in seconds.
    visibility_timeout_s: float = 3600.0
    # Where each worker's main process serves its /metrics (workers/telemetry.py); port 0: nowhere.
    worker_metrics_host: str = "127.0.0.1"
    worker_metrics_port: int = 9540
    # Where the producer keeps webhooks while Redis is unreachable (producers/spool.py); empty:
    # a `spool` folder beside the links file.
    spool_dir: str = ""
    # How many webhooks the spool keeps at most before the producer answers 503 (its disk is
    # finite; producers/spool.py DEFAULT_MAX_WEBHOOKS says what the default holds).
    spool_max_webhooks: int = 100_000
    # How long a worker waits for Planfix's answer to one request (the read timeout). A write
    # unanswered by then is "maybe applied" and looked up before it is repeated; the chaos suite
    # shortens it below the emulator's held "timeout" fault so that fault really times out.
    planfix_timeout_s: float = 10.0
    # The longest a task's run is held, so that a person's edits within it make one run, while its
    # account's day would outrun the quota (crosslink.queue.coalesce); 0 never holds. People save the
    # fields of one card seconds apart, so 30 s merges a whole round of edits while the mirror
    # still follows within a minute (and stays far under the broker's visibility timeout).
    coalesce_max_s: float = 30.0
    # Where the journal of what crossed is kept (crosslink/journal): an SQLAlchemy URL, e.g.
    # postgresql+psycopg://user@host/db; empty: an SQLite file beside the links file.
    journal_url: str = ""
    # How often the journal's head is posted in both accounts of every link (workers/anchors.py),
    # besides at every sever, resume and rule change: a day, as the issue asks at least.
    anchor_period_s: float = 86400.0

    def __post_init__(self) -> None:
        if not 0 <= self.audit_share < self.reconcile_share <= 1:
            raise ValueError("reconciliation shares must be 0 <= CROSSLINK_AUDIT_SHARE < CROSSLINK_RECONCILE_SHARE "
                             f"<= 1 (the audit's is part of it), got {self.audit_share} and {self.reconcile_share}")
        if not self.anchor_period_s > 0:
            raise ValueError(f"CROSSLINK_ANCHOR_PERIOD_S must be > 0, got {self.anchor_period_s}")
        if not self.coalesce_max_s >= 0:
            raise ValueError(f"CROSSLINK_COALESCE_MAX_S must be >= 0 (0 turns coalescing off), "
                             f"got {self.coalesce_max_s}")

    @property
    def poll_share(self) -> float:
        """The share of each account's daily quota the reconciliation polls may spend."""
        return self.reconcile_share - self.audit_share

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        return cls(
            redis_url=env.get("REDIS_URL", "redis://127.0.0.1:6379/0"),
            links_path=env.get("CROSSLINK_LINKS", "links.yaml"),
            producer_host=env.get("CROSSLINK_PRODUCER_HOST", "127.0.0.1"),
            producer_port=int(env.get("CROSSLINK_PRODUCER_PORT", "8080")),
            time_scale=float(env.get("CROSSLINK_TIME_SCALE", "1.0")),
            log_level=env.get("CROSSLINK_LOG_LEVEL", "INFO"),
            log_json=env.get("CROSSLINK_LOG_JSON", "1") not in ("0", "false", "no"),
            rate_per_s=float(env.get("CROSSLINK_RATE_PER_S", "1.0")),
            daily_quota=int(env.get("CROSSLINK_DAILY_QUOTA", "20000")),
            reconcile_period_s=float(env.get("CROSSLINK_RECONCILE_PERIOD_S", "60")),
            reconcile_tick_s=float(env.get("CROSSLINK_RECONCILE_TICK_S", "10")),
            reconcile_share=float(env.get("CROSSLINK_RECONCILE_SHARE", "0.05")),
            audit_share=float(env.get("CROSSLINK_AUDIT_SHARE", "0.0125")),
            visibility_timeout_s=float(env.get("CROSSLINK_VISIBILITY_TIMEOUT_S", "3600")),
            worker_metrics_host=env.get("CROSSLINK_WORKER_METRICS_HOST", "127.0.0.1"),
            worker_metrics_port=int(env.get("CROSSLINK_WORKER_METRICS_PORT", "9540")),
            spool_dir=env.get("CROSSLINK_SPOOL_DIR", ""),
            spool_max_webhooks=int(env.get("CROSSLINK_SPOOL_MAX", "100000")),
            planfix_timeout_s=float(env.get("CROSSLINK_PLANFIX_TIMEOUT_S", "10")),
            coalesce_max_s=float(env.get("CROSSLINK_COALESCE_MAX_S", "30")),
            journal_url=env.get("CROSSLINK_JOURNAL_URL", ""),
            anchor_period_s=float(env.get("CROSSLINK_ANCHOR_PERIOD_S", "86400")),
        )


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings.from_env()
