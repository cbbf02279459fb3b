"""The reconciliation poller: one poll per account routed to its link sides, what each queued run
is told to read, the window and cursor, the seen and synced records, the budget that sets the
period, and the one-poll-per-period turn; against a real Redis and the emulator in-process
(Starlette's TestClient) with a clock the test moves."""

from __future__ import annotations

import copy
import threading
import time
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
import redis
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from crosslink.lab.demo import example
from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.names import (
    ALL_BUT_CHECKLIST,
    BUT_CHECKLIST,
    CHECKLIST_HINT,
    FULL_HINT,
    SYNC_QUEUE,
    WHOLE,
    change_stamp,
    comment_fingerprint,
    comment_prints_key,
    hints_key,
    pending_key,
    promote_stamp,
    record_synced_stamp,
    stamp_seen,
    synced_stamp,
    synced_stamp_key,
)
from planfix.client import PlanfixClient
from planfix.emulator.app import create_app
from planfix.emulator.world import World
from planfix.errors import RateLimited
from planfix.limiter import AccountLimiter
from producers import reconcile as rc
from schemas.links import CreateSettings, Scope, Side, load_links
from workers.hints import Hints, extra_reads

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc).timestamp()
PAVEL, ROBOT = 2, 1
ZONES = ["UTC", "Europe/Moscow", "Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati", "Etc/GMT+12"]
# Planfix's smallest plan and the default share: the target figures are set for these.
QUOTA, SHARE, FLOOR_S, TICK_S = 20_000, 0.05, 60.0, 10.0
# The comment audit's part of SHARE by default; the polls have the rest.
AUDIT_SHARE = 0.0125


# --- configurations -------------------------------------------------------------------------------

def links_doc(count: int, base: str = "http://testserver") -> dict:
    """COUNT links of one partner account (the same robot), each with a client account of its own:
    link i's partner side is scoped to project 100+i, the first link keeps the demo's project 10."""
    doc = copy.deepcopy(example("links.yaml"))
    template = doc["links"][0]
    links = []
    for index in range(count):
        link = copy.deepcopy(template)
        link["name"] = "demo" if index == 0 else f"client-{index}"
        project = 10 if index == 0 else 100 + index
        link["sides"]["partner"].update(base_url=f"{base}/partner/rest", account="partner",
                                        scope={"project": project})
        link["sides"]["partner"]["create"]["project"] = project
        account = "client" if index == 0 else f"client-{index}"
        link["sides"]["client"].update(base_url=f"{base}/{account}/rest", account=account)
        links.append(link)
    doc["links"] = links
    return doc


def load(tmp_path, doc):
    path = tmp_path / f"links-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return load_links(path)


# --- pure decisions: the window -------------------------------------------------------------------

def test_window_starts_an_overlap_before_the_cursor_or_a_lookback_before_now():
    assert rc.window_start(None, T0) == T0 - rc.FIRST_LOOKBACK_S
    assert rc.window_start(T0 - 60, T0) == T0 - 60 - rc.OVERLAP_S
    assert rc.window_start(T0 + 500, T0) == T0 - rc.OVERLAP_S  # a cursor from the future


@given(cursor=st.one_of(st.none(), st.floats(T0 - 10 * 86400, T0 + 86400)), now=st.floats(T0, T0 + 86400))
def test_window_always_reaches_back_past_the_cursor_and_now(cursor, now):
    start = rc.window_start(cursor, now)
    assert start <= now - rc.OVERLAP_S
    if cursor is not None:
        assert start <= cursor - rc.OVERLAP_S


@settings(max_examples=200)
@given(epoch=st.floats(T0 - 400 * 86400, T0 + 400 * 86400), zone=st.sampled_from(ZONES + [None]),
       reader=st.sampled_from(ZONES))
def test_the_minute_named_is_never_after_the_instant(epoch, zone, reader):
    """Read in the zone Planfix uses (or, for an unknown zone, any zone), dateFrom is at or before
    EPOCH and, for a known zone, less than a minute before it."""
    text = rc.planfix_minute(epoch, None if zone is None else ZoneInfo(zone))
    naive = datetime.strptime(text, "%d-%m-%Y %H:%M")
    meant = naive.replace(tzinfo=ZoneInfo(reader if zone is None else zone)).timestamp()
    assert meant <= epoch
    if zone is not None:
        assert epoch - meant < 60 + 3600  # an hour of slack only where a DST fold repeats the minute


def tp(epoch):
    moment = datetime.fromtimestamp(epoch, tz=timezone.utc)
    return {"date": moment.strftime("%d-%m-%Y"), "time": moment.strftime("%H:%M"),
            "dateTimeUtcSeconds": moment.strftime("%Y-%m-%dT%H:%M:%S+0000")}


def test_a_stamp_is_exact_only_with_seconds():
    exact = rc.task_stamp({"dateOfLastUpdate": tp(T0), "dateOfLastComment": tp(T0 + 5)})
    assert exact.epoch == T0 + 5 and exact.comment_epoch == T0 + 5
    assert rc.task_stamp({"dateOfLastUpdate": tp(T0)}).epoch == T0
    minute_only = {"date": "02-03-2026", "time": "09:00"}
    assert rc.task_stamp({"dateOfLastUpdate": minute_only}).epoch is None
    assert rc.task_stamp({"dateOfLastUpdate": tp(T0), "dateOfLastComment": minute_only}).epoch is None
    assert rc.task_stamp({"dateOfLastUpdate": tp(T0)}) != rc.task_stamp({"dateOfLastUpdate": tp(T0 + 1)})


@given(update=st.floats(T0 - 86400, T0 + 86400), comment=st.one_of(st.none(), st.floats(T0 - 86400, T0 + 86400)))
def test_the_stamp_a_run_records_is_the_one_the_poll_computes(update, comment):
    """The worker records crosslink.queue.names.change_stamp of the task it read; the poll compares its
    own Stamp.text with it: they must be the same text for the same dates, and split into parts."""
    task = {"dateOfLastUpdate": tp(update), **({"dateOfLastComment": tp(comment)} if comment else {})}
    stamp = rc.task_stamp(task)
    assert stamp.text == change_stamp(task)
    assert stamp.update == tp(update)["dateTimeUtcSeconds"]
    assert stamp.comment == (tp(comment)["dateTimeUtcSeconds"] if comment else "")


# --- pure decisions: routing ----------------------------------------------------------------------

def side(kind="project", value=10, create=None, account="partner", robot="user:1"):
    return Side("partner", f"http://x/{account}/rest", account, "T", "S", "header", robot,
                Scope(kind, value), create or CreateSettings())


def test_filter_sets_cover_the_scope_and_the_mirrors_outside_it():
    assert rc.poll_filter_sets(side(create=CreateSettings(project=10))) == [
        [{"type": 5, "operator": "equal", "value": 10}]]
    assert rc.poll_filter_sets(side(create=CreateSettings(project=12))) == [
        [{"type": 5, "operator": "equal", "value": 10}], [{"type": 5, "operator": "equal", "value": 12}]]
    assert rc.poll_filter_sets(side("template", 50, CreateSettings(template=50))) == [
        [{"type": 51, "operator": "equal", "value": 50}]]
    assert rc.poll_filter_sets(side("participant", "user:3")) == [[]]


@given(project=st.one_of(st.none(), st.integers(9, 13)), template=st.one_of(st.none(), st.integers(49, 52)),
       scope=st.sampled_from([("project", 10), ("project", 11), ("template", 50), ("participant", "user:3"),
                              ("custom_field", "x")]),
       create_project=st.one_of(st.none(), st.integers(10, 12)),
       create_template=st.one_of(st.none(), st.integers(50, 51)))
