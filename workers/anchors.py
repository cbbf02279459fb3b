"""Anchors: a link's journal head posted in both of its accounts, so that each party holds, in its
own account, a commitment the other cannot rewrite.

The journal (crosslink.journal) is a hash chain kept by whoever runs the deployment, who could
rewrite it whole with every hash recomputed. So its head (the last entry's sequence and hash) is
posted as a comment on the link's record task, a task of the link's own in each account: daily
(the beat), at every sever and resume (workers.runner), and at every change of the link's rules
(checked at each anchor, and by a job every worker sends as it starts). A journal rewritten up to
an anchor then disagrees with a comment in an account its rewriter does not control, and
`crosslink journal verify --live` reads those comments back.

Every write happens once (workers.idempotency.WriteOnce), marked with a sourceObjectId so that a
write whose answer was lost is found, not repeated: the record task once per side, each head's
comment once per side. An anchor is stored as a row of the journal's anchors, never as an entry:
an entry would move the head it states. A severed side is skipped; the head is posted where
access remains, and at the resume on both.

Why a module of its own: the sync run never anchors, and an operator's `crosslink journal anchor`
does what the job does, with its own clients (AnchorParts).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from celery.signals import worker_ready

from crosslink.journal.chain import Anchor, rule_version
from crosslink.journal.store import Journal, utc_now
from crosslink.queue.names import ANCHOR_LINK, SYNC_QUEUE
from planfix.client import PlanfixClient
from planfix.errors import PlanfixError
from schemas.links import NOTE_LANGUAGES, Link
from workers.idempotency import LeaseBusy, WriteOnce
from workers.notes import label
from workers.retry import Action, decide
from workers.runtime import Runtime, runtime
from workers.state import LinkState, mirror_source_id, record_source_id

log = logging.getLogger("crosslink.anchors")

# Why a head is posted; the comment says which.
SETUP, DAILY, MANUAL = "setup", "daily", "manual"
SEVERED, RESUMED, RULES_CHANGED = "severed", "resumed", "rules changed"
# A job's reason that posts nothing unless the rules changed (a worker's start: workers.tasks).
RULES_CHECK = "rules"
REASONS = (SETUP, DAILY, SEVERED, RESUMED, RULES_CHANGED, MANUAL, RULES_CHECK)
# The journal entry that records the rules in force (their hash), once per change.
MAPPING_VERSION = "mapping version"
# An anchor job that cannot reach an account tries again, on the retry policy's delays, this
# many times in all; the next day's anchor (or the next sever or resume) posts the head anyway.
MAX_ATTEMPTS = 5
# What a comment states: its head. The same in every language, so verify reads any of them.
HEAD_PATTERN = re.compile(r"#(\d+) sha256:([0-9a-f]{64})")

TEXTS: Mapping[str, Mapping[str, str]] = {
    "en": {
        "name": "Crosslink record: {link}",
        "description": "<p>Crosslink keeps the journal of everything that crosses between {sides} (link "
                       "{link}). Each comment on this task states the journal's head at that time: the sequence "
                       "number and SHA-256 hash of its last entry. The same is posted in the other account, so "
                       "each party holds a commitment the other cannot rewrite; <code>crosslink journal verify "
                       "--live</code> checks an exported journal against them.</p><p>Do not delete or edit this "
                       "task or its comments.</p>",
        "comment": "<p>Crosslink journal head: #{seq} sha256:{hash} ({reason})</p>",
        SETUP: "setup", DAILY: "daily", SEVERED: "severed", RESUMED: "resumed", RULES_CHANGED: "rules changed",
        MANUAL: "manual",
    },
    "ru": {
        "name": "Crosslink, журнал связи: {link}",
        "description": "<p>Crosslink ведёт журнал всего, что переносится между сторонами {sides} (связь "
                       "{link}). Каждый комментарий к этой задаче фиксирует последнюю запись журнала на тот "
                       "момент: её порядковый номер и хеш SHA-256. То же публикуется в аккаунте другой "
                       "стороны, так что у каждой стороны есть подтверждение, которое другая не может "
                       "переписать; <code>crosslink journal verify --live</code> сверяет с ними выгрузку "
                       "журнала.</p><p>Не удаляйте и не меняйте эту задачу и её комментарии.</p>",
        "comment": "<p>Crosslink, последняя запись журнала: #{seq} sha256:{hash} ({reason})</p>",
        SETUP: "настройка", DAILY: "ежедневно", SEVERED: "доступ к стороне потерян", RESUMED: "доступ восстановлен",
        RULES_CHANGED: "правила изменены", MANUAL: "вручную",
    },
}
assert set(TEXTS) == set(NOTE_LANGUAGES)


@dataclass
class AnchorParts:
    """What anchoring a link works with: a client per side, the write-once keys, the link's state
    in Redis (its severed sides, its record tasks) and the journal."""

    clients: Mapping[str, PlanfixClient]
    writes: WriteOnce
    state: LinkState
    journal: Journal


@dataclass
class Anchoring:
    """What an anchor did: the HEAD it stands for, the REASON it was posted for (None: nothing to
    post), per side the anchor that holds the head there (ANCHORS; POSTED names the sides it was
    posted on now, the rest held it already), the sides SKIPPED and why, and the FAILURES."""

    head: tuple[int, str] | None = None
    reason: str | None = None
    anchors: list[Anchor] = field(default_factory=list)
    posted: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    failures: dict[str, Exception] = field(default_factory=dict)


def runtime_parts(rt: Runtime, link: Link) -> AnchorParts:
    """A worker's AnchorParts for LINK: its clients, write-once keys, Redis and journal."""
    return AnchorParts({side: rt.client(link, side) for side in link.sides}, rt.writes, rt.state(link.name),
                       rt.journal)


