"""Celery task and queue names, and every Redis key template the queue protocol uses.

Producers enqueue by name (``send_task``), so they never import worker code and a producer can
run on a machine without the workers' dependencies. Each key the producer, the poller and the
workers share is spelled here and nowhere else (tests/test_layers.py checks the queue's): the
pending flag, hints, dirty set, batch flag, claims, stamps, the registry the poller reads. The one
header every job message carries beyond Celery's own (its publish time) is named here too, as
both sides of the queue use it, and so is the list of rejected events, which the producer and the
worker both add to. So is what a job is called where people watch (job_label): Flower and Celery
show a message's `argsrepr`, and every publisher writes it from here.
"""

import hashlib
import json
import time
from collections.abc import Mapping
from typing import Any

SYNC_TASK = "crosslink.sync.task"
SYNC_BATCH = "crosslink.sync.batch"
PROBE_LINK = "crosslink.link.probe"
# Post a link's journal head in both accounts (workers/anchors.py): daily from beat, at every
# sever, resume and rule change.
ANCHOR_LINK = "crosslink.link.anchor"
SYNC_QUEUE = "crosslink.sync"
# Celery's message has no publish time, so every job carries one (unix seconds) in this header:
# `crosslink health worker` reads the oldest queued message's to tell how long it has waited.
ENQUEUED_AT_HEADER = "crosslink_enqueued_at"
# The reconciliation poller (producers/tasks.py): beat sends the tick, the tick one poll per account
# whose turn has come.
RECONCILE_TICK = "crosslink.reconcile.tick"
RECONCILE_POLL = "crosslink.reconcile.poll"

# The coalescing flag shared by the producer and the sync job: set when a job for
# (link, side, task) is queued, cleared when that job starts. While it is set, further events
# for the task enqueue nothing; one arriving during a run sets it again and queues one more run.
PENDING_KEY = "crosslink:pending:{link}:{side}:{task}"


def pending_key(link: str, side: str, task: int) -> str:
    return PENDING_KEY.format(link=link, side=side, task=task)


# Since when each pending flag of a link side is set (a sorted set: task -> ms): set with the
# flag, dropped as the job that clears it begins. A job message can be lost (a worker killed
# between taking it from the queue and recording it as unacked), leaving a flag that swallows
# every later event; the reconciliation tick finds such a flag by its age and sends its job again.
# A task waiting in its side's dirty set, or claimed there, is its side's batch job's, whose loss
# the tick tells apart (BATCH_DUE_KEY).
PENDING_SINCE_KEY = "crosslink:pending-since:{link}:{side}"


def pending_since_key(link: str, side: str) -> str:
    return PENDING_SINCE_KEY.format(link=link, side=side)


# The per-task lock key: a sync run holds its task's (and its counterpart's) while it works; the
# backfill takes both tasks' before pairing them, so neither can race a live sync's create.
LOCK_KEY = "crosslink:lock:{link}:{side}:{task}"


def lock_key(link: str, side: str, task: int) -> str:
    return LOCK_KEY.format(link=link, side=side, task=task)


# What the coalesced events of a pending job were, so the run reads only what they point at
# (workers.hints): a list of "task_created", "task_changed", "comment_added:<id>" or "full".
# Pushed by the producer in the same transaction that sets the pending flag, taken by the job
# in the same transaction that clears it, so no event's hint is lost between the two.
HINTS_KEY = "crosslink:hints:{link}:{side}:{task}"
# Anything that is not a webhook (the poller, backfill, replays, operators) asks for a full look.
FULL_HINT = "full"


def hints_key(link: str, side: str, task: int) -> str:
    return HINTS_KEY.format(link=link, side=side, task=task)


# Batches: a task whose event is not part of a burst waits in its link side's DIRTY set (sorted
# by when it began to wait) rather than in a job of its own, and one batch job (SYNC_BATCH) syncs
# the tasks it claims from there with a single read of their source tasks (workers.tasks).
# BATCH is set while a batch job is queued or running (its value is the job's Celery id), so
# events arriving meanwhile join it, and the job drops it once it finds none waiting; CLAIMS maps each task a running batch job took to
# when its claim lapses and which job holds it, so two batch jobs of one side never work on the
# same task, and a crashed job's tasks are claimed again.
DIRTY_KEY = "crosslink:dirty:{link}:{side}"
BATCH_KEY = "crosslink:batch:{link}:{side}"
CLAIMS_KEY = "crosslink:claims:{link}:{side}"


def dirty_key(link: str, side: str) -> str:
    return DIRTY_KEY.format(link=link, side=side)


def batch_key(link: str, side: str) -> str:
    return BATCH_KEY.format(link=link, side=side)


