"""Finding and repairing drift between a link's sides: what `crosslink reconcile` and `acknowledge` run.

The periodic poller (producers/reconcile, run by `crosslink beat` and the workers) repairs
what lost webhooks leave behind, but only inside its window and only for changes Planfix dates.
An operator also needs the whole truth on demand: `crosslink reconcile --link X` reads both
sides over REST (every task in scope with its comments, through the account limiter, so it runs
alongside live traffic), judges them with the independent checker (crosslink/operations/check.py, which
knows nothing of the workers' registry) and prints the drift by task: missing (no mirror), extra
(a mirror whose original is gone from scope), diverged (fields, status, assignees, comments,
checklist or files differ), duplicated. `--repair` queues a sync of every drifted task through
the same coalesced door as webhooks (so the same idempotent writers do the work), waits until
the queue is quiet, and compares again: what it prints last is what is still wrong.

Exit status: 0 when no drift remains, 1 when some does (after a repair: some still does), 3
when a side cannot be read (its access is cut: 401, 403, scope): the report then says which, and
what the side it can read holds. Drift that repair cannot fix can be acknowledged (`crosslink
acknowledge`: who and why, kept in Redis); an acknowledged task's drift is reported but fails
nothing until it changes (its details differ from what was acknowledged).

A full compare costs about one request per task per side for comments, plus one each for the
checklist and the card files where the link carries them, plus the list pages: at Planfix's
1 request/s a 500-task link takes roughly 17-50 minutes. It is meant for an operator, not a loop,
so it tells how far it is as it goes (crosslink/operations/rest_read.py: requests made, and the
time the rest needs at the accounts' rates), and a run stopped by Ctrl-C or SIGTERM says what it
found so far, marked partial, and exits EXIT_INTERRUPTED (143 for SIGTERM).
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

import redis

from crosslink.operations.rest_read import ReadProgress, RestRead, SideUnreadable
from crosslink.operations.session import OperatorSession, operator_session, stopping_signal
from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.inspect import work_waiting
from planfix.limiter import AccountLimiter
from schemas.links import Link
from workers.state import LinkState, parse_marker

# How often the repair looks at the queue, and how many quiet looks in a row mean it is done.
QUIET_POLL_S = 0.5
QUIET_LOOKS = 3
# The longest a repair waits for the workers by default; a big link at 1 request/s needs long.
REPAIR_WAIT_S = 600.0


# The exit status when a side cannot be read at all (its access is cut).
EXIT_UNREADABLE = 3
# The exit status of a run stopped by Ctrl-C, as a shell reports a process SIGINT ended (128 + 2);
# one stopped by SIGTERM exits 143 (128 + 15), as crosslink.cli's handler has it.
EXIT_INTERRUPTED = 128 + signal.SIGINT
ACK_KEY = "crosslink:ack:{link}"


def compare_over_rest(link: Any, clients: Mapping[str, Any]) -> Any:
    """Both sides of LINK read over REST and judged by the independent checker (RestRead, with
    no one to tell its progress); SideUnreadable when a side's access is cut."""
    return RestRead(link, clients, {}).run()


def drift_print(item: Any) -> str:
    """What an acknowledgement of ITEM holds it to: its kind and details."""
    return hashlib.sha256(json.dumps([item.kind, item.counterpart, sorted(item.details)]).encode()).hexdigest()[:16]


def acknowledged(store: Any, link_name: str) -> dict[str, dict[str, Any]]:
    raw = store.hgetall(ACK_KEY.format(link=link_name))
    return {(k.decode() if isinstance(k, bytes) else k): json.loads(v) for k, v in raw.items()}


def standing(drift: list[Any], acks: Mapping[str, Mapping[str, Any]]) -> tuple[list[Any], list[Any]]:
    """DRIFT split into what fails the command and what was acknowledged as it is now."""
    failing, accepted = [], []
    for item in drift:
        ack = acks.get(f"{item.side}:{item.task}")
        (accepted if ack and ack.get("print") == drift_print(item) else failing).append(item)
    return failing, accepted