# --- texts (pure) ---------------------------------------------------------------------------


def record_body(link: Link, side: str) -> dict[str, Any]:
    """The record task as created in SIDE's account: named and described in its language, in the
    side's create process, project and template, marked so it is found again and never mirrored."""
    texts = TEXTS[link.sides[side].language]
    sides = " / ".join(label(link, name) for name in link.sides)
    body: dict[str, Any] = {"name": texts["name"].format(link=link.name),
                            "description": texts["description"].format(link=link.name, sides=sides),
                            "sourceObjectId": record_source_id(link.name, side)}
    create = link.sides[side].create
    if create.process is not None:
        body["processId"] = create.process
    if create.project is not None:
        body["project"] = {"id": create.project}
    if create.template is not None:
        body["template"] = {"id": create.template}
    return body


def anchor_text(link: Link, side: str, head: tuple[int, str], reason: str) -> str:
    """The comment stating HEAD on SIDE's record task, in the side's language."""
    texts = TEXTS[link.sides[side].language]
    return texts["comment"].format(seq=head[0], hash=head[1], reason=texts.get(reason, reason))


def stated_head(text: str | None) -> tuple[int, str] | None:
    """The head a comment's TEXT states (sequence, hash), or None when it states none."""
    found = HEAD_PATTERN.search(text or "")
    return (int(found.group(1)), found.group(2)) if found else None


def anchor_source_id(link_name: str, side: str, head: tuple[int, str]) -> str:
    """The sourceObjectId of the comment stating HEAD on SIDE's record task."""
    return mirror_source_id(link_name, side, "anchor", f"{head[0]}:{head[1]}")


# --- the record task, the rules, the anchors -------------------------------------------------


def record_task(parts: AnchorParts, link: Link, side: str) -> int:
    """LINK's record task in SIDE's account (its number), created the first time it is asked for:
    once, even when asked twice at once or after an answer was lost (found by its marker in the
    side's create project). Its number is kept in Redis (LinkState.record_task)."""
    known = parts.state.record_task(side)
    if known is not None:
        return known
    client = parts.clients[side]
    marker = record_source_id(link.name, side)
    project = link.sides[side].create.project
    filters = [{"type": 5, "operator": "equal", "value": project}] if project is not None else []

    def find_existing() -> int | None:
        # Only after a lost answer: one scan of the project, paid rarely.
        for task in client.list_tasks(filters=filters, fields="id,sourceObjectId"):
            if task.get("sourceObjectId") == marker:
                return int(task["id"])
        return None

    number = parts.writes.run(f"{link.name}:record:{side}", write=lambda: client.create_task(record_body(link, side)),
                              find_existing=find_existing)
    parts.state.keep_record_task(side, number)
    log.info("record task of the link in the %s account: #%d", side, number, extra={"link": link.name, "side": side})
    return number


def check_rules(parts: AnchorParts, link: Link, *, setup: bool = True) -> str | None:
    """Compare LINK's rules (their hash: crosslink.journal.chain.rule_version) with those of the
    journal's last "mapping version" entry; when they differ, append one with the new rules and
    return RULES_CHANGED. A journal with none gets its first when SETUP (SETUP is returned), else
    nothing: a worker's start sets no link up (RULES_CHECK). None: nothing to record."""
    rules = rule_version(link)
    last = parts.journal.latest(link.name, MAPPING_VERSION)
    previous = last.source.get("rules") if last is not None else None
    if (last is not None and previous == rules) or (last is None and not setup):
        return None
    source = {"rules": rules, **({"previous": previous} if previous else {})}
    # Keyed by the change (from the entry it follows), so two workers record it once, and rules
    # changed back later are recorded again.
    parts.journal.append(link.name, kind=MAPPING_VERSION, side="link", source=source, target={}, content=rules,
                         rules=rules, key=f"{MAPPING_VERSION}:{last.seq if last is not None else 0}:{rules}")
    log.info("link rules %s: %s", "recorded" if last is None else "changed", rules[:12], extra={"link": link.name})
    return SETUP if last is None else RULES_CHANGED