def test_a_task_is_routed_exactly_where_the_side_filters_would_list_it(project, template, scope, create_project,
                                                                       create_template):
    """The account-wide feed routed by task_routes reaches the same link sides as the per-side
    filter sets (poll_filter_sets, which `crosslink reconcile` uses) would list."""
    conf = side(scope[0], scope[1], CreateSettings(project=create_project, template=create_template))
    task = {"id": 1, **({"project": {"id": project}} if project else {}),
            **({"template": {"id": template}} if template else {})}
    actual = {5: project, 51: template}
    listed = any(all(actual.get(flt["type"]) == flt["value"] for flt in filters)
                 for filters in rc.poll_filter_sets(conf))
    assert rc.task_routes(conf, task) == listed
    if scope[0] not in ("project", "template"):
        assert rc.task_routes(conf, task)  # the worker decides


def test_sides_of_one_account_and_robot_are_one_poll(tmp_path):
    config = load(tmp_path, links_doc(5))
    groups = rc.poll_accounts(config)
    assert [(g.key, len(g.members)) for g in groups] == [
        ("partner/user:1", 5), ("client/user:1", 1), *[(f"client-{i}/user:1", 1) for i in range(1, 5)]]
    doc = links_doc(2)
    doc["links"][1]["sides"]["partner"]["integration_user"] = "user:2"  # another robot sees other tasks
    assert [g.key for g in rc.poll_accounts(load(tmp_path, doc))][:2] == ["partner/user:1", "client/user:1"]
    assert rc.poll_account_of(load(tmp_path, doc), "client-1", "partner").key == "partner/user:2"


# --- pure decisions: what a run is queued for -------------------------------------------------------

def stamp_at(update, comment=None):
    return rc.task_stamp({"dateOfLastUpdate": tp(update), **({"dateOfLastComment": tp(comment)} if comment else {})})


INEXACT = rc.Stamp("02-03-2026 09:00|", None)


def test_classify_by_case():
    now_stamp = stamp_at(T0, T0 + 30)
    # A run recorded this very stamp: nothing to do.
    assert rc.classify(now_stamp, now_stamp.text, None).kind == rc.SKIP
    # Nothing known of the task on this side: a first look sees everything.
    assert rc.classify(now_stamp, None, None).kind == rc.FULL
    # Only the comment moved since the synced stamp: the new comments are those from its comment on.
    verdict = rc.classify(now_stamp, stamp_at(T0, T0 + 10).text, None)
    assert verdict == rc.Verdict(rc.COMMENT, T0 + 10)
    assert rc.classify(now_stamp, stamp_at(T0).text, None) == rc.Verdict(rc.COMMENT, None)
    # The task changed: task events.
    assert rc.classify(now_stamp, stamp_at(T0 - 5, T0 + 30).text, None).kind == rc.TASK
    assert rc.classify(now_stamp, stamp_at(T0 - 5, T0 + 10).text, None).kind == rc.TASK
    # A stamp without seconds says nothing: always queued, never skipped.
    assert rc.classify(INEXACT, INEXACT.text, rc.Seen(INEXACT.text, T0 + 999, 5, rc.TASK)).kind == rc.TASK
    # An earlier poll's stamp stands in for a run's record when there is none.
    assert rc.classify(now_stamp, None, rc.Seen(stamp_at(T0, T0 + 10).text, T0 + 20)) == rc.Verdict(rc.COMMENT, T0 + 10)


def test_a_stamp_polls_queued_is_queued_again_until_settled_and_looked_at_twice():
    stamp = stamp_at(T0)
    early = rc.Seen(stamp.text, T0 + 10, 1, rc.TASK)
    late = rc.Seen(stamp.text, T0 + rc.STAMP_SETTLE_S, 1, rc.TASK)
    assert rc.classify(stamp, None, early).kind == rc.TASK
    assert rc.classify(stamp, None, late).kind == rc.TASK  # one look only: the second one is due
    assert rc.classify(stamp, None, rc.Seen(stamp.text, T0 + 10, 2, rc.TASK)).kind == rc.TASK  # not settled
    assert rc.classify(stamp, None, rc.Seen(stamp.text, T0 + 60, 2, rc.TASK)).kind == rc.SKIP
    assert rc.classify(stamp, None, rc.Seen(stamp.text, T0 + 60, 1, rc.COMMENT)).kind == rc.SKIP
    assert rc.classify(stamp, None, rc.Seen(stamp.text, T0 + 60, 0, rc.ECHO)).kind == rc.SKIP
    assert rc.classify(stamp, None, rc.Seen(stamp.text, T0 + 10, 0, rc.ECHO)).kind == rc.COMMENT


exact_stamps = st.builds(stamp_at, st.integers(0, 3).map(lambda s: T0 + s),
                         st.one_of(st.none(), st.integers(0, 3).map(lambda s: T0 + 100 + s)))
texts = st.one_of(st.none(), exact_stamps.map(lambda s: s.text))
seens = st.one_of(st.none(), st.builds(rc.Seen, texts.filter(bool), st.floats(T0, T0 + 300), st.integers(0, 3),
                                       st.sampled_from([rc.TASK, rc.FULL, rc.COMMENT, rc.ECHO, rc.SKIP])))


@settings(max_examples=500)
@given(stamp=st.one_of(exact_stamps, st.just(INEXACT)), synced=texts, before=seens)
def test_classify_never_hides_a_change(stamp, synced, before):
    """SKIP only for a stamp a run recorded, or one settled polls already queued enough; COMMENT
    only when the update date is the one last known; FULL only when nothing is known."""
    verdict = rc.classify(stamp, synced, before)
    if verdict.kind == rc.SKIP:
        assert stamp.epoch is not None
        assert synced == stamp.text or (before is not None and rc.settled(before, stamp) and (
            before.kind in (rc.COMMENT, rc.ECHO, rc.SKIP) or before.queued >= rc.REQUEUE_LIMIT))
    if verdict.kind == rc.COMMENT:
        known = [text for text in (synced, before.stamp if before else None) if text]
        assert known and stamp.epoch is not None
        assert synced is None or synced.partition("|")[0] == stamp.update or before.stamp == stamp.text
    if verdict.kind == rc.FULL:
        assert synced is None and before is None
    if stamp.epoch is None:
        assert verdict.kind == rc.TASK


def fc(number, owner, at=None):
    return rc.FeedComment(number, owner, at)


def test_comment_hints_name_peoples_comments_and_skip_our_own():
    verdict = rc.Verdict(rc.COMMENT, T0)
    assert rc.comment_hints(verdict, [fc(7, "user:2", T0 + 1), fc(8, "user:1", T0 + 2), fc(6, "user:3", T0)],
                            "user:1") == ("comment_added:7",)
    assert rc.comment_hints(verdict, [fc(8, "user:1", T0 + 2)], "user:1") == ()          # our mirror: an echo
    assert rc.comment_hints(verdict, [fc(6, "user:2", T0 - 5)], "user:1") == rc.POLL_TASK_HINTS  # none new
    assert rc.comment_hints(verdict, [], "user:1") == rc.POLL_TASK_HINTS
    assert rc.comment_hints(rc.Verdict(rc.COMMENT), [fc(9, "user:2", None), fc(3, "user:2", T0 - 99)],
                            "user:1") == ("comment_added:3", "comment_added:9")
    assert rc.hints_for(rc.Verdict(rc.FULL), [], "user:1") == (FULL_HINT,)
    assert rc.hints_for(rc.Verdict(rc.SKIP), [], "user:1") == ()


def poll_run_records(hints, explained, checklist_carried=False):
    """What a run with HINTS reads (workers.hints), and how much of its stamp it records
    (crosslink.queue.names.stamp_seen), for a task that never had a comment."""
    parsed = Hints.parse(hints)
    reads = extra_reads(parsed, explained, has_comments=False)
    seen = stamp_seen({"dateOfLastUpdate": tp(T0)}, None, checklist_looked=reads.checklist,
                      checklist_carried=checklist_carried, comments_listed=True,
                      one_explained_event=explained and parsed.task_events == 1 and not parsed.full)
    return reads, seen


def test_a_checklist_tick_lost_with_a_field_edit_is_looked_at_by_the_polls_run():
    """Both webhooks lost: the poll's run stands for several events, so it looks at the
    checklist even when a field explains the change, and records the stamp whole."""
    stamp = stamp_at(T0)
    first = rc.classify(stamp, stamp_at(T0 - 300).text, None)
    reads, seen = poll_run_records(rc.hints_for(first, [], "user:1"), explained=True, checklist_carried=True)
    assert first.kind == rc.TASK and reads.checklist and seen == WHOLE
    assert rc.classify(stamp, stamp.text, rc.next_seen(stamp, None, [first.kind], T0 + 90)).kind == rc.SKIP


