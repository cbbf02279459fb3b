"""What a worker tells an operator: its /metrics, and which job each of its log lines belongs to.

Metrics. Celery's prefork pool runs jobs in child processes, so each child counts in its own
memory, while a scrape must see the worker's sum. A port per child would give Prometheus a target
per process that changes whenever a child is replaced; a child pushing its values to the main
process would be a protocol of our own. So the worker uses prometheus_client's multiprocess mode,
built for exactly this: every process keeps its values in mmapped files in one directory, and
the worker's main process (it never runs a job, and lives as long as the worker) sums those files
whenever it is scraped, from a small HTTP server on CROSSLINK_WORKER_METRICS_PORT, one target per
worker container. What keeps that robust:
- each worker's main process makes its own fresh directory before its pool forks (celeryd_init)
  and removes it on a clean shutdown: a directory shared with another worker, or left by an
  earlier run, would add their counts (or a reused pid's file) to this one's. Directories left by
  a worker that was killed are swept at the next start;
- only counters and histograms live in the files; a child that died (a crash, a kill,
  max-tasks-per-child) keeps its file, so its counts stay in the sum, as a counter's must. No
  gauge lives in a file (those would need mark_process_dead). The gauges read from Redis
  (producers.gauges.StateCollector) are not served here at all but by the producer: they
  describe the shared pipeline, and N workers serving them too would give N+1 copies of each;
- the server starts once the pool has forked (worker_ready); a port already taken is logged and
  the worker runs on without metrics rather than not at all.

Logs. A logging context provider names the Celery job running in this process, and for a sync job
its link, side and task, in every line logged while it runs (crosslink.base.logs.add_context), however
deep in the code the line comes from. Celery's own per-job lines carry none of that, so they are
kept to warnings and each job gets lines of ours instead: one as it is received, one as it ends
(its state, runtime and result), both with the job's id, link, side and task.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from celery import states
from celery._state import get_current_task
from celery.exceptions import Retry
from celery.signals import celeryd_init, task_postrun, task_prerun, task_received, worker_ready, worker_shutdown
from prometheus_client import start_http_server

from crosslink.base import metrics
from crosslink.base.logs import add_context
from crosslink.base.settings import get_settings
from crosslink.queue.names import SYNC_BATCH, SYNC_TASK, job_fields

log = logging.getLogger("crosslink.worker")

# Every worker's metrics directory is a pid-named folder below this one.
METRICS_ROOT = Path(tempfile.gettempdir()) / "crosslink-worker-metrics"
# What a sync job's result says about it, for crosslink_sync_runs_total's outcome label. A result
# not listed here counts as "other", a job that raised (Redis gone: rejected) as "error".
RUN_OUTCOMES = {
    # missing: the task or the comment an event named is gone; rejected: the event named a
    # comment of another task (workers.sync): finished runs with nothing to write.
    # awaiting_decision: a task older than the link, left for a person (workers.plan.older_than_link).
    # removed: the task or its counterpart was taken out of the link on its side (workers.sync).
    **dict.fromkeys(("created", "updated", "noop", "out_of_scope", "missing", "rejected", "awaiting_decision",
                     "removed"), "done"),
    **dict.fromkeys(("locked", "lease-busy", "rate-limited", "busy", "retrying", "verifying"), "requeued"),
    # waiting: back among its side's waiting tasks for its account's turn (no job of its own).
    "waiting": "waiting",
    "lock-lost": "requeued",
    **dict.fromkeys(("parked", "held"), "parked"),
    "dead": "dead",
}
SYNC_JOBS = (SYNC_TASK, SYNC_BATCH)

_directory: Path | None = None
_server: Any = None
_started: dict[str, float] = {}


# --- logs -----------------------------------------------------------------------------------------

# The task pair a job is syncing right now: a batch job syncs several in turn (workers.tasks).
_run: dict[str, Any] = {}


@contextmanager
def sync_run(link: str, side: str, number: int) -> Iterator[None]:
    """Name LINK, SIDE and task NUMBER in every log line while a run of that task is on."""
    _run.update(link=link, side=side, task=number)
    try:
        yield
    finally:
        _run.clear()


def job_context() -> dict[str, Any]:
    """The running Celery job's id, the link, side and task (or account) it serves, and the task
    a batch job's run is on; {} outside a job."""
    task = get_current_task()
    request = getattr(task, "request", None)
    job = getattr(request, "id", None)
    if not job:
        return {}
    return {"job": job, **job_fields(task.name, getattr(request, "args", None)), **_run}


add_context(job_context)


# --- sync runs ------------------------------------------------------------------------------------

def count_run(link: str, side: str, result: str) -> None:
    """Count one finished sync run of a task by link, side, what it returned and what that means."""
    metrics.SYNC_RUNS.labels(link=link, side=side, kind=result,
                             outcome=RUN_OUTCOMES.get(result, "other")).inc()


# --- the job lines -------------------------------------------------------------------------------