def readable_summary(link: Any, dumps: Mapping[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """What each readable side holds: its tasks in scope, the mirrors of the other side's tasks
    among them, and their comments (all kept: a cut deletes nothing)."""
    summary = {}
    for side, tasks in dumps.items():
        mirrors = sum(1 for task in tasks if (parse_marker(task.get("sourceDataVersion")) or ("",))[0] == link.name)
        summary[side] = {"tasks": len(tasks), "mirrors": mirrors,
                         "comments": sum(len(task.get("comments") or []) for task in tasks)}
    return summary


def repair_jobs(link: Any, drift: Iterable[Any]) -> list[tuple[str, int]]:
    """Which (side, task) to sync for each drifted task, without repeats.

    Assumes a sync run of either task of a pair reads both and carries whatever differs both
    ways; both are queued anyway for a diverged or duplicated pair, because comments are read
    from the side the run starts on. A missing original is synced from its own side; an extra
    mirror from its side (the worker then follows its registry and its marker).
    """
    jobs: list[tuple[str, int]] = []
    for item in drift:
        wanted = [(item.side, item.task)]
        if item.counterpart is not None and item.kind != "extra":
            wanted.append((link.other(item.side), item.counterpart))
        for job in wanted:
            if job not in jobs:
                jobs.append(job)
    return jobs


def wait_quiet(redis_url: str, link_name: str, timeout_s: float) -> bool:
    """Wait until no sync work of LINK_NAME is left (crosslink.queue.inspect.work_waiting), for
    QUIET_LOOKS looks in a row; False on timeout."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + timeout_s
    calm = 0
    try:
        while time.monotonic() < deadline:
            calm = 0 if work_waiting(client, link_name) else calm + 1
            if calm >= QUIET_LOOKS:
                return True
            time.sleep(QUIET_POLL_S)
        return False
    finally:
        client.close()


def render(link_name: str, drift: list[Any], title: str) -> str:
    counts = {kind: sum(1 for item in drift if item.kind == kind)
              for kind in ("missing", "extra", "diverged", "duplicated")}
    lines = [f"{title}: link {link_name}: {len(drift)} task(s) drifted ("
             + ", ".join(f"{kind} {count}" for kind, count in counts.items()) + ")"]
    for item in drift:
        pair = f"{item.side} #{item.task}" + (f" / #{item.counterpart}" if item.counterpart else "")
        lines.append(f"  {item.kind:<10} {pair}")
        lines.extend(f"      {detail}" for detail in item.details)
    return "\n".join(lines)


# How a run tells its progress: click.echo's shape, say(text) for the report and
# say(text, err=True) for a warning, so the command line passes click.echo itself.
Say = Callable[..., None]


class NoDrift(Exception):
    """The task to acknowledge has no drift now: there is nothing to accept."""


class BadTaskRef(ValueError):
    """A task named otherwise than SIDE:NUMBER with one of the link's sides."""


def queue_repairs(redis_url: str, link_name: str, jobs: Iterable[tuple[str, int]]) -> int:
    """Queue a sync of each (side, task) of JOBS through the webhooks' coalesced door; how many
    were queued (the others were waiting already)."""
    enqueuer = Enqueuer(redis_url)
    try:
        return sum(enqueuer.sync(link_name, side, number) for side, number in jobs)
    finally:
        enqueuer.close()


Progress = Callable[[ReadProgress], None]


class Interrupted(Exception):
    """The run was stopped (STOP: the KeyboardInterrupt or SystemExit) while it was at STAGE
    ("compare" or "repair"); READ: what the compare had read by then, if it was reading."""

    def __init__(self, stop: BaseException, stage: str, read: RestRead | None):
        super().__init__(stage)
        self.stop, self.stage, self.read = stop, stage, read

    @property
    def signal_name(self) -> str:
        return stopping_signal(self.stop)

    @property
    def exit_status(self) -> int:
        code = getattr(self.stop, "code", None)
        return code if isinstance(code, int) and code else EXIT_INTERRUPTED


def _reader(link: Link, session: OperatorSession, title: str, progress: Progress | None) -> RestRead:
    """A read of LINK's sides for SESSION, its estimate at each account's rate (the shared
    limiter's spacing) from as many tasks per side as the registry holds pairs; PROGRESS hears
    what it does under TITLE."""
    limiter = AccountLimiter(session.store, rate_per_s=session.settings.rate_per_s)
    spacing = {side: limiter.interval_s(conf.account) for side, conf in link.sides.items()}
    pairs = len(LinkState(session.store, link.name).pairs("task")) // 2
    told = None if progress is None else (lambda step: progress(replace(step, doing=f"{title}: {step.doing}")))
    return RestRead(link, session.clients, spacing, expected_tasks=pairs, on_progress=told)


def compare_and_repair(link: Link, session: OperatorSession, report: dict[str, Any], *, repair: bool,
                       wait_s: float, say: Say, progress: Progress | None = None) -> list[Any]:
    """Compare LINK once and SAY the drift; with REPAIR and drift found, queue its syncs, wait up
    to WAIT_S for the workers and compare again. The drift that remains; REPORT gets the rest.
    PROGRESS hears of each step of the compares. Interrupted when stopped (Ctrl-C, SIGTERM)."""
    read = _reader(link, session, "compare", progress)
    try:
        before = read.run()
    except (KeyboardInterrupt, SystemExit) as stop:
        raise Interrupted(stop, "compare", read) from None
    report["drift"] = [item.as_dict() for item in before.drift]
    say(render(link.name, before.drift, "before" if repair else "drift"))
    if not (repair and before.drift):
        return before.drift
    jobs = repair_jobs(link, before.drift)
    report["repair"] = {"jobs": [list(job) for job in jobs]}
    try:
        queued = queue_repairs(session.settings.redis_url, link.name, jobs)
        report["repair"]["queued"] = queued
        say(f"repair: {len(jobs)} sync job(s) asked for, {queued} queued "
            f"({len(jobs) - queued} already waiting); waiting for the workers")
        settled = wait_quiet(session.settings.redis_url, link.name, wait_s)
        after = _reader(link, session, "after repair", progress).run()
    except (KeyboardInterrupt, SystemExit) as stop:
        raise Interrupted(stop, "repair", None) from None
    report["repair"].update({"settled": settled, "after": [item.as_dict() for item in after.drift]})
    if not settled:
        say(f"repair: the queue was still busy after {wait_s:.0f} s", err=True)
    say(render(link.name, after.drift, "after"))
    return after.drift


def report_cut(link: Link, cut: SideUnreadable, report: dict[str, Any], say: Say) -> None:
    """SAY which side cannot be read and what the readable ones hold; REPORT gets both."""
    report["unreadable"] = cut.errors
    report["readable"] = readable_summary(link, cut.dumps)
    for side, error in cut.errors.items():
        say(f"link {link.name}: the {side} side cannot be read ({error}); nothing is compared")
    for side, held in report["readable"].items():
        say(f"link {link.name}: the {side} side holds {held['tasks']} task(s) in scope, "
            f"{held['mirrors']} of them mirrors, with {held['comments']} comment(s)")


def report_interrupted(link: Link, stopped: Interrupted, report: dict[str, Any], say: Say) -> None:
    """SAY what a stopped run found so far, marked partial; REPORT gets it (`partial`, the
    signal, what was read, and the drift the read so far shows)."""
    report["partial"] = True
    report["interrupted"] = stopped.signal_name
    if stopped.stage == "repair":
        # The drift before the repair was found whole and is in REPORT already.
        report["repair"]["interrupted"] = True
        say(f"partial: link {link.name}: interrupted ({stopped.signal_name}) during the repair; the drift "
            "above was found before it, and the syncs queued stay queued for the workers")
        return
    read = stopped.read
    assert read is not None
    made = sum(read.requests.values())
    left = sum(read.requests_left(side) for side in link.sides)
    report["read"] = read.summary()
    say(f"partial: link {link.name}: interrupted ({stopped.signal_name}) after {made} of about "
        f"{made + left} requests; what was read so far:")
    for side, held in report["read"].items():
        listed = f"{held['tasks']} task(s) listed" if held["listed"] else "its task list not read to the end"
        say(f"  {side}: {listed}, details of {held['details_read']} read")
    found = read.partial_check()
    if found is None:
        say("  nothing compared: both sides' task lists are needed first")
        return
    report["drift"] = [item.as_dict() for item in found.drift]
    say(render(link.name, found.drift, "partial drift")
        + f"\n  (mirrors and task fields of every task listed; comments, checklists and files of the "
        f"{read.pairs_detailed()} pair(s) whose details were read on both sides)")


def reconcile_link(link: Link, *, repair: bool = False, wait_s: float = REPAIR_WAIT_S,
                   say: Say, progress: Progress | None = None) -> tuple[dict[str, Any], int]:
    """Compare both sides of LINK over REST and SAY the drift by task; with REPAIR, repair it
    and compare again (compare_and_repair). The JSON report and the exit status: 0 when no drift
    fails, 1 when some does (acknowledged drift, as it still is, fails nothing), EXIT_UNREADABLE
    when a side cannot be read. PROGRESS hears of each step with the time the rest needs.
    Stopped (Ctrl-C, SIGTERM), it SAYs a partial report of what it found so far and returns with
    EXIT_INTERRUPTED (143 for SIGTERM). A PlanfixError other than a cut access propagates."""
    report: dict[str, Any] = {"link": link.name}
    with operator_session(link) as session:
        acks = acknowledged(session.store, link.name)
        try:
            remaining = compare_and_repair(link, session, report, repair=repair, wait_s=wait_s, say=say,
                                           progress=progress)
        except SideUnreadable as cut:
            report_cut(link, cut, report, say)
            return report, EXIT_UNREADABLE
        except Interrupted as stopped:
            report_interrupted(link, stopped, report, say)
            return report, stopped.exit_status
    failing, accepted = standing(remaining, acks)
    if accepted:
        say(f"acknowledged, as it still is ({len(accepted)}): "
            + ", ".join(f"{item.side} #{item.task} ({acks[f'{item.side}:{item.task}']['why']})"
                        for item in accepted))
    report["acknowledged"] = [item.as_dict() for item in accepted]
    report["remaining"] = len(failing)
    return report, 1 if failing else 0


def acknowledge_drift(link: Link, task: str, why: str, by: str) -> dict[str, Any]:
    """Accept TASK's drift (SIDE:NUMBER, as reconcile lists it) as it is now, saying WHY and BY
    whom: reconcile reports it but no longer fails on it until it changes. Compares the link once
    to know it. The record kept; BadTaskRef for a malformed TASK (before anything is read),
    SideUnreadable during a cut, NoDrift when the task has none."""
    side, _, number = task.partition(":")
    if side not in link.sides or not number.isdigit():
        raise BadTaskRef(f"{task!r}: expected SIDE:NUMBER, SIDE one of {', '.join(link.sides)}")
    with operator_session(link) as session:
        drift = compare_over_rest(link, session.clients).drift
        item = next((item for item in drift if (item.side, item.task) == (side, int(number))), None)
        if item is None:
            raise NoDrift(f"{task} has no drift now; nothing to acknowledge")
        record = {"print": drift_print(item), "kind": item.kind, "details": item.details, "why": why,
                  "by": by, "at": time.time()}
        session.store.hset(ACK_KEY.format(link=link.name), task, json.dumps(record, ensure_ascii=False))
    return record
