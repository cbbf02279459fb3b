"""Both sides of a link read over REST, a request at a time, telling how far it got and keeping it.

`crosslink reconcile` and `acknowledge` compare a link's sides as Planfix holds them. At
Planfix's 1 request/s the reads are nearly all of a compare's time (about one request per task
per side, and one more each for the checklist and the card files where the link carries them),
and an operator who sees nothing for minutes cannot tell a slow read from a hung one, nor when it
will end, and loses everything with a Ctrl-C. So the read here:

- lists both sides first (a page of 100 tasks is one request), then reads each task's details;
- tells, at each list and before each request for a task's details, how many requests it made
  and how many the rest needs, and so how long the rest takes at each account's rate (the shared
  limiter's spacing, `ReadProgress`). Before a side is listed its tasks are assumed as many as the
  registry's pairs, or as the other side listed (a link mirrors each task once), and the
  estimate is corrected once it is;
- keeps what it read, so a run that is stopped still judges it (`RestRead.partial_check`): once
  both lists are in, mirrors (missing, extra, duplicated) and task fields are compared for every
  task, and comments, checklists and files for the pairs whose details were both read.

The compare itself is the independent checker (crosslink/operations/check.py), which knows
nothing of the workers' registry; the registry only seeds the first estimate.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from crosslink.operations.check import CheckResult, check_link
from planfix.client import CHECKLIST_FIELDS, COMMENT_FIELDS, MAX_PAGE_SIZE
from planfix.errors import AccessDenied, AuthError, ScopeDenied
from producers.reconcile import poll_filter_sets
from schemas.links import Link
from workers.canonical import in_scope, task_fields
from workers.state import mirrored_from

# What a task's details hold, besides its fields: kept apart so a partial compare can leave out
# the details of a pair it has not read on both sides.
DETAIL_KEYS = ("comments", "checklist", "files")


class SideUnreadable(Exception):
    """Some side of the link cannot be read (access cut); DUMPS holds the sides that could."""

    def __init__(self, errors: Mapping[str, str], dumps: Mapping[str, list[dict[str, Any]]]):
        super().__init__("; ".join(f"{side}: {error}" for side, error in errors.items()))
        self.errors, self.dumps = dict(errors), dict(dumps)


@dataclass(frozen=True)
class ReadProgress:
    """How far a read is: REQUESTS made of TOTAL (the rest estimated), SECONDS_LEFT at the
    accounts' rates, and what it is DOING. A MILESTONE (the start, a side listed or read) is
    worth a line of its own in a log: the estimate is corrected there."""

    doing: str
    requests: int
    total: int
    seconds_left: float
    milestone: bool = False
    # False while the total rests on nothing: no side listed yet and no pairs in the registry.
    estimated: bool = True


# The bar's width in characters: readable at a glance, short enough for 100 columns with the rest.
BAR_WIDTH = 20


def progress_text(step: ReadProgress) -> str:
    """STEP for people: what it does, a bar of the requests made of the estimate, and the time
    the rest needs (none until there is something to estimate from)."""
    if not step.estimated:
        return f"{step.doing} | {step.requests} requests | estimating from the task lists"
    filled = BAR_WIDTH * step.requests // max(step.total, 1)
    left = round(step.seconds_left)
    eta = f"{left} s" if left < 120 else f"{left // 60} min {left % 60} s"
    return (f"{step.doing} [{'#' * filled}{'.' * (BAR_WIDTH - filled)}] {step.requests}/{step.total} requests"
            f" | about {eta} left")


def list_pages(tasks: int) -> int:
    """Requests one listing of TASKS takes: offset paging ends on a short page."""
    return tasks // MAX_PAGE_SIZE + 1


@dataclass
class RestRead:
    """A read of LINK's sides through CLIENTS (one per side), each request spaced by
    SECONDS_PER_REQUEST of its side's account. EXPECTED_TASKS: how many tasks a side is assumed
    to hold before it is listed. ON_PROGRESS hears of each step: a side listed, each request of a task's details."""

    link: Link
    clients: Mapping[str, Any]
    seconds_per_request: Mapping[str, float]
    expected_tasks: int = 0
    on_progress: Callable[[ReadProgress], None] | None = None
    # What has been read: each side's tasks by number, those whose details are in, the requests
    # made, and the sides that could not be read (why).
    listed: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    detailed: set[tuple[str, int]] = field(default_factory=set)
    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    lists_done: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self.requests = dict.fromkeys(self.link.sides, 0)

    # -- the read ----------------------------------------------------------------------------------
    def run(self) -> CheckResult:
        """Read both sides (lists first, then details) and judge them; SideUnreadable when a
        side's access is cut (every side is read all the same)."""
        self._tell("starting", milestone=True)
        for side in self.link.sides:
            self._guarded(side, self._list_side)
        for side in self.link.sides:
            if side not in self.errors:
                self._guarded(side, self._read_details)
        dumps = self.dumps()
        if self.errors:
            raise SideUnreadable(self.errors, {side: dumps[side] for side in dumps if side not in self.errors})
        return check_link(self.link, dumps)

    def _guarded(self, side: str, step: Callable[[str], None]) -> None:
        try:
            step(side)
        except (AuthError, ScopeDenied, AccessDenied) as exc:
            self.errors[side] = f"{type(exc).__name__}: {exc}"

    def _list_side(self, side: str) -> None:
        """SIDE's tasks in scope and the mirrors we made there, with the fields the checker
        compares (the emulator dump's shape)."""
        link, client = self.link, self.clients[side]
        other = link.other(side)
        tasks: dict[int, dict[str, Any]] = {}
        self.listed[side] = tasks
        for filters in poll_filter_sets(link.sides[side]):
            self._tell(f"{side}: listing tasks")
            found = 0
            for task in client.list_tasks(filters=filters, fields=task_fields(link, side)):
                found += 1
                ours = mirrored_from(task.get("sourceDataVersion"), link.name, other) is not None
                if ours or in_scope(link, side, task):
                    tasks[int(task["id"])] = dict(task)
            self.requests[side] += list_pages(found)
        self.lists_done.add(side)
        self._tell(f"{side}: {len(tasks)} tasks listed", milestone=True)

    def _read_details(self, side: str) -> None:
        """Each listed task's comments (deleted ones included), and checklist and card files
        where the link carries them."""
        link, client = self.link, self.clients[side]
        for number, task in sorted(self.listed[side].items()):
            doing = f"{side}: details of #{number}"
            self._tell(doing)
            task["comments"] = list(client.list_task_comments(number, fields=COMMENT_FIELDS, type_list="All"))
            self.requests[side] += 1
            if link.fields.checklist.direction != "none":
                self._tell(doing)
                task["checklist"] = list(client.list_checklist(number, fields=CHECKLIST_FIELDS))
                self.requests[side] += 1
            if link.fields.files.direction != "none":
                self._tell(doing)
                task["files"] = client.list_task_files(number, only_description=True)
                self.requests[side] += 1
            else:
                task.pop("files", None)
            self.detailed.add((side, number))
        self._tell(f"{side}: details read", milestone=True)

    # -- how far it is -----------------------------------------------------------------------------
    def detail_calls(self) -> int:
        """Requests a task's details take: its comments, then its checklist and card files where
        the link carries them."""
        fields = self.link.fields
        return 1 + (fields.checklist.direction != "none") + (fields.files.direction != "none")

    def _assumed_tasks(self, side: str) -> int:
        """Tasks SIDE is taken to hold: as listed, else as many as another side listed (each
        task has one mirror), else EXPECTED_TASKS."""
        if side in self.lists_done:
            return len(self.listed[side])
        return max([self.expected_tasks, *(len(self.listed[done]) for done in self.lists_done)])

    def requests_left(self, side: str) -> int:
        if side in self.errors:
            return 0
        tasks = self._assumed_tasks(side)
        listing = 0 if side in self.lists_done else len(poll_filter_sets(self.link.sides[side])) * list_pages(tasks)
        details = tasks - sum(1 for read_side, _ in self.detailed if read_side == side)
        return listing + details * self.detail_calls()

    def progress(self, doing: str, milestone: bool = False) -> ReadProgress:
        made = sum(self.requests.values())
        left = {side: self.requests_left(side) for side in self.link.sides}
        seconds = sum(count * self.seconds_per_request.get(side, 0.0) for side, count in left.items())
        estimated = bool(self.lists_done) or self.expected_tasks > 0
        return ReadProgress(doing, made, made + sum(left.values()), seconds, milestone, estimated)

    def _tell(self, doing: str, milestone: bool = False) -> None:
        if self.on_progress is not None:
            self.on_progress(self.progress(doing, milestone))

    # -- what it read ------------------------------------------------------------------------------
    def dumps(self) -> dict[str, list[dict[str, Any]]]:
        return {side: [tasks[number] for number in sorted(tasks)] for side, tasks in self.listed.items()}

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per side: whether it was listed, its tasks, those whose details were read, requests made."""
        return {side: {"listed": side in self.lists_done,
                       "tasks": len(self.listed.get(side, {})),
                       "details_read": sum(1 for read_side, _ in self.detailed if read_side == side),
                       "requests": self.requests[side]}
                for side in self.link.sides}

    def complete_lists(self) -> bool:
        """Whether every side's task list was read to its end."""
        return all(side in self.lists_done for side in self.link.sides)

    def pairs_detailed(self) -> int:
        """Pairs (by their markers) whose details were read on both sides."""
        pairs = _pairs_by_marker(self.link, self.dumps())
        return sum(1 for task, counterpart in pairs.items()
                   if task in self.detailed and counterpart in self.detailed) // 2

    def partial_check(self) -> CheckResult | None:
        """What the read so far shows, judged as the full compare would: None until both sides
        are listed; then every task's mirror and fields, and the details of the pairs read on
        both sides (a pair's details count only if both its tasks' are in)."""
        if not self.complete_lists():
            return None
        dumps = self.dumps()
        partner_of = _pairs_by_marker(self.link, dumps)
        view: dict[str, list[dict[str, Any]]] = {}
        for side, tasks in dumps.items():
            view[side] = []
            for task in tasks:
                key = (side, int(task["id"]))
                counterpart = partner_of.get(key)
                both = counterpart is None or (key in self.detailed and counterpart in self.detailed)
                view[side].append(task if both else {k: v for k, v in task.items() if k not in DETAIL_KEYS})
        return check_link(self.link, view)


def _pairs_by_marker(link: Link, dumps: Mapping[str, list[dict[str, Any]]]) -> dict[tuple[str, int], tuple[str, int]]:
    """Each task's counterpart as the mirror markers in DUMPS say, both ways (the checker's
    pairing: a mirror's marker names its original)."""
    pairs: dict[tuple[str, int], tuple[str, int]] = {}
    for side, tasks in dumps.items():
        for task in tasks:
            number = mirrored_from(task.get("sourceDataVersion"), link.name, link.other(side))
            if number is not None:
                mirror, original = (side, int(task["id"])), (link.other(side), number)
                pairs[mirror], pairs[original] = original, mirror
    return pairs