def test_a_webhook_run_of_one_explained_event_leaves_only_the_checklist_to_the_poll():
    assert poll_run_records(["task_changed"], explained=True)[1] == WHOLE
    assert poll_run_records(["task_changed", "task_changed"], explained=True, checklist_carried=True)[1] == WHOLE
    assert poll_run_records([FULL_HINT], explained=True, checklist_carried=True)[1] == WHOLE
    # A checklist change before it, its webhook lost, may hide behind its stamp: the checklist
    # is left to the poll, which asks for it alone.
    reads, seen = poll_run_records(["task_changed"], explained=True, checklist_carried=True)
    assert not reads.checklist and seen == ALL_BUT_CHECKLIST
    stamp = stamp_at(T0)
    verdict = rc.classify(stamp, BUT_CHECKLIST + stamp.text, None)
    assert verdict.kind == rc.CHECKLIST and rc.hints_for(verdict, [], "user:1") == (CHECKLIST_HINT,)
    assert Hints.parse(rc.hints_for(verdict, [], "user:1")).reads_no_task
    # Its run looks and records the stamp whole: the next poll queues nothing.
    assert rc.classify(stamp, stamp.text, rc.next_seen(stamp, None, [verdict.kind], T0 + 90)).kind == rc.SKIP


def test_a_stamp_seen_but_for_the_checklist_whose_comment_date_moved_asks_for_both():
    stamp = stamp_at(T0, T0 + 30)
    partial = BUT_CHECKLIST + stamp_at(T0, T0 - 30).text
    verdict = rc.classify(stamp, partial, None)
    assert verdict.kind == rc.COMMENT and verdict.checklist
    hints = rc.hints_for(verdict, [fc(7, "user:2", T0 + 30)], "user:1")
    assert hints == ("comment_added:7", CHECKLIST_HINT)
    assert Hints.parse(hints).reads_no_task
    # Every new comment ours: the checklist alone.
    assert rc.hints_for(verdict, [fc(8, "user:1", T0 + 30)], "user:1") == (CHECKLIST_HINT,)
    # The feed names none: a task run, which looks at the checklist itself.
    assert rc.hints_for(verdict, [], "user:1") == rc.POLL_TASK_HINTS
    # Another poll of the same stamp, the comment named already: still the checklist.
    seen = rc.next_seen(stamp, None, [rc.COMMENT], T0 + 90, named=[7])
    again = rc.classify(stamp, partial, seen)
    assert again.checklist and rc.hints_for(again, [fc(7, "user:2", T0 + 30)], "user:1") == (CHECKLIST_HINT,)


def test_a_stamp_seen_but_for_the_checklist_is_given_up_like_any_other():
    stamp = stamp_at(T0)
    partial = BUT_CHECKLIST + stamp.text
    seen = None
    for poll in range(rc.REQUEUE_LIMIT):
        verdict = rc.classify(stamp, partial, seen)
        assert verdict.kind == rc.CHECKLIST
        seen = rc.next_seen(stamp, seen, [verdict.kind], T0 + rc.STAMP_SETTLE_S + poll)
    assert rc.classify(stamp, partial, seen).kind == rc.SKIP


def test_promoting_a_stamp_seen_but_for_the_checklist(redis_client):
    task = {"dateOfLastUpdate": tp(T0)}
    record_synced_stamp(redis_client, "demo", "partner", 5, task, checklist_seen=False)
    found = synced_stamp(redis_client, "demo", "partner", 5)
    assert found == BUT_CHECKLIST + change_stamp(task)
    # Another run recorded since: its record stands.
    record_synced_stamp(redis_client, "demo", "partner", 5, {"dateOfLastUpdate": tp(T0 + 5)}, checklist_seen=False)
    assert not promote_stamp(redis_client, "demo", "partner", 5, found)
    found = synced_stamp(redis_client, "demo", "partner", 5)
    assert promote_stamp(redis_client, "demo", "partner", 5, found)
    assert synced_stamp(redis_client, "demo", "partner", 5) == change_stamp(
        {"dateOfLastUpdate": tp(T0 + 5)})
    # A whole stamp is no partial one.
    assert not promote_stamp(redis_client, "demo", "partner", 5, change_stamp(task))


def test_a_run_looked_at_a_stamp_whole_only_when_both_its_dates_are_covered():
    source = {"dateOfLastUpdate": tp(T0 + 60), "dateOfLastComment": tp(T0 + 30)}
    before_comment = change_stamp({"dateOfLastUpdate": tp(T0), "dateOfLastComment": tp(T0 + 30)})
    older_comment = change_stamp({"dateOfLastUpdate": tp(T0), "dateOfLastComment": tp(T0 - 30)})
    whole = dict(checklist_looked=False, checklist_carried=False, comments_listed=False, one_explained_event=True)
    assert stamp_seen(source, before_comment, **whole) == WHOLE              # the comment date did not move
    assert stamp_seen(source, BUT_CHECKLIST + before_comment, **whole) == WHOLE
    assert stamp_seen(source, older_comment, **whole) is None               # a comment the run did not see
    assert stamp_seen(source, None, **whole) is None                        # nothing to compare with
    assert stamp_seen(source, None, **{**whole, "comments_listed": True}) == WHOLE
    # Not one explained event: a comment edit may hide behind the update date unless listed.
    assert stamp_seen(source, before_comment, **{**whole, "one_explained_event": False}) is None
    assert stamp_seen(source, before_comment, **{**whole, "one_explained_event": False,
                                                 "comments_listed": True, "checklist_looked": True}) == WHOLE
    # A link carrying the checklist: what a lost webhook changed there hides behind the stamp.
    assert stamp_seen(source, before_comment, **{**whole, "checklist_carried": True}) == ALL_BUT_CHECKLIST
    assert stamp_seen(source, before_comment, **{**whole, "checklist_carried": True,
                                                 "checklist_looked": True}) == WHOLE


def test_next_seen_counts_the_polls_that_queued_a_stamp():
    stamp = stamp_at(T0)
    first = rc.next_seen(stamp, None, [rc.TASK, rc.COMMENT], T0 + 10)
    assert first == rc.Seen(stamp.text, T0 + 10, 1, rc.TASK)
    assert rc.next_seen(stamp, first, [rc.FULL], T0 + 90) == rc.Seen(stamp.text, T0 + 90, 2, rc.TASK)
    assert rc.next_seen(stamp, first, [], T0 + 90) == first
    assert rc.next_seen(stamp_at(T0 + 1), first, [], T0 + 90) == rc.Seen(stamp_at(T0 + 1).text, T0 + 90, 0, rc.SKIP)
    assert rc.next_seen(stamp, None, [rc.ECHO], T0) == rc.Seen(stamp.text, T0, 0, rc.ECHO)
    assert rc.next_seen(stamp, None, [rc.COMMENT, rc.ECHO], T0) == rc.Seen(stamp.text, T0, 1, rc.COMMENT)


# --- pure decisions: comments already named for a stamp ---------------------------------------------

