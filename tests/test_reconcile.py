"""The reconciliation poller: its window and cursor, the seen record, and the one-poll-per-period
turn, against a real Redis and the emulator in-process (Starlette's TestClient) with a clock the
test moves."""

from __future__ import annotations

import copy
import threading
from datetime import datetime, timezone
from zoneinfo import ZoneInfo

import pytest
import redis
import yaml
from hypothesis import given, settings, strategies as st
from starlette.testclient import TestClient

from crosslink.demo import example
from planfix.client import PlanfixClient
from planfix.emulator.app import create_app
from planfix.emulator.world import World
from planfix.errors import RateLimited
from planfix.limiter import AccountLimiter
from producers import reconcile as rc
from producers.enqueue import Enqueuer
from schemas.links import CreateSettings, Scope, Side, find_link, load_links
from workers.names import SYNC_QUEUE, pending_key

T0 = datetime(2026, 3, 2, 9, 0, 0, tzinfo=timezone.utc).timestamp()
PAVEL, IRINA_C = 2, 5
ZONES = ["UTC", "Europe/Moscow", "Asia/Kolkata", "America/St_Johns", "Pacific/Kiritimati", "Etc/GMT+12"]


# --- pure decisions ------------------------------------------------------------------------------

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
    assert exact.epoch == T0 + 5
    assert rc.task_stamp({"dateOfLastUpdate": tp(T0)}).epoch == T0
    minute_only = {"date": "02-03-2026", "time": "09:00"}
    assert rc.task_stamp({"dateOfLastUpdate": minute_only}).epoch is None
    assert rc.task_stamp({"dateOfLastUpdate": tp(T0), "dateOfLastComment": minute_only}).epoch is None
    assert rc.task_stamp({"dateOfLastUpdate": tp(T0)}) != rc.task_stamp({"dateOfLastUpdate": tp(T0 + 1)})


stamps = st.builds(lambda text, epoch: rc.Stamp(text, epoch), st.sampled_from(["a", "b"]),
                   st.one_of(st.none(), st.floats(T0 - 300, T0)))


@given(found=st.dictionaries(st.integers(1, 6), st.one_of(st.none(), stamps)),
       seen=st.dictionaries(st.integers(1, 9), st.builds(rc.Seen, st.sampled_from(["a", "b"]),
                                                         st.floats(T0 - 300, T0 + 300))))
def test_select_skips_only_an_unchanged_settled_stamp(found, seen):
    queue, keep = rc.select(found, seen, T0 + 400)
    for number, stamp in found.items():
        settled = (stamp is not None and stamp.epoch is not None and number in seen
                   and seen[number].stamp == stamp.text and seen[number].polled_at >= stamp.epoch + rc.STAMP_SETTLE_S)
        assert (number not in queue) == settled
        if settled:
            assert keep[number] == seen[number]
        elif stamp is not None:
            assert keep[number] == rc.Seen(stamp.text, T0 + 400)
    assert set(keep) <= set(found) and queue == sorted(queue)


def side(kind="project", value=10, create=None):
    return Side("partner", "http://x/rest", "partner", "T", "S", "header", "user:1",
                Scope(kind, value), create or CreateSettings())


def test_filter_sets_cover_the_scope_and_the_mirrors_outside_it():
    assert rc.poll_filter_sets(side(create=CreateSettings(project=10))) == [
        [{"type": 5, "operator": "equal", "value": 10}]]
    assert rc.poll_filter_sets(side(create=CreateSettings(project=12))) == [
        [{"type": 5, "operator": "equal", "value": 10}], [{"type": 5, "operator": "equal", "value": 12}]]
    assert rc.poll_filter_sets(side("template", 50, CreateSettings(template=50))) == [
        [{"type": 51, "operator": "equal", "value": 50}]]
    assert rc.poll_filter_sets(side("participant", "user:3")) == [[]]


