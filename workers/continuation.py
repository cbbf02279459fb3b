"""A job that must run again later continues as itself: one job, one row in Flower, however long it waits.

A sync job often has to come back: its task pair is locked by another run, a write lease is
held, Planfix queued a write to read back, a transient failure is retried; a side's batch job
finds its link's next slot not near and hands its side on to a job due then; a probe finds its
link still severed. Each of these used to send a new Celery message under a new id, so Flower
(and anything counting jobs) saw a stream of new rows for one waiting run: in the demo, half
the batch rows were jobs that synced nothing and only passed their turn on.

Celery has a model for this, its own retry: the message is sent again under the job's id, the
run that sent it ends in the RETRY state (Flower's row says RETRY, with the new ETA), and the
next run of that id updates the same row. We send the message ourselves (the queue contract
keeps its Redis flags and the message in step: crosslink.queue.enqueue), so a job that does so
says so here (Again.mark), and its task ends by raising Celery's Retry (finish_job) instead of
returning. Only a job continuing *itself* does this: a run inside a batch job that must go again
gets a job of its own (a new row, whose own waits then stay in it), as does a follow-up of another
task. Outside a worker (tests calling the runners directly) nothing continues as itself.

Assumes no result backend deduplicates by id (worker_deduplicate_successful_tasks is off): a
message under an id that already succeeded would be dropped there.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from celery import Celery, Task
from celery._state import get_current_task
from celery.exceptions import Retry

# Job id -> the delay its next run is due after, for the jobs of this process that sent their
# own next run. A prefork child runs one job at a time; the dict is keyed by id all the same.
_continued: dict[str, float] = {}


class Again(NamedTuple):
    """The running job, which will send its own next run."""

    job_id: str
    retries: int  # how many times it continued so far (Celery's request.retries)

    def options(self) -> dict[str, Any]:
        """send_task options that make the message this job's next run."""
        return {"task_id": self.job_id, "retries": self.retries + 1}

    def mark(self, delay_s: float) -> None:
        """The next run was sent, due in DELAY_S: the job ends in RETRY (finish_job)."""
        _continued[self.job_id] = max(0.0, delay_s)


def as_itself(name: str, *args: Any) -> Again | None:
    """The running Celery job, if it is a NAME job whose arguments begin with ARGS (the same
    link, side and task); None anywhere else, where the next run is a job of its own."""
    task = get_current_task()
    if task is None or task.name != name:
        return None
    request = task.request
    if not request.id or request.called_directly:
        return None
    if list(request.args or ())[:len(args)] != list(args):
        return None
    return Again(str(request.id), int(request.retries or 0))


def send(app: Celery, name: str, args: list, delay_s: float, *, itself: bool = False, **options: Any) -> None:
    """Send job NAME with ARGS (and send_task OPTIONS), due DELAY_S from now. ITSELF: as the
    running job's own next run when that job is NAME with these ARGS (as_itself); else, and
    outside a worker, as a job of its own."""
    again = as_itself(name, *args) if itself else None
    delay_s = max(0.0, delay_s)
    app.send_task(name, args=args, countdown=delay_s, **options, **(again.options() if again else {}))
    if again is not None:
        again.mark(delay_s)


def finish_job(task: Task, run: Callable[[], str]) -> str:
    """RUN the job TASK is executing; what it returns, or, when the job sent its own next run
    meanwhile, Celery's Retry with that as its message (the worker acks the message, emits
    task-retried and logs the job as waiting)."""
    job_id = task.request.id or ""
    try:
        result = run()
    finally:
        delay_s = _continued.pop(job_id, None)
    if delay_s is None:
        return result
    raise Retry(result, when=delay_s)