def test_a_poll_of_the_same_unsettled_comment_stamp_names_only_comments_not_named_before():
    stamp = stamp_at(T0, T0 + 30)
    synced = stamp_at(T0, T0 + 10).text
    feed = [fc(7, "user:2", T0 + 20), fc(8, "user:3", T0 + 30), fc(9, "user:1", T0 + 30)]
    first = rc.classify(stamp, synced, None)
    assert first == rc.Verdict(rc.COMMENT, T0 + 10) and first.named == frozenset()
    hints = rc.hints_for(first, feed, "user:1")
    assert hints == ("comment_added:7", "comment_added:8") and rc.named_comments(hints) == {7, 8}
    seen = rc.next_seen(stamp, None, [rc.COMMENT], T0 + 35, rc.named_comments(hints))
    assert seen == rc.Seen(stamp.text, T0 + 35, 1, rc.COMMENT, frozenset({7, 8}))
    # The next poll, before the stamp settled: nothing new, nothing queued, the count unchanged.
    second = rc.classify(stamp, synced, seen)
    assert second == rc.Verdict(rc.COMMENT, T0 + 10, frozenset({7, 8}))
    assert rc.hints_for(second, feed, "user:1") == ()
    again = rc.next_seen(stamp, seen, [rc.ECHO], T0 + 50, ())
    assert again == rc.Seen(stamp.text, T0 + 50, 1, rc.ECHO, frozenset({7, 8}))
    # A comment the feed shows only now (same stamp) is named, alone.
    assert rc.hints_for(rc.classify(stamp, synced, again), feed + [fc(10, "user:2", T0 + 30)],
                        "user:1") == ("comment_added:10",)
    # The feed names none at all: the run still looks itself.
    assert rc.hints_for(rc.classify(stamp, synced, again), [], "user:1") == rc.POLL_TASK_HINTS
    # Settled: skipped, as before.
    assert rc.classify(stamp, synced, rc.Seen(stamp.text, T0 + 90, 1, rc.ECHO, frozenset({7, 8}))).kind == rc.SKIP
    # A new stamp (another comment, or the task changed) starts afresh.
    assert rc.classify(stamp_at(T0, T0 + 40), synced, again) == rc.Verdict(rc.COMMENT, T0 + 10)
    assert rc.classify(stamp_at(T0 + 40, T0 + 30), synced, again) == rc.Verdict(rc.TASK)
    assert rc.next_seen(stamp_at(T0, T0 + 40), again, [rc.COMMENT], T0 + 60, {11}).comments == {11}
    # A TASK verdict for the same stamp keeps the comments named, but names none itself.
    task_seen = rc.Seen(stamp.text, T0 + 35, 1, rc.TASK, frozenset({7}))
    assert rc.classify(stamp, synced, task_seen) == rc.Verdict(rc.TASK)
    assert rc.next_seen(stamp, task_seen, [rc.TASK], T0 + 50).comments == {7}
    assert rc.next_seen(stamp, task_seen, [], T0 + 50) == task_seen


comment_ids = st.frozensets(st.integers(1, 12), max_size=6)
named_seens = st.one_of(st.none(), st.builds(rc.Seen, texts.filter(bool), st.floats(T0, T0 + 300),
                                             st.integers(0, 3),
                                             st.sampled_from([rc.TASK, rc.FULL, rc.COMMENT, rc.ECHO, rc.SKIP]),
                                             comment_ids))


@settings(max_examples=500)
@given(stamp=st.one_of(exact_stamps, st.just(INEXACT)), synced=texts, before=named_seens)
def test_classify_carries_the_comments_named_only_for_the_same_stamp_and_decides_as_before(stamp, synced, before):
    """The comments named change no verdict's kind nor its window; a COMMENT verdict carries them
    exactly when BEFORE is the same stamp."""
    verdict = rc.classify(stamp, synced, before)
    bare = rc.classify(stamp, synced, None if before is None else rc.Seen(before.stamp, before.polled_at,
                                                                          before.queued, before.kind))
    assert (verdict.kind, verdict.comments_since) == (bare.kind, bare.comments_since)
    same = before is not None and before.stamp == stamp.text
    assert verdict.named == (before.comments if same and verdict.kind == rc.COMMENT else frozenset())


feed_comments = st.lists(st.builds(rc.FeedComment, st.integers(1, 12),
                                   st.sampled_from(["user:1", "user:2", "user:3", None]),
                                   st.one_of(st.none(), st.integers(0, 40).map(lambda s: T0 + s))), max_size=10)


@settings(max_examples=500)
@given(feed=feed_comments, since=st.one_of(st.none(), st.integers(0, 40).map(lambda s: T0 + s)), named=comment_ids)
def test_comment_hints_name_each_new_persons_comment_not_named_before(feed, since, named):
    hints = rc.comment_hints(rc.Verdict(rc.COMMENT, since, named), feed, "user:1")
    new = [c for c in feed if since is None or c.at is None or c.at > since]
    people = {c.id for c in new if c.owner != "user:1"}
    if not new:
        assert hints == rc.POLL_TASK_HINTS          # the feed names none: the run looks itself
    else:
        assert hints == tuple(f"comment_added:{n}" for n in sorted(people - named))
        assert rc.named_comments(hints) == people - named
        # With none named before, every new person's comment is named, as it always was.
        assert rc.named_comments(rc.comment_hints(rc.Verdict(rc.COMMENT, since), feed, "user:1")) == people


@settings(max_examples=300)
@given(feeds=st.lists(feed_comments, min_size=1, max_size=5), synced_comment=st.one_of(st.none(), st.integers(0, 20)),
       gaps=st.lists(st.floats(0.5, 12), min_size=5, max_size=5))
def test_polls_of_one_unsettled_comment_stamp_name_each_comment_once_and_lose_none(feeds, synced_comment, gaps):
    """Polls of the same stamp before it settles (as poll_account runs them: classify, the
    hints, next_seen): no comment is named twice, and each person's new comment a poll's feed
    shows was named by that poll or an earlier one, unless a run was told to look itself."""
    stamp = stamp_at(T0, T0 + 41)
    synced = stamp_at(T0, T0 + synced_comment).text if synced_comment is not None else stamp_at(T0).text
    before, named_so_far, now = None, [], T0 + 41
    for feed, gap in zip(feeds, gaps):
        now += gap                                   # every poll within STAMP_SETTLE_S of the stamp
        verdict = rc.classify(stamp, synced, before)
        assert verdict.kind in (rc.COMMENT, rc.TASK)
        hints = rc.hints_for(verdict, feed, "user:1")
        named = rc.named_comments(hints)
        assert not named & set(named_so_far)
        named_so_far += sorted(named)
        if verdict.kind == rc.COMMENT and hints != rc.POLL_TASK_HINTS:
            people = {c.id for c in feed if c.owner != "user:1"
                      and (verdict.comments_since is None or c.at is None or c.at > verdict.comments_since)}
            assert people <= set(named_so_far)
        kinds = [rc.ECHO] if verdict.kind == rc.COMMENT and not hints else (
            [rc.TASK if hints == rc.POLL_TASK_HINTS else verdict.kind] if hints else [])
        before = rc.next_seen(stamp, before, kinds, now, named)
        assert before.comments == set(named_so_far)
        assert rc.parse_seen(rc.seen_record(before)) == before
    # The task changed meanwhile, or another comment came: a new stamp names afresh.
    assert rc.classify(stamp_at(T0, T0 + 50), synced, before).named == frozenset()


@given(seen=st.builds(rc.Seen, texts.filter(bool), st.floats(T0, T0 + 300, allow_nan=False), st.integers(0, 3),
                      st.sampled_from([rc.TASK, rc.FULL, rc.COMMENT, rc.ECHO, rc.SKIP]), comment_ids))
def test_a_seen_record_reads_back_as_written(seen):
    assert rc.parse_seen(rc.seen_record(seen)) == seen
    assert rc.parse_seen(rc.seen_record(seen).encode()) == seen


def test_a_seen_record_written_before_comments_were_kept_means_none_named(redis_client):
    stamp = stamp_at(T0, T0 + 30).text
    older = f'["{stamp}", {T0 + 40}, 1, "comment"]'
    assert rc.parse_seen(older) == rc.Seen(stamp, T0 + 40, 1, rc.COMMENT, frozenset())
    assert rc.seen_record(rc.Seen(stamp, T0 + 40, 1, rc.COMMENT)) == older   # none named: the old form
    for damaged in ('["x", 1]', '{"a": 1}', "not json", f'["{stamp}", 1, 1, "comment", ["x"]]', "7"):
        assert rc.parse_seen(damaged) is None
    seen_key = rc.key(rc.SEEN_KEY, "partner/user:1")
    redis_client.hset(seen_key, mapping={"1": older, "2": rc.seen_record(rc.Seen(stamp, T0 + 40, 1, rc.COMMENT,
                                                                                 frozenset({7}))), "3": "damaged"})
    assert rc.load_seen(redis_client, "partner/user:1") == {
        1: rc.Seen(stamp, T0 + 40, 1, rc.COMMENT), 2: rc.Seen(stamp, T0 + 40, 1, rc.COMMENT, frozenset({7}))}