def test_comment_feed_keeps_only_the_scope_project_when_there_is_one():
    partner = side(create=CreateSettings(project=12))
    assert rc.comment_task_wanted(partner, {"task": {"id": 1}, "project": {"id": 10}})
    assert rc.comment_task_wanted(partner, {"task": {"id": 1}, "project": {"id": 12}})
    assert not rc.comment_task_wanted(partner, {"task": {"id": 1}, "project": {"id": 11}})
    assert rc.comment_task_wanted(partner, {"task": {"id": 1}})  # no project: the worker decides
    assert rc.comment_task_wanted(side("participant", "user:3"), {"task": {"id": 1}, "project": {"id": 11}})


# --- the poll against the emulator and Redis -----------------------------------------------------

class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


@pytest.fixture
def setup(tmp_path, redis_url):
    clock = Clock(T0)
    seed = copy.deepcopy(example("emulator.yaml"))
    for account in seed["accounts"].values():
        account["limits"] = {"rate_per_s": None, "daily_quota": None}
        account["scenarios"] = []
    seed["accounts"]["partner"]["projects"].append({"id": 11, "name": "Internal"})
    world = World.from_config(seed, clock=clock)
    links = copy.deepcopy(example("links.yaml"))
    for conf in links["links"][0]["sides"].values():
        conf["base_url"] = f"http://testserver/{conf['account']}/rest"
    path = tmp_path / "links.yaml"
    path.write_text(yaml.safe_dump(links), encoding="utf-8")
    link = find_link(load_links(path), "demo")
    store = redis.Redis.from_url(redis_url)
    enqueuer = Enqueuer(redis_url)
    with TestClient(create_app(world)) as http:
        client = PlanfixClient(link.sides["partner"].base_url, "demo-partner-sync", account="partner", http=http,
                               limiter=AccountLimiter(store, rate_per_s=0), read_retries=0)

        def poll(comments=True):
            for key in store.scan_iter("crosslink:pending:*"):
                store.delete(key)  # each poll's jobs seen on their own: the flags would coalesce them
            return rc.poll_side(link, "partner", client, enqueuer, store, clock=clock, comments=comments)

        yield world, clock, poll, store, client
    enqueuer.close()
    store.close()
    world.close()


def edit(world, number, name):
    world.update_task("partner", number, {"name": name}, author=PAVEL)


def test_first_poll_looks_back_an_hour_and_queues_what_changed(setup):
    world, clock, poll, store, _ = setup
    clock.now = T0 + 2 * 3600
    edit(world, 2, "changed lately")
    clock.now += 30
    report = poll()
    assert report.tasks == [2] and report.queued == 1
    assert store.exists(pending_key("demo", "partner", 2)) and store.llen(SYNC_QUEUE) == 1
    assert rc.read_cursor(store, "demo", "partner") == clock.now


def test_the_overlap_catches_a_change_dated_before_the_cursor(setup):
    """Planfix's clock 100 s behind ours: a change made after our poll is dated before its cursor."""
    world, clock, poll, store, _ = setup
    clock.now = T0 + 2 * 3600
    poll()
    cursor = clock.now
    clock.now = cursor - 100          # Planfix dates the change by its own (late) clock
    edit(world, 1, "late clock")
    clock.now = cursor - 400          # a change dated before the whole window
    edit(world, 2, "much older")
    clock.now = cursor + 60
    report = poll()
    assert report.tasks == [1]
    assert rc.window_start(cursor, clock.now) <= cursor - 100


def test_a_task_is_not_queued_again_once_a_poll_saw_its_settled_stamp(setup):
    world, clock, poll, store, _ = setup
    clock.now = T0 + 2 * 3600
    edit(world, 1, "once")
    clock.now += 10
    assert poll().tasks == [1]           # seen 10 s after the change: not yet final
    clock.now += 60
    assert poll().tasks == [1]           # seen again, now 70 s after: final from here on
    clock.now += 60
    report = poll()
    assert report.tasks == [] and report.found == 1 and report.skipped == 1
    edit(world, 1, "twice")
    clock.now += 5
    assert poll().tasks == [1]           # a new stamp is always queued


