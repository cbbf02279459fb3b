"""The Celery app: Redis broker, JSON only, late acks, no result backend.

Late acks with reject-on-worker-lost mean a job whose worker dies mid-run is delivered again;
every write it makes is idempotent (workers.idempotency), so running it twice is safe.

The app also includes producers.tasks, the reconciliation poller's tasks (a producer: it turns
Planfix's change filters into sync jobs, so it lives with the producers and is found here by
module name, never imported), and carries the beat schedule that ticks it. Any number of
`crosslink beat` replicas may send the tick: each account's poll takes a per-period turn in
Redis, so an account is polled once per period however many ticks arrive (producers/tasks.py).
The schedule also anchors every link's journal daily (workers/anchors.py); a second beat's
anchor finds the head posted already.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from celery import __version__ as celery_version
from celery.apps import worker as celery_worker_app
from celery.signals import before_task_publish, celeryd_after_setup, celeryd_init, setup_logging

from crosslink.base.logs import configure
from crosslink.base.settings import get_settings
from crosslink.queue.names import ANCHOR_LINK, RECONCILE_TICK, STAMP_RECEIVER_UID, SYNC_QUEUE, stamp_enqueue_time
from workers import (
    heartbeat,  # noqa: F401 - its signal receivers record the worker's heartbeat
    telemetry,  # noqa: F401 - its receivers serve /metrics and count sync runs
)

log = logging.getLogger("crosslink.worker")

# Celery redelivers an unacked message after this; every countdown we use stays well under it.
VISIBILITY_TIMEOUT_S = 3600
# Kombu sweeps for overdue unacked messages every 10 s x 10 calls; a shortened visibility
# timeout (the chaos suite's) needs sweeps at least this often to redeliver within it.
SHORT_VISIBILITY_SWEEPS = 4


def transport_options(visibility_timeout_s: float) -> dict:
    """The broker options for VISIBILITY_TIMEOUT_S; the default one keeps kombu's own sweeps."""
    options: dict = {"visibility_timeout": visibility_timeout_s}
    if visibility_timeout_s < VISIBILITY_TIMEOUT_S:
        options["unacked_restore_interval"] = max(1, int(visibility_timeout_s / SHORT_VISIBILITY_SWEEPS))
        options["unacked_restore_throttle"] = 1
    return options


def make_app(redis_url: str, reconcile_period_s: float = 60.0,
             visibility_timeout_s: float = VISIBILITY_TIMEOUT_S, reconcile_tick_s: float | None = None,
             anchor_period_s: float = 86400.0) -> Celery:
    """The app; its beat ticks the poller every RECONCILE_TICK_S (at most the floor period
    RECONCILE_PERIOD_S, which the tick carries to the workers), and posts every link's journal
    head in both accounts every ANCHOR_PERIOD_S (workers/anchors.py)."""
    tick_s = min(reconcile_tick_s or reconcile_period_s, reconcile_period_s)
    app = Celery("crosslink", broker=redis_url, include=["workers.tasks", "producers.tasks"])
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_serializer="json",
        accept_content=["json"],
        task_ignore_result=True,
        result_backend=None,
        task_default_queue=SYNC_QUEUE,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=transport_options(visibility_timeout_s),
        # Task events are Flower's: it turns them on in every worker when it starts (its
        # --enable_events, on by default). Without Flower they would cost a worker a fifth of
        # its CPU per job for nobody.
        worker_send_task_events=False,
        task_send_sent_event=False,
        beat_schedule={
            "crosslink-reconcile": {
                "task": RECONCILE_TICK,
                "schedule": tick_s,
                "args": [tick_s, reconcile_period_s],
                # A tick older than a tick is superseded by the next one: drop it unrun.
                "options": {"queue": SYNC_QUEUE, "expires": tick_s},
            },
            "crosslink-anchor": {
                "task": ANCHOR_LINK,
                "schedule": anchor_period_s,
                "args": [None, "daily"],
                # A second beat's anchor finds the head anchored already: it posts nothing.
                "options": {"queue": SYNC_QUEUE, "expires": anchor_period_s},
            },
        },
    )
    return app


before_task_publish.connect(stamp_enqueue_time, weak=False, dispatch_uid=STAMP_RECEIVER_UID)

app = make_app(get_settings().redis_url, get_settings().reconcile_period_s,
               get_settings().visibility_timeout_s, get_settings().reconcile_tick_s, get_settings().anchor_period_s)


@setup_logging.connect
def _setup_logging(**_: object) -> None:
    """Replace Celery's log setup with ours: JSON lines, secrets redacted, as the producer. Celery's
    per-job lines give way to the worker's own, which name the link, side and task
    (workers.telemetry)."""
    settings = get_settings()
    configure(settings.log_level, settings.log_json)
    telemetry.quiet_celery_job_lines()


@celeryd_init.connect
def _early_logging(**_: object) -> None:
    """A worker warns before it sets its logging up (running as root: a SecurityWarning, printed
    by Python in its own format): our setup, with Python's warnings logged, from its first
    moment on."""
    _setup_logging()
    logging.captureWarnings(True)


@celeryd_after_setup.connect
def _worker_banner(sender: str | None = None, instance: Any = None, **_: object) -> None:
    """With JSON logs, everything a worker prints is a JSON line: its banner (printed to stdout
    just after this signal unless the worker is quiet) gives way to one log line with what an
    operator reads there, and the few messages Celery prints rather than logs (warm or cold
    shutdown, "Hitting Ctrl+C again") are logged instead (celery.apps.worker prints them through
    its module's safe_say, which is replaced). Text logs keep Celery's banner."""
    if instance is None or not get_settings().log_json:
        return
    instance.quiet = True
    celery_worker_app.safe_say = _say
    queues = sorted(instance.app.amqp.queues.consume_from or ())
    log.info("worker %s starting: celery %s, %s pool of %s, queues %s", sender, celery_version,
             getattr(instance.pool_cls, "__module__", instance.pool_cls), instance.concurrency,
             ", ".join(queues))


def _say(message: str, *_: object, **__: object) -> None:
    log.info(message.strip())