# --- pure decisions: the budget ---------------------------------------------------------------------

def test_the_default_budget_gives_a_period_of_about_87_seconds():
    period = rc.poll_period_s(1, QUOTA, SHARE, FLOOR_S)
    assert period == pytest.approx(86400 / 999)
    assert 86400 / period + rc.FIXED_REQUESTS_PER_DAY == pytest.approx(1000)
    assert rc.poll_period_s(1, 100_000, SHARE, FLOOR_S) == FLOOR_S     # a big plan: the floor
    assert rc.poll_period_s(1, 0, SHARE, FLOOR_S) == FLOOR_S           # no quota
    assert rc.poll_period_s(3, QUOTA, SHARE, FLOOR_S) == pytest.approx(3 * 86400 / 999)
    with pytest.raises(ValueError):
        rc.poll_period_s(1, QUOTA, 0, FLOOR_S)


@given(requests=st.integers(1, 500), quota=st.integers(1, 200_000), share=st.floats(0.001, 1.0),
       floor=st.floats(1, 600), tick=st.floats(0.5, 60))
def test_polls_never_spend_more_than_their_share(requests, quota, share, floor, tick):
    period = rc.effective_period_s(rc.poll_period_s(requests, quota, share, floor), tick)
    spent = 86400 / period * requests + rc.FIXED_REQUESTS_PER_DAY
    assert period >= floor
    assert spent <= max(share * quota, requests + rc.FIXED_REQUESTS_PER_DAY) * (1 + 1e-9)


@pytest.mark.parametrize("links", [1, 10, 200])
def test_quiet_overhead_per_account_does_not_grow_with_links(tmp_path, links):
    """The issue's target: at most 1,000 requests a day per account at default settings, the
    same for 10 and for 200 links (each link's client has an account of its own)."""
    per_account = rc.quiet_requests_per_day(load(tmp_path, links_doc(links)), QUOTA, SHARE, FLOOR_S, TICK_S)
    single = rc.quiet_requests_per_day(load(tmp_path, links_doc(1)), QUOTA, SHARE, FLOOR_S, TICK_S)
    assert per_account["partner"] == single["partner"] <= 1000
    assert per_account["partner"] == pytest.approx(86400 / 90 + 1)  # a poll every 90 s (9 ticks)
    assert len(per_account) == links + 1


def test_the_repair_bound_at_default_settings_is_within_300_seconds():
    period = rc.poll_period_s(1, QUOTA, SHARE, FLOOR_S)
    bound = rc.repair_bound_s(period, TICK_S, 1.0)
    assert bound == pytest.approx(180 + 7)   # two periods (one deferred) to the tick, 7 requests
    assert bound <= 300
    assert rc.repair_bound_s(period, TICK_S, 0) == 180  # no rate limit: no request time
    assert rc.repair_bound_s(period, TICK_S, 1.0, requests_per_poll=3) == pytest.approx(180 + 9)


@given(period=st.floats(1, 3600), tick=st.floats(0.5, 60), rate=st.floats(0.1, 20))
def test_the_bound_covers_the_longest_a_deferred_poll_can_wait(period, tick, rate):
    """A tick polls at the latest once the poll is MAX_DEFER_PERIODS late (defer_poll), at the
    first tick after that: the bound is never below that wait plus the requests."""
    latest = period * (1 + rc.MAX_DEFER_PERIODS)
    assert not rc.defer_poll(live_requests=10**6, since_poll_s=latest, rate_per_s=rate, period_s=period)
    assert rc.repair_bound_s(period, tick, rate) >= latest + (1 + rc.RUN_REQUESTS) / rate - 1e-6


def test_a_busy_account_defers_its_poll_but_not_beyond_a_period():
    busy = dict(live_requests=60, since_poll_s=100.0, rate_per_s=1.0, period_s=90.0)
    assert rc.defer_poll(**busy)
    assert not rc.defer_poll(**{**busy, "live_requests": 40})
    assert not rc.defer_poll(**{**busy, "since_poll_s": 180.0})        # two periods late: poll now
    assert not rc.defer_poll(**{**busy, "rate_per_s": 0.0})             # no rate limit
    assert rc.live_requests(500, 420) == 80
    assert rc.live_requests(30, 19_000) == 30                          # a new UTC day
    assert rc.live_requests(30, None) == 30


# --- pure decisions: the comment audit -----------------------------------------------------------------