# Celery's own per-job lines ("Task ... received", "... succeeded in ...s: ...", "... retry: ...")
# name the task type and its id only, and the child that logs "succeeded" has let go of the job
# by then: no link, side or task. These loggers are kept to warnings (failures and rejections
# still come from Celery, with their tracebacks), and the worker logs its own line per job
# instead: job_received and the end line below, each with the job's id, link, side and task.
CELERY_JOB_LOGGERS = ("celery.app.trace", "celery.worker.strategy")
# The end line says what state the job ended in, as Celery's words for them.
JOB_ENDS = {states.SUCCESS: "succeeded", states.RETRY: "waits", states.FAILURE: "failed",
            states.REJECTED: "rejected", states.IGNORED: "ignored"}
# A result longer than this is cut in the job's line (a batch job names its tasks).
RESULT_CHARS = 200


def quiet_celery_job_lines() -> None:
    """Keep Celery's per-job lines to warnings (called as the worker sets up its logging,
    before its strategy and tracer decide once whether to log them at all)."""
    for name in CELERY_JOB_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@task_received.connect
def _job_received(request: Any = None, **_: Any) -> None:
    """The worker's main process took a job from the queue (for an ETA job: long before it runs)."""
    if request is None:
        return
    eta = getattr(request, "eta", None)
    log.info("job %s received%s", request.name, f", due {eta.isoformat()}" if eta else "",
             extra={"job": request.id, **job_fields(request.name, getattr(request, "args", None))})


def job_end_line(name: str, state: str | None, retval: Any, runtime_s: float | None) -> str:
    """The message of a job's end line: "job NAME succeeded in 0.012s: noop"."""
    word = JOB_ENDS.get(state or "", str(state or "ended").lower())
    if isinstance(retval, Retry):
        what = f"{retval.message}, again {retval.humanize()}"
    elif isinstance(retval, BaseException):
        what = f"{type(retval).__name__}: {retval}"
    else:
        what = str(retval)
    took = f" in {runtime_s:.3f}s" if runtime_s is not None else ""
    return f"job {name} {word}{took}: {what[:RESULT_CHARS]}"


@task_prerun.connect
def _job_started(task_id: str | None = None, task: Any = None, **_: Any) -> None:
    if task is not None and task_id:
        _started[task_id] = time.monotonic()


@task_postrun.connect
def _job_finished(task_id: str | None = None, task: Any = None, args: Any = None, retval: Any = None,
                  state: str | None = None, **_: Any) -> None:
    """Log the job's end line; time a finished sync job; count a single task's run (a batch job
    counts each of its runs itself), or any sync job that raised."""
    if task is None:
        return
    started = _started.pop(task_id or "", None)
    runtime_s = time.monotonic() - started if started is not None else None
    # Still inside the job: the context provider adds its id, link, side and task.
    log.info(job_end_line(task.name, state, retval, runtime_s))
    if task.name not in SYNC_JOBS:
        return
    link, side = (list(args or ()) + ["", ""])[:2]
    if state == states.RETRY and isinstance(retval, Retry) and isinstance(retval.message, str):
        # The job sent its own next run (workers.continuation): its result is the Retry's message.
        retval, state = retval.message, states.SUCCESS
    if state != states.SUCCESS or not isinstance(retval, str):
        metrics.SYNC_RUNS.labels(link=str(link), side=str(side), kind=str(state or "unknown").lower(),
                                 outcome="error").inc()
    elif task.name == SYNC_TASK:
        count_run(str(link), str(side), retval)
    if runtime_s is not None:
        metrics.SYNC_RUN_SECONDS.labels(link=str(link)).observe(runtime_s)


# --- the metrics server ---------------------------------------------------------------------------

def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def fresh_directory(root: Path = METRICS_ROOT, pid: int | None = None) -> Path:
    """An empty metrics directory for worker PID below ROOT, after sweeping those of dead workers."""
    pid = os.getpid() if pid is None else pid
    root.mkdir(parents=True, exist_ok=True)
    for entry in root.iterdir():
        if entry.name.isdigit() and (int(entry.name) == pid or not _alive(int(entry.name))):
            shutil.rmtree(entry, ignore_errors=True)
    directory = root / str(pid)
    directory.mkdir()
    return directory


@celeryd_init.connect
def _prepare_metrics(**_: Any) -> None:
    """In the worker's main process, before the pool forks: values go to files from now on."""
    global _directory
    if get_settings().worker_metrics_port:
        _directory = fresh_directory()
        metrics.use_multiprocess_values(str(_directory))


def serve_pool_metrics(directory: Path, host: str, port: int) -> Any:
    """Serve the counts every process of this worker wrote into DIRECTORY at http://HOST:PORT/metrics
    (this worker's own counters and histograms only: the producer serves the Redis gauges).
    Returns the server (its shutdown() stops it), or None when the port cannot be had."""
    try:
        server, _ = start_http_server(port, addr=host, registry=metrics.multiprocess_registry(str(directory)))
    except OSError as exc:
        log.warning("worker metrics not served: cannot listen on %s:%d (%s)", host, port, exc)
        return None
    log.info("worker metrics at http://%s:%d/metrics", host, port)
    return server


@worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    global _server
    if _directory is None or _server is not None:
        return
    settings = get_settings()
    _server = serve_pool_metrics(_directory, settings.worker_metrics_host, settings.worker_metrics_port)


@worker_shutdown.connect
def _stop_metrics(**_: Any) -> None:
    global _server
    if _server is not None:
        _server.shutdown()
        _server = None
    if _directory is not None:
        shutil.rmtree(_directory, ignore_errors=True)