def post_anchor(parts: AnchorParts, link: Link, reason: str) -> Anchoring:
    """Post the journal's head on LINK's record task in each side's account that is not severed,
    once per (side, sequence, hash), and store each as an Anchor. A side that fails is named in
    the result's failures; the others are posted all the same. An empty journal has no head to
    post (a link's first anchor follows its first "mapping version" entry: anchor_link)."""
    head = parts.journal.head(link.name)
    result = Anchoring(head=head, reason=reason)
    if head is None:
        result.skipped = {side: "the journal has no entry yet" for side in link.sides}
        return result
    severed = parts.state.severed()
    held = {(anchor.side, anchor.seq, anchor.hash): anchor for anchor in parts.journal.anchors(link.name)}
    for side in link.sides:
        if side in severed:
            result.skipped[side] = f"severed ({severed[side].get('reason')})"
            continue
        if (side, *head) in held:
            result.anchors.append(held[(side, *head)])
            continue
        try:
            anchor = _post_side(parts, link, side, head, reason)
        except (PlanfixError, LeaseBusy) as exc:
            log.warning("journal head not anchored in the %s account: %s", side, exc,
                        extra={"link": link.name, "side": side})
            result.failures[side] = exc
            continue
        result.anchors.append(anchor)
        result.posted.append(side)
    return result


def _post_side(parts: AnchorParts, link: Link, side: str, head: tuple[int, str], reason: str) -> Anchor:
    task = record_task(parts, link, side)
    client = parts.clients[side]
    marker = anchor_source_id(link.name, side, head)

    def find_existing() -> int | None:
        for comment in client.list_task_comments(task, fields="id,sourceObjectId", type_list="All"):
            if comment.get("sourceObjectId") == marker:
                return int(comment["id"])
        return None

    body = {"description": anchor_text(link, side, head, reason), "sourceObjectId": marker}
    comment = parts.writes.run(f"{link.name}:anchor:{side}:{head[0]}:{head[1]}",
                               write=lambda: client.create_comment(task, body), find_existing=find_existing)
    anchor = Anchor(link.name, head[0], head[1], utc_now(), side, task, comment)
    parts.journal.add_anchor(anchor)
    log.info("journal head #%d anchored in the %s account (%s): task #%d, comment #%d", head[0], side, reason,
             task, comment, extra={"link": link.name, "side": side})
    return anchor


def anchor_link(parts: AnchorParts, link: Link, reason: str) -> Anchoring:
    """Anchor LINK for REASON: its rules checked first (a change, or the link's first anchor, is
    recorded and is then the reason: check_rules), then its head posted (post_anchor). With
    RULES_CHECK, nothing is posted unless the rules changed."""
    changed = check_rules(parts, link, setup=reason != RULES_CHECK)
    if changed is None and reason == RULES_CHECK:
        return Anchoring(head=parts.journal.head(link.name))
    return post_anchor(parts, link, changed or reason)


# --- the job and what sends it ---------------------------------------------------------------


def send_anchor(link_name: str | None, reason: str, attempt: int = 0, countdown_s: float = 0.0) -> None:
    """Queue the anchor job of LINK_NAME (None: every link) for REASON (workers.tasks.anchor_link_task)."""
    runtime().enqueuer.celery.send_task(ANCHOR_LINK, args=[link_name, reason], kwargs={"attempt": attempt},
                                        queue=SYNC_QUEUE, countdown=max(0.0, countdown_s))


def anchor_job(link_name: str | None, reason: str, attempt: int = 0) -> str:
    """The anchor job: LINK_NAME's anchor for REASON (ATTEMPT: how many tried before), or, for
    None, one job per link. A side that failed for a while (rate limited, Planfix unavailable, a
    lease held) is tried again on the retry policy's delays; what it returns says how it went."""
    rt = runtime()
    if link_name is None:
        for link in rt.config.links:
            send_anchor(link.name, reason)
        return "sent"
    link = rt.link(link_name)
    result = anchor_link(runtime_parts(rt, link), link, reason)
    if not result.failures:
        return "anchored" if result.posted else "unchanged"
    decisions = [decide(error, attempt, rt.settings.time_scale) for error in result.failures.values()]
    again = [decision.delay_s for decision in decisions if decision.action in (Action.WAIT, Action.RETRY)]
    if again and attempt + 1 < MAX_ATTEMPTS:
        # The reason it was posted for: a rule change already recorded is not seen again.
        send_anchor(link_name, result.reason or reason, attempt + 1, max(again))
        return "retrying"
    log.error("journal head not anchored in %s after %d attempts", ", ".join(sorted(result.failures)), attempt + 1,
              extra={"link": link_name})
    return "failed"


@worker_ready.connect
def check_rules_on_start(**_: Any) -> None:
    """A worker starts with the links file as it is now: each link's rules are checked once
    (a change is recorded and anchored) by a job. Best effort: the daily anchor checks too."""
    try:
        for link in runtime().config.links:
            send_anchor(link.name, RULES_CHECK)
    except Exception as exc:  # noqa: BLE001 - never stop a worker's start; see above
        log.warning("link rules not checked at start: %s", exc)