def test_comments_are_polled_and_other_projects_are_ignored(setup):
    world, clock, poll, store, _ = setup
    world.update_task("partner", 2, {"project": {"id": 11}}, author=PAVEL)
    clock.now = T0 + 2 * 3600
    world.add_comment("partner", 1, {"description": "in scope"}, author=PAVEL)
    world.add_comment("partner", 2, {"description": "another project"}, author=PAVEL)
    clock.now += 5
    assert poll().tasks == [1]


def test_the_cursor_stays_when_a_later_request_of_the_poll_fails(setup):
    world, clock, poll, store, client = setup
    clock.now = T0 + 2 * 3600
    poll()
    cursor = rc.read_cursor(store, "demo", "partner")
    edit(world, 1, "lost webhook")
    clock.now += 60
    used = world.account("partner").quota_used
    world.set_limits("partner", daily_quota=used + 1)  # the task page passes, the comment feed fails
    with pytest.raises(RateLimited):
        poll()
    assert rc.read_cursor(store, "demo", "partner") == cursor
    assert not store.exists(pending_key("demo", "partner", 1))
    world.set_limits("partner", daily_quota=None)
    client.limiter.reset("partner")     # Planfix's code 22 paused the whole account: lift it
    clock.now += 60
    assert poll().tasks == [1]          # the next poll reads the same window again
    assert rc.read_cursor(store, "demo", "partner") == clock.now


def test_the_poll_asks_the_account_limiter_first(setup):
    world, clock, poll, store, client = setup
    client.limiter.block_until("partner", 30.0, reason="daily_quota")
    served = world.account("partner").quota_used
    with pytest.raises(RateLimited):
        poll()
    assert world.account("partner").quota_used == served
    assert rc.read_cursor(store, "demo", "partner") is None


def test_a_quiet_poll_costs_two_requests_and_the_time_zone_is_cached(setup):
    world, clock, poll, store, _ = setup
    clock.now = T0 + 2 * 3600
    poll()
    used = world.account("partner").quota_used
    clock.now += 60
    poll()
    assert world.account("partner").quota_used - used == 2
    assert store.get(rc.key(rc.TIMEZONE_KEY, "demo", "partner")) == b"UTC"


# --- one poll per period, however many beats tick ----------------------------------------------

def test_exactly_one_of_many_simultaneous_ticks_takes_the_turn(redis_client):
    barrier = threading.Barrier(8)
    won = []

    def tick(index):
        barrier.wait()
        won.append(rc.take_turn(redis_client, "demo", "partner", 60.0, f"beat-{index}"))

    threads = [threading.Thread(target=tick, args=(index,)) for index in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(won) == [False] * 7 + [True]
    ttl = redis_client.pttl(rc.key(rc.TURN_KEY, "demo", "partner"))
    assert 0.8 * 60_000 < ttl <= rc.TURN_SHARE * 60_000
    assert rc.take_turn(redis_client, "demo", "client", 60.0, "beat-0")  # each side has its own turn


def test_the_turn_comes_back_within_one_period(redis_client):
    import time

    assert rc.take_turn(redis_client, "demo", "partner", 0.2, "a")
    assert not rc.take_turn(redis_client, "demo", "partner", 0.2, "b")
    time.sleep(0.2)
    assert rc.take_turn(redis_client, "demo", "partner", 0.2, "b")


def test_the_poll_task_runs_once_per_period(monkeypatch, tmp_path, redis_url, emulator_server):
    """Two ticks in one period (two beats): the Celery task function polls once, skips once."""
    from crosslink.settings import get_settings
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
        emulator_server.world.update_task("partner", 1, {"name": "changed"}, author=2)
        assert tasks.reconcile_poll("demo", "partner", 60.0).startswith("queued 1 ")
        assert tasks.reconcile_poll("demo", "partner", 60.0) == "not-my-turn"
        store = redis.Redis.from_url(redis_url)
        assert store.exists(pending_key("demo", "partner", 1))
        store.close()
    finally:
        get_settings.cache_clear()
        tasks._pollers.clear()