def claims_key(link: str, side: str) -> str:
    return CLAIMS_KEY.format(link=link, side=side)


# When the side's batch job is due (unix ms): set as a job is handed the side at the back of the
# queue or for its link's next slot (crosslink.queue.enqueue). A backlog waits its turns at the account
# behind other links' for as long as that takes, its tasks left unclaimed, so how long a task has
# waited does not tell that the side's job was lost; the poller counts it lost only once the job
# is overdue by a period and tasks still wait.
BATCH_DUE_KEY = "crosslink:batch-due:{link}:{side}"


def batch_due_key(link: str, side: str) -> str:
    return BATCH_DUE_KEY.format(link=link, side=side)


# Set for a moment by each event of a task (crosslink.queue.enqueue): one that finds it set is a burst's.
RECENT_KEY = "crosslink:recent:{link}:{side}:{task}"


def recent_key(link: str, side: str, task: int) -> str:
    return RECENT_KEY.format(link=link, side=side, task=task)


# The reads of a run that waits for its turn mid-way (workers.tasks), taken by its next attempt.
RESUME_KEY = "crosslink:resume:{link}:{side}:{task}"


def resume_key(link: str, side: str, task: int) -> str:
    return RESUME_KEY.format(link=link, side=side, task=task)


# The change stamp (dateOfLastUpdate and dateOfLastComment, as text) of the source task the last
# sync run of (link, side, task) looked at whole: written by the run, read by the reconciliation
# poller (producers/reconcile), which queues no run for a task whose stamp equals it, as no
# change can hide behind it. Kept long enough for the widest poll window and a quiet week.
SYNCED_STAMP_KEY = "crosslink:synced-stamp:{link}:{side}:{task}"
# A run that saw all but the checklist (stamp_seen) writes the stamp after BUT_CHECKLIST: the
# poller then queues a run told CHECKLIST_HINT, which lists the checklist and nothing else and
# records the stamp whole (promote_stamp).
SYNCED_STAMP_TTL_S = 7 * 86400
BUT_CHECKLIST = "but-checklist "
CHECKLIST_HINT = "checklist"


def synced_stamp_key(link: str, side: str, task: int) -> str:
    return SYNCED_STAMP_KEY.format(link=link, side=side, task=task)


def _stamp_point(point: Any) -> str:
    if not isinstance(point, Mapping):
        return ""
    exact = point.get("dateTimeUtcSeconds")
    if exact:
        return str(exact)
    return f"{point.get('date') or ''} {point.get('time') or ''}".strip()


def change_stamp(task: Mapping[str, Any]) -> str:
    """TASK's change stamp as the poller compares it: "<dateOfLastUpdate>|<dateOfLastComment>",
    each to the second where Planfix gives seconds (dateTimeUtcSeconds), else its date and time."""
    return f"{_stamp_point(task.get('dateOfLastUpdate'))}|{_stamp_point(task.get('dateOfLastComment'))}"


def record_synced_stamp(store: Any, link: str, side: str, task: int, source: Mapping[str, Any],
                        checklist_seen: bool = True) -> None:
    """Record that a sync run of LINK's SIDE TASK looked at everything SOURCE (the task as the run
    read it, with both dates) may stand for, the checklist only if CHECKLIST_SEEN. STORE is a
    redis client."""
    record = change_stamp(source) if checklist_seen else BUT_CHECKLIST + change_stamp(source)
    store.set(synced_stamp_key(link, side, task), record, ex=SYNCED_STAMP_TTL_S)


# KEYS[1] the synced stamp; ARGV: the record the run found before it looked, the whole stamp,
# the TTL (s). Replaced only if no run recorded another since.
_PROMOTE_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
  return 1
end
return 0
"""


def promote_stamp(store: Any, link: str, side: str, task: int, found: str | None) -> bool:
    """A run told CHECKLIST_HINT looked at the checklist after finding FOUND recorded (read
    before it looked): a stamp whose all but the checklist was seen now counts as seen whole.
    Nothing changes if FOUND is no such record, or another run recorded since (its stamp may be
    newer than the look). Returns whether it was promoted."""
    if found is None or not found.startswith(BUT_CHECKLIST):
        return False
    return bool(store.eval(_PROMOTE_LUA, 1, synced_stamp_key(link, side, task), found,
                           found[len(BUT_CHECKLIST):], SYNCED_STAMP_TTL_S))


def known_stamp(record: str | None) -> str | None:
    """The stamp a synced stamp RECORD knows the task at, seen whole or but for the checklist."""
    if record is not None and record.startswith(BUT_CHECKLIST):
        return record[len(BUT_CHECKLIST):]
    return record


def synced_stamp(store: Any, link: str, side: str, task: int) -> str | None:
    """The recorded stamp of LINK's SIDE TASK, if any."""
    return synced_stamps(store, link, side, [task]).get(task)