@given(candidates=st.sets(st.integers(0, 60), max_size=40), count=st.integers(1, 12), start=st.integers(0, 60))
def test_the_audit_rotation_reaches_every_candidate_in_a_turn_of_rounds(candidates, count, start):
    names = {f"k{n:03d}" for n in candidates}
    after, seen = f"k{start:03d}", []
    for _ in range(-(-len(names) // count)):
        round_ = rc.audit_round(names, after, count)
        assert len(round_) == min(count, len(names)) and len(set(round_)) == len(round_)
        seen += round_
        after = round_[-1]
    assert set(seen) == names


def test_the_audit_rotation_goes_on_after_the_last_key_looked_at_even_when_it_is_gone():
    assert rc.audit_round(["a", "b", "c", "d"], "b", 2) == ["c", "d"]
    assert rc.audit_round(["a", "b", "c", "d"], "d", 3) == ["a", "b", "c"]
    assert rc.audit_round(["a", "c", "d"], "b", 1) == ["c"]          # "b" no longer a candidate
    assert rc.audit_round([], "b", 5) == [] and rc.audit_round(["a"], None, 0) == []


def audited(number, text, deleted=False, owner="user:2"):
    return {"id": number, "description": text, "isDeleted": deleted, "owner": {"id": owner}}


def test_edited_comments_are_those_whose_text_or_deletion_left_their_fingerprint():
    prints = {n: comment_fingerprint(f"text {n}", False) for n in (1, 2, 3, 4)}
    listed = [audited(1, "text 1"), audited(2, "text 2, edited"), audited(3, "text 3", deleted=True),
              audited(4, "text 4, by the robot", owner="user:1"), audited(5, "new: the feed's")]
    assert rc.edited_comments(listed, prints, robot="user:1") == (2, 3)


def test_the_audit_spends_its_share_in_whole_tasks_and_carries_the_rest():
    period = 86400 / 749                                   # the default polls' period
    tasks, credit = 0, 0.0
    for _ in range(749):                                   # a day of polls
        allowed, credit = rc.audit_allowance(credit, QUOTA, AUDIT_SHARE, period)
        assert allowed in (0, 1)
        tasks += allowed
    assert tasks + credit == pytest.approx(250)            # 250 a day: 1.25 % of 20,000
    assert rc.audit_allowance(0.5, QUOTA, 0.0, period) == (0, 0.0)       # switched off
    assert rc.audit_allowance(0.0, 0, AUDIT_SHARE, period) == (rc.AUDIT_MAX_TASKS, 0.0)   # no quota
    assert rc.audit_allowance(0.0, QUOTA, AUDIT_SHARE, 86400.0) == (rc.AUDIT_MAX_TASKS, rc.AUDIT_MAX_TASKS)
    with pytest.raises(ValueError):
        rc.audit_allowance(0.0, QUOTA, 1.5, period)


def test_the_audits_share_is_a_part_of_the_reconciliations():
    from crosslink.base.settings import Settings

    defaults = Settings.from_env({})
    assert (defaults.reconcile_share, defaults.audit_share) == (0.05, AUDIT_SHARE)
    assert defaults.poll_share == pytest.approx(0.0375)
    assert Settings.from_env({"CROSSLINK_AUDIT_SHARE": "0"}).poll_share == 0.05   # the audit off
    for reconcile, audit in (("0.05", "0.05"), ("0.05", "0.2"), ("0.05", "-0.01"), ("1.5", "0.01")):
        with pytest.raises(ValueError, match="CROSSLINK_AUDIT_SHARE"):
            Settings.from_env({"CROSSLINK_RECONCILE_SHARE": reconcile, "CROSSLINK_AUDIT_SHARE": audit})


@given(quota=st.integers(1, 200_000), share=st.floats(0.0, 1.0), periods=st.lists(st.floats(0, 3600), max_size=40))
def test_the_audit_never_spends_more_than_its_share(quota, share, periods):
    tasks, credit = 0, 0.0
    for period in periods:
        allowed, credit = rc.audit_allowance(credit, quota, share, period)
        assert 0 <= allowed <= rc.AUDIT_MAX_TASKS and 0 <= credit <= rc.AUDIT_MAX_TASKS
        tasks += allowed
    assert tasks <= share * quota * sum(periods) / rc.DAY_S + 1e-6


def test_an_audits_allowance_is_kept_between_polls_in_redis(redis_client, tmp_path):
    group = rc.poll_accounts(load(tmp_path, links_doc(1)))[0]
    allowed = [rc.take_audit_allowance(redis_client, group, QUOTA, AUDIT_SHARE, 86400 / 749) for _ in range(6)]
    assert allowed == [0, 0, 1, 0, 0, 1]
    assert 0 < redis_client.ttl(rc.key(rc.AUDIT_CREDIT_KEY, group.key)) <= rc.LAST_POLL_TTL_S


# --- the poll against the emulator and Redis --------------------------------------------------------

class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


class Setup:
    def __init__(self, world, clock, store, client, group, enqueuer):
        self.world, self.clock, self.store, self.client, self.group = world, clock, store, client, group
        self.enqueuer = enqueuer

    def poll(self):
        for pattern in ("crosslink:pending:*", "crosslink:hints:*"):
            for found in self.store.scan_iter(pattern):
                self.store.delete(found)  # each poll's jobs seen on their own: the flags would coalesce them
        return rc.poll_account(self.group, self.client, self.enqueuer, self.store, clock=self.clock)

    def hints(self, number, link="demo"):
        return [item.decode() for item in self.store.lrange(hints_key(link, "partner", number), 0, -1)]

    def used(self):
        return self.world.account("partner").quota_used

    def paths(self, since=0):
        return [entry["path"] for entry in self.world.requests("partner")[since:]]

    def record(self, number, link="demo"):
        """What the worker hook does once a run of the task synced it (the stamp it read)."""
        task = self.world.get_task("partner", number, "dateOfLastUpdate,dateOfLastComment")
        record_synced_stamp(self.store, link, "partner", number, task)


def make_setup(tmp_path, redis_url, links=1):
    clock = Clock(T0)
    seed = copy.deepcopy(example("emulator.yaml"))
    for account in seed["accounts"].values():
        account["limits"] = {"rate_per_s": None, "daily_quota": None}
        account["scenarios"] = []
    seed["accounts"]["partner"]["projects"] += [{"id": 11, "name": "Internal"}] + [
        {"id": 100 + i, "name": f"Client {i}"} for i in range(1, links)]
    world = World.from_config(seed, clock=clock)
    config = load(tmp_path, links_doc(links))
    group = rc.poll_account_of(config, "demo", "partner")
    store = redis.Redis.from_url(redis_url)
    enqueuer = Enqueuer(redis_url)
    return world, clock, store, enqueuer, group


@pytest.fixture
def setup(tmp_path, redis_url):
    world, clock, store, enqueuer, group = make_setup(tmp_path, redis_url)
    with TestClient(create_app(world)) as http:
        client = PlanfixClient(group.first.conf.base_url, "demo-partner-sync", account="partner", http=http,
                               limiter=AccountLimiter(store, rate_per_s=0), read_retries=0)
        yield Setup(world, clock, store, client, group, enqueuer)
    enqueuer.close()
    store.close()
    world.close()


def edit(world, number, name):
    world.update_task("partner", number, {"name": name}, author=PAVEL)


def test_first_poll_looks_back_an_hour_and_takes_a_full_look_at_a_task_it_knows_nothing_of(setup):
    clock = setup.clock
    clock.now = T0 + 2 * 3600
    edit(setup.world, 2, "changed lately")
    clock.now += 30
    report = setup.poll()
    assert report.runs == [("demo", "partner", 2, (FULL_HINT,))] and report.queued == 1
    assert setup.store.exists(pending_key("demo", "partner", 2)) and setup.store.llen(SYNC_QUEUE) == 1
    assert setup.hints(2) == [FULL_HINT]
    assert rc.read_cursor(setup.store, setup.group.key) == clock.now


def test_a_task_a_webhook_run_synced_is_not_queued_and_a_later_change_reads_only_the_task(setup):
    clock, world = setup.clock, setup.world
    clock.now = T0 + 2 * 3600
    edit(world, 1, "synced by its webhook")
    setup.record(1)
    clock.now += 20
    report = setup.poll()
    assert report.runs == [] and report.found == 1 and report.skipped == 1
    assert not setup.store.exists(pending_key("demo", "partner", 1))
    edit(world, 1, "its webhook lost")
    clock.now += 90
    report = setup.poll()
    assert report.runs == [("demo", "partner", 1, rc.POLL_TASK_HINTS)] and not report.comment_feed
    assert setup.hints(1) == ["task_changed", "task_changed"]
    setup.record(1)                     # the second look (checklist and files) recorded it
    clock.now += 90
    assert setup.poll().runs == []


def test_a_comment_whose_webhook_was_lost_is_read_alone_and_our_own_comments_queue_nothing(setup):
    clock, world = setup.clock, setup.world
    clock.now = T0 + 2 * 3600
    setup.record(1)
    clock.now += 30
    person = world.add_comment("partner", 1, {"description": "a person's"}, author=PAVEL)
    clock.now += 30
    since = len(world.requests("partner"))
    report = setup.poll()
    assert report.runs == [("demo", "partner", 1, (f"comment_added:{person}",))] and report.comment_feed
    assert setup.hints(1) == [f"comment_added:{person}"]
    assert setup.paths(since) == ["/user/list", "/task/list", "/comment/list"]
    setup.record(1)
    clock.now += 30
    world.add_comment("partner", 1, {"description": "a mirror of the client's"}, author=ROBOT)
    clock.now += 30
    report = setup.poll()
    assert report.runs == [] and report.comment_feed and report.skipped == 1


def test_comments_are_routed_with_their_task_and_other_projects_are_ignored(setup):
    world, clock = setup.world, setup.clock
    world.update_task("partner", 2, {"project": {"id": 11}}, author=PAVEL)
    clock.now = T0 + 2 * 3600
    world.add_comment("partner", 1, {"description": "in scope"}, author=PAVEL)
    world.add_comment("partner", 2, {"description": "another project"}, author=PAVEL)
    clock.now += 5
    report = setup.poll()
    assert report.tasks == [1] and report.found == 2


def test_the_overlap_catches_a_change_dated_before_the_cursor(setup):
    """Planfix's clock 100 s behind ours: a change made after our poll is dated before its cursor."""
    world, clock = setup.world, setup.clock
    clock.now = T0 + 2 * 3600
    setup.poll()
    cursor = clock.now
    clock.now = cursor - 100          # Planfix dates the change by its own (late) clock
    edit(world, 1, "late clock")
    clock.now = cursor - 400          # a change dated before the whole window
    edit(world, 2, "much older")
    clock.now = cursor + 60
    report = setup.poll()
    assert report.tasks == [1]
    assert rc.window_start(cursor, clock.now) <= cursor - 100


def test_a_stamp_no_run_records_is_queued_twice_then_left(setup):
    """A run that found the task out of scope or gone records nothing: two looks, then no more."""
    world, clock = setup.world, setup.clock
    clock.now = T0 + 2 * 3600
    edit(world, 1, "once")
    clock.now += 10
    assert setup.poll().runs[0][3] == (FULL_HINT,)     # nothing known yet
    clock.now += 60
    assert setup.poll().runs[0][3] == rc.POLL_TASK_HINTS  # the same stamp, a second look
    clock.now += 60
    report = setup.poll()
    assert report.runs == [] and report.found == 1 and report.skipped == 1
    edit(world, 1, "twice")
    clock.now += 5
    assert setup.poll().runs[0][3] == rc.POLL_TASK_HINTS  # a new stamp is always queued


def test_the_cursor_stays_when_a_later_request_of_the_poll_fails(setup):
    world, clock, store, client = setup.world, setup.clock, setup.store, setup.client
    clock.now = T0 + 2 * 3600
    setup.record(1)
    setup.poll()
    cursor = rc.read_cursor(store, setup.group.key)
    world.add_comment("partner", 1, {"description": "lost webhook"}, author=PAVEL)
    clock.now += 60
    world.set_limits("partner", daily_quota=setup.used() + 1)  # the task page passes, the comment feed fails
    with pytest.raises(RateLimited):
        setup.poll()
    assert rc.read_cursor(store, setup.group.key) == cursor
    assert not store.exists(pending_key("demo", "partner", 1))
    world.set_limits("partner", daily_quota=None)
    client.limiter.reset("partner")     # Planfix's code 22 paused the whole account: lift it
    clock.now += 60
    assert setup.poll().tasks == [1]    # the next poll reads the same window again
    assert rc.read_cursor(store, setup.group.key) == clock.now


def test_the_poll_asks_the_account_limiter_first(setup):
    setup.client.limiter.block_until("partner", 30.0, reason="daily_quota")
    served = setup.used()
    with pytest.raises(RateLimited):
        setup.poll()
    assert setup.used() == served
    assert rc.read_cursor(setup.store, setup.group.key) is None


def test_a_quiet_poll_costs_one_request_and_the_time_zone_is_cached(setup):
    setup.clock.now = T0 + 2 * 3600
    assert setup.poll().requests == 2     # the time zone, then the task feed
    used = setup.used()
    setup.clock.now += 60
    report = setup.poll()
    assert setup.used() - used == 1 == report.requests
    assert setup.store.get(rc.key(rc.TIMEZONE_KEY, setup.group.key)) == b"UTC"
    assert rc.read_last_poll(setup.store, setup.group.key) == rc.LastPoll(setup.clock.now, 1, None)


@pytest.mark.parametrize("links", [1, 12])
def test_one_poll_covers_every_link_of_the_account_for_one_request(tmp_path, redis_url, links):
    """LINKS links share the partner account: a quiet poll is one request, and a change in each
    link's project is queued to that link's side alone."""
    world, clock, store, enqueuer, group = make_setup(tmp_path, redis_url, links)
    assert len(group.members) == links
    try:
        with TestClient(create_app(world)) as http:
            client = PlanfixClient(group.first.conf.base_url, "demo-partner-sync", account="partner", http=http,
                                   limiter=AccountLimiter(store, rate_per_s=0), read_retries=0)
            clock.now = T0 + 2 * 3600
            rc.poll_account(group, client, enqueuer, store, clock=clock)
            used = world.account("partner").quota_used
            clock.now += 90
            rc.poll_account(group, client, enqueuer, store, clock=clock)
            assert world.account("partner").quota_used - used == 1
            made = {}
            for index, member in enumerate(group.members):
                project = 10 if index == 0 else 100 + index
                made[member.link] = world.create_task("partner", {"name": f"for {member.link}", "processId": 1,
                                                                  "project": {"id": project}}, author=PAVEL)
            clock.now += 90
            report = rc.poll_account(group, client, enqueuer, store, clock=clock)
            assert sorted((link, number) for link, _, number, _ in report.runs) == sorted(made.items())
    finally:
        enqueuer.close()
        store.close()
        world.close()


def mirrored(setup, number, comment, link="demo"):
    """What a run leaves once it mirrored COMMENT of task NUMBER: its fingerprint."""
    listed = setup.world.get_comment("partner", comment, "id,description,isDeleted")
    setup.store.hset(comment_prints_key(link, "partner", number), str(comment),
                     comment_fingerprint(listed["description"], bool(listed["isDeleted"])))


def test_the_comment_audit_queues_a_run_naming_each_comment_edited_or_deleted_with_no_event(setup):
    world = setup.world
    kept = world.add_comment("partner", 1, {"description": "stays as mirrored"}, author=PAVEL)
    edited = world.add_comment("partner", 1, {"description": "as mirrored"}, author=PAVEL)
    deleted = world.add_comment("partner", 2, {"description": "to be withdrawn"}, author=PAVEL)
    for number, comment in ((1, kept), (1, edited), (2, deleted)):
        mirrored(setup, number, comment)
    world.update_comment("partner", edited, {"description": "edited, its webhook lost"}, author=PAVEL)
    world.delete_comment("partner", deleted, author=PAVEL)
    since = len(world.requests("partner"))
    report = rc.audit_comments(setup.group, setup.client, setup.enqueuer, setup.store, count=5)
    assert report.tasks == 2 and report.requests == 2
    assert report.runs == [("demo", "partner", 1, (edited,)), ("demo", "partner", 2, (deleted,))]
    assert setup.hints(1) == [f"comment_added:{edited}"] and setup.hints(2) == [f"comment_added:{deleted}"]
    assert setup.paths(since) == ["/task/1/comments/list", "/task/2/comments/list"]


def test_the_comment_audit_takes_its_count_of_tasks_in_turn_and_passes_over_a_task_gone(setup):
    world = setup.world
    for number in (1, 2):
        comment = world.add_comment("partner", number, {"description": f"on {number}"}, author=PAVEL)
        mirrored(setup, number, comment)
    setup.store.hset(comment_prints_key("demo", "partner", 999), "1", "gone")   # a task since deleted
    setup.store.hset(comment_prints_key("other-link", "partner", 4), "1", "x")  # not this account's
    looked = []
    for _ in range(3):
        since = len(world.requests("partner"))
        report = rc.audit_comments(setup.group, setup.client, setup.enqueuer, setup.store, count=2)
        assert report.tasks == 2 and report.runs == []
        looked += [path.split("/")[2] for path in setup.paths(since)]
    assert looked == ["1", "2", "999", "1", "2", "999"]


# --- one poll per period, however many beats tick ------------------------------------------------

def test_exactly_one_of_many_simultaneous_ticks_takes_the_turn(redis_client):
    barrier = threading.Barrier(8)
    won = []

    def tick(index):
        barrier.wait()
        won.append(rc.take_turn(redis_client, "partner/user:1", 87.0, f"beat-{index}"))

    threads = [threading.Thread(target=tick, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]
    ttl = redis_client.pttl(rc.key(rc.TURN_KEY, "partner/user:1"))
    assert 86_000 < ttl <= 87_000
    assert rc.take_turn(redis_client, "client/user:1", 87.0, "beat-0")  # each account has its own turn


def test_the_turn_comes_back_after_the_period(redis_client):
    assert rc.take_turn(redis_client, "partner/user:1", 0.2, "a")
    assert not rc.take_turn(redis_client, "partner/user:1", 0.2, "b")
    time.sleep(0.25)
    assert rc.take_turn(redis_client, "partner/user:1", 0.2, "b")


@pytest.fixture
def poller(monkeypatch, tmp_path, redis_url, emulator_server):
    """producers.tasks' per-process poller on the loopback emulator, as a worker builds it."""
    from crosslink.base.settings import get_settings
    from producers import tasks

    links = copy.deepcopy(example("links.yaml"))
    links["links"][0]["sides"]["partner"]["base_url"] = emulator_server.base_url("partner")
    links["links"][0]["sides"]["client"]["base_url"] = emulator_server.base_url("client")
    path = tmp_path / "links.yaml"
    path.write_text(yaml.safe_dump(links), encoding="utf-8")
    for name, value in {"REDIS_URL": redis_url, "CROSSLINK_LINKS": str(path), "CROSSLINK_RATE_PER_S": "0",
                        "CROSSLINK_DEMO_PARTNER_TOKEN": "tok-partner-sync",
                        "CROSSLINK_DEMO_CLIENT_TOKEN": "tok-client-sync"}.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    tasks._pollers.clear()
    try:
        yield tasks, tasks.poller(), emulator_server.world
    finally:
        get_settings.cache_clear()
        tasks._pollers.clear()


def test_a_tick_polls_an_account_once_per_its_budget_period(poller):
    tasks, state, world = poller
    group = rc.find_poll_account(state.config, f"{state.config.links[0].sides['partner'].account}/user:1")
    world.update_task("partner", 1, {"name": "changed"}, author=2)
    period = tasks.poll_due(state, group, floor_s=FLOOR_S, tick_s=TICK_S)
    assert period == pytest.approx(86400 / 749, abs=1e-3)   # 20,000 a day, 5 % less the audit's 1.25 %
    assert tasks.poll_due(state, group, floor_s=FLOOR_S, tick_s=TICK_S) is None  # a second tick, or beat
    assert 0 < state.redis.pttl(rc.key(rc.TURN_KEY, group.key)) <= period * 1000
    assert tasks.reconcile_poll(group.key).startswith("queued 1 ")
    assert state.redis.exists(pending_key("demo", "partner", 1))
    assert tasks.reconcile_poll("demo", "partner", 60.0) == "unknown-account"  # an older beat's message


def test_a_tick_leaves_a_busy_account_to_its_live_runs_for_at_most_a_period(poller):
    tasks, state, world = poller
    group = rc.find_poll_account(state.config, f"{state.config.links[0].sides['partner'].account}/user:1")
    state.limiter.set_account_limits(group.account, rate_per_s=1000, burst=1000)
    for _ in range(700):                # live runs: 700 requests in the second since the last poll
        assert state.limiter.acquire(group.account, "demo").go
    now = time.time()
    last = rc.key(rc.LAST_POLL_KEY, group.key)
    state.redis.hset(last, mapping={"at": repr(now - 1.0), "requests": 1, "used_after": 0})
    assert tasks.poll_due(state, group, floor_s=FLOOR_S, tick_s=TICK_S) is None
    assert not state.redis.exists(rc.key(rc.TURN_KEY, group.key))
    period = rc.poll_period_s(1, 20_000, SHARE, FLOOR_S)
    state.redis.hset(last, mapping={"at": repr(now - 2 * period - 1), "used_after": 0})
    assert tasks.poll_due(state, group, floor_s=FLOOR_S, tick_s=TICK_S) is not None  # overdue: polls


def test_synced_stamp_keys_expire(redis_client):
    record_synced_stamp(redis_client, "demo", "partner", 5, {"dateOfLastUpdate": tp(T0)})
    assert redis_client.get(synced_stamp_key("demo", "partner", 5)) == f"{tp(T0)['dateTimeUtcSeconds']}|"
    assert 0 < redis_client.ttl(synced_stamp_key("demo", "partner", 5)) <= 7 * 86400


def test_crosslink_status_shows_each_sides_poll_and_repair_bound(tmp_path, redis_url):
    from crosslink.base.settings import Settings
    from crosslink.operations.status import link_status

    path = tmp_path / "links.yaml"
    path.write_text(yaml.safe_dump(links_doc(3)), encoding="utf-8")
    settings = Settings.from_env({"REDIS_URL": redis_url})
    rows = {row["link"]: row for row in link_status(str(path), redis_url, settings=settings)}
    partner = rows["client-2"]["reconcile"]["partner"]
    assert partner["poll"] == "partner/user:1" == rows["demo"]["reconcile"]["partner"]["poll"]
    # The polls' part of the reconciliation's 5 % (the comment audit has 1.25 %): 750 a day.
    assert partner["period_s"] == pytest.approx(86400 / 749, abs=1e-3) and partner["budget_per_day"] == pytest.approx(750)
    assert partner["repair_bound_s"] == pytest.approx(247) and partner["last_poll_s_ago"] is None
    assert rows["client-2"]["reconcile"]["client"]["poll"] == "client-2/user:1"


# --- a comment stamp polled again before it settles ---------------------------------------------

@pytest.fixture
def synced_setup(tmp_path, redis_url):
    """The poll's setup plus the sync run itself (workers.sync.TaskSync) on both accounts of the
    in-process emulator: what a poll queues is run as a worker would, with the hints it left."""
    from workers.idempotency import WriteOnce
    from workers.state import LinkState
    from workers.sync import TaskSync

    world, clock, store, enqueuer, group = make_setup(tmp_path, redis_url)
    link = load(tmp_path, links_doc(1)).links[0]
    # The deployment began serving the link at the emulator's time, not ours (workers.plan.older_than_link).
    LinkState(store, link.name).begin(link.sides, clock())
    with TestClient(create_app(world)) as http:
        clients = {side: PlanfixClient(conf.base_url, f"demo-{conf.account}-sync", account=conf.account, http=http,
                                       limiter=AccountLimiter(store, rate_per_s=0), read_retries=0)
                   for side, conf in link.sides.items()}
        made = Setup(world, clock, store, clients["partner"], group, enqueuer)

        def run(number, hints=None):
            parsed = Hints.parse(hints if hints is not None else made.hints(number))
            return TaskSync(link, "partner", number, clients, LinkState(store, link.name), WriteOnce(store),
                            parsed).run()

        def run_queued(number):
            """What a worker does with what the polls queued for task NUMBER (nothing: no run)."""
            return run(number) if made.hints(number) else None

        made.run, made.run_queued = run, run_queued
        yield made
    enqueuer.close()
    store.close()
    world.close()


def comment_reads(world):
    """The partner's GET /comment/N, in order."""
    return [r["path"] for r in world.requests("partner") if r["method"] == "GET" and r["path"].startswith("/comment/")]


def test_two_polls_of_one_unsettled_comment_stamp_read_the_comment_once(synced_setup):
    """The comment-only run records no stamp, so the poll 20 s later finds the same unsettled
    stamp: it must not queue the comment a second time (each time is a GET /comment/N)."""
    setup = synced_setup
    clock, world = setup.clock, setup.world
    clock.now = T0 + 2 * 3600
    assert setup.run(1, [FULL_HINT]).counterpart         # mirrored, its stamp recorded
    clock.now += 30
    person = world.add_comment("partner", 1, {"description": "a person's"}, author=PAVEL)
    clock.now += 5
    first = setup.poll()
    assert first.runs == [("demo", "partner", 1, (f"comment_added:{person}",))]
    assert setup.run_queued(1).comments_created == 1
    clock.now += 20                                       # 25 s after the comment: not settled
    second = setup.poll()
    setup.run_queued(1)
    assert comment_reads(world) == [f"/comment/{person}"]
    assert second.runs == [] and second.comment_feed and second.skipped == 1
    clock.now += rc.STAMP_SETTLE_S
    assert setup.poll().runs == []                        # this poll comes after the stamp settled,
    clock.now += 20
    assert not setup.poll().comment_feed                  # so the next skips it without the feed
    setup.run_queued(1)
    assert comment_reads(world) == [f"/comment/{person}"]
    later = world.add_comment("partner", 1, {"description": "a later one"}, author=PAVEL)
    clock.now += 5
    # A new stamp starts afresh, but the comment a run mirrored is not named again.
    assert setup.poll().runs == [("demo", "partner", 1, (f"comment_added:{later}",))]


def test_a_comment_its_webhooks_run_mirrored_is_not_read_again_by_the_poll(synced_setup):
    """A comment-only run reads no task, so it records no stamp, and the poll finds the comment
    date moved; the comment's fingerprint says a run mirrored it: no run, no GET /comment/N."""
    setup = synced_setup
    clock, world = setup.clock, setup.world
    clock.now = T0 + 2 * 3600
    assert setup.run(1, [FULL_HINT]).counterpart
    clock.now += 30
    person = world.add_comment("partner", 1, {"description": "a person's"}, author=PAVEL)
    assert setup.run(1, [f"comment_added:{person}"]).comments_created == 1   # the webhook's run
    clock.now += 5
    poll = setup.poll()
    assert poll.comment_feed and poll.runs == [] and poll.skipped == 1
    assert comment_reads(world) == [f"/comment/{person}"]