WHOLE = "whole"
ALL_BUT_CHECKLIST = "all but the checklist"


def stamp_seen(source: Mapping[str, Any], recorded: str | None, *, checklist_looked: bool,
               checklist_carried: bool, comments_listed: bool, one_explained_event: bool) -> str | None:
    """How much of what SOURCE's change stamp (the task as a run read it, with both dates) may
    stand for the run looked at: WHOLE, ALL_BUT_CHECKLIST, or None (RECORDED: the stamp recorded
    before).

    The update date: the run's fields are diffed whole and the card's files come with the task
    read (workers.canonical), so what can hide there is a comment edit or deletion (a task event
    of its own) and a checklist change. The update date counts as seen when the run looked at
    the checklist (CHECKLIST_LOOKED; CHECKLIST_CARRIED false: the link does not carry it) and
    either listed the comments (COMMENTS_LISTED, also when the task never had one) or had one
    task event, explained by a field it read. One explained event where the checklist is
    carried and was not looked at leaves the checklist unseen: a checklist change made before the field edit, with its webhook lost, shows only in
    the update date the edit moved on (the quick chaos run once lost an item so), so the poller
    has the checklist looked at once (names.BUT_CHECKLIST). The comment date: the run listed
    every comment, or it has not moved since the recorded stamp.
    """
    comment_date = change_stamp(source).partition("|")[2]
    known = known_stamp(recorded)
    if not (comments_listed or (known is not None and known.partition("|")[2] == comment_date)):
        return None
    if not (comments_listed or one_explained_event):
        return None
    return WHOLE if checklist_looked or not checklist_carried else ALL_BUT_CHECKLIST


def synced_stamps(store: Any, link: str, side: str, tasks: list[int]) -> dict[int, str]:
    """The recorded stamps of LINK's SIDE TASKS (those with one), in one round trip."""
    if not tasks:
        return {}
    values = store.mget([synced_stamp_key(link, side, task) for task in tasks])
    return {task: value.decode() if isinstance(value, bytes) else str(value)
            for task, value in zip(tasks, values) if value is not None}


def event_hint(event: str, comment: int | None = None) -> str:
    """The hint a webhook EVENT leaves for its job (a comment id when the event names one)."""
    if event == "comment_added" and comment:
        return f"comment_added:{int(comment)}"
    if event in ("task_created", "task_changed"):
        return event
    return FULL_HINT


# Between the parts of a job's label: "partner-client · client · #123".
LABEL_SEPARATOR = " · "


def job_fields(name: str, args: Any) -> dict[str, Any]:
    """The link, side and task (or account) job NAME with ARGS (its positional arguments as sent)
    serves: its log lines' fields (workers.telemetry) and its label's parts (job_label); {} for
    any other job, or arguments of another shape."""
    parts = list(args) if isinstance(args, (list, tuple)) else []
    if name in (SYNC_TASK, SYNC_BATCH) and len(parts) >= 2:
        fields = {"link": parts[0], "side": parts[1]}
        return {**fields, "task": parts[2]} if name == SYNC_TASK and len(parts) >= 3 else fields
    if name in (PROBE_LINK, ANCHOR_LINK) and parts and parts[0]:
        return {"link": parts[0]}
    if name == RECONCILE_POLL and parts:
        return {"account": parts[0]}
    return {}


def job_label(name: str, args: Any) -> str | None:
    """What job NAME with ARGS is called in Flower's args column and on its detail page: the
    link, the side and the task a sync job serves ("acme · client · #123"), "batch" for a side's
    batch job (the tasks it synced are in its result: workers.batch), the link of a probe or an
    anchor, the account of a poll (job_fields). None for any other job, or arguments of another
    shape (Celery then shows their repr, as it does by default).

    The label is the message's argsrepr, never its arguments: the worker still receives the JSON
    args. The task name stays the type (crosslink.sync.task), so Flower's filters and Celery's
    per-name counts keep a handful of names (a shadow name per task would make thousands)."""
    fields = job_fields(name, args)
    words = {SYNC_BATCH: "batch", PROBE_LINK: "probe", RECONCILE_POLL: "poll"}
    if name == SYNC_TASK and "task" in fields:
        parts = (fields["link"], fields["side"], f"#{fields['task']}")
    elif name == SYNC_BATCH and fields:
        parts = (fields["link"], fields["side"], words[name])
    elif name in (PROBE_LINK, RECONCILE_POLL) and fields:
        parts = (fields.get("link", fields.get("account")), words[name])
    elif name == ANCHOR_LINK and isinstance(args, (list, tuple)) and len(args) >= 2:
        parts = (fields.get("link", "every link"), f"anchor: {args[1]}")
    else:
        return None
    return LABEL_SEPARATOR.join(str(part) for part in parts)


def stamp_enqueue_time(sender: str | None = None, body: Any = None, headers: dict | None = None,
                       **_: object) -> None:
    """Celery's before_task_publish receiver: write the publish time into the message headers,
    and the job's label (job_label) as its argsrepr.

    Connected (with STAMP_RECEIVER_UID, so only once) by every process that publishes jobs: the
    producer's Enqueuer, the worker app (retries, probes, polls, beat's schedule) and the CLI
    through the Enqueuer's Celery app. Labelling here rather than at each send_task keeps a new
    call site from showing a bare repr. BODY is protocol 2's (args, kwargs, embed).
    """
    if headers is None:
        return
    headers[ENQUEUED_AT_HEADER] = time.time()
    args = body[0] if isinstance(body, (list, tuple)) and body else None
    label = job_label(str(sender or headers.get("task") or ""), args)
    if label is not None:
        headers["argsrepr"] = label


STAMP_RECEIVER_UID = "crosslink.stamp_enqueue_time"


# Events that came in authenticated but cannot be used, newest first, for `crosslink rejected`:
# the producer's (a body it cannot read) and the worker's (an event Planfix contradicts, e.g. a
# comment that is on another task). Kept capped, as nothing trims it otherwise.
REJECTED_KEY = "crosslink:rejected"
REJECTED_KEEP = 1000


def record_rejected(store: Any, *, link: str, side: str, reason: str, at: float | None = None,
                    **details: Any) -> None:
    """Add one rejected event to the operators' list (REJECTED_KEY), trimmed to REJECTED_KEEP.

    STORE is a redis client. DETAILS are plain JSON values (task, comment, event, a body preview)
    that the caller has already stripped of secrets: whatever lands here is shown as it is.
    """
    record = {"link": link, "side": side, "reason": reason, "at": time.time() if at is None else at,
              **details}
    pipe = store.pipeline()
    pipe.lpush(REJECTED_KEY, json.dumps(record, ensure_ascii=False, sort_keys=True))
    pipe.ltrim(REJECTED_KEY, 0, REJECTED_KEEP - 1)
    pipe.execute()


# The fingerprint of each person's comment as the last sync run mirrored it (comment id ->
# fingerprint), per source task: written by the run (workers.state), read by the run and by the
# poller's comment audit (producers/reconcile), which finds edits no feed dates.
COMMENT_PRINTS_KEY = "crosslink:csnap:{link}:{side}:{task}"


def comment_prints_key(link: str, side: str, task: int) -> str:
    return COMMENT_PRINTS_KEY.format(link=link, side=side, task=task)


def comment_fingerprint(text: str, deleted: bool) -> str:
    """What a comment's mirror must be updated for: its text and whether it was deleted."""
    return hashlib.sha256(f"{int(deleted)}:{text}".encode()).hexdigest()[:16]


# The registry of a link's pairs of one kind ("task", "comment", "file"): "side:number" ->
# the counterpart's number. Written by the runs (workers.state); the poller reads whether a task
# is paired, to follow a paired task that left its side's scope (no webhook, no scope route).
REGISTRY_KEY = "crosslink:reg:{link}:{kind}"


def registry_key(link: str, kind: str) -> str:
    return REGISTRY_KEY.format(link=link, kind=kind)


# kombu's Redis transport: the hash of messages a worker has taken and not yet acknowledged.
UNACKED_KEY = "unacked"

# Events of a link parked while one of its sides is severed (workers.state), replayed when access
# returns; the producer's metrics count them.
PARKED_KEY = "crosslink:parked:{link}"


def parked_key(link: str) -> str:
    return PARKED_KEY.format(link=link)


# link -> when its last sync run finished (workers.state); the producer's metrics show the lag.
LAST_SYNC_KEY = "crosslink:last-sync"

# The sides of a link whose access is lost (a revoked token, a lost scope): side -> JSON reason
# and time, set by the run that met the loss and removed by the probe that sees access again
# (workers.state); a run of the link reads it first, and the producer's metrics show it.
SEVERED_KEY = "crosslink:severed:{link}"


def severed_key(link: str) -> str:
    return SEVERED_KEY.format(link=link)


# Every Celery worker's latest heartbeat (workers.heartbeat): a sorted set, node name ("w1@host")
# -> unix time of its beat. `crosslink health worker` and the producer's metrics read it.
HEARTBEAT_KEY = "crosslink:workers:heartbeat"
# Workers beat every 2 s; 30 s is 15 missed beats: a slow Redis or a long pause rides it out,
# and a hung worker is still caught within a minute. The health check and the metrics share it.
HEARTBEAT_MAX_AGE_S = 30.0
