"""Backfill: the name matching (hypothesis), the snapshot seeding that lets the owner rules decide
a hand-made pair, and whole runs against a real Redis and the emulator in-process (Starlette's
TestClient): resume after an interruption, and a dry run that writes nothing."""

from __future__ import annotations

import copy

import pytest
import redis
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

from crosslink.lab.demo import example
from crosslink.operations import backfill as bf
from crosslink.queue.enqueue import Enqueuer
from crosslink.queue.names import SYNC_QUEUE, lock_key
from planfix.client import PlanfixClient
from planfix.emulator.app import create_app
from planfix.emulator.world import World
from planfix.errors import PlanfixError
from planfix.limiter import AccountLimiter
from schemas.links import find_link, load_links
from workers.canonical import canonical_task
from workers.idempotency import TaskLock
from workers.plan import plan_task_sync
from workers.state import LinkState, mirror_marker, parse_marker

PAVEL, IRINA_C = 2, 5


@pytest.fixture
def link(tmp_path):
    links = copy.deepcopy(example("links.yaml"))
    for conf in links["links"][0]["sides"].values():
        conf["base_url"] = f"http://testserver/{conf['account']}/rest"
    path = tmp_path / "links.yaml"
    path.write_text(yaml.safe_dump(links), encoding="utf-8")
    return find_link(load_links(path), "demo")


# --- matching -----------------------------------------------------------------------------------

def test_names_match_regardless_of_case_and_spacing():
    assert bf.normalise_name("  Kick-off\tMEETING ") == bf.normalise_name("kick-off meeting")
    assert bf.normalise_name("Ｋｉｃｋ") == "kick"  # full-width letters (NFKC)
    assert bf.normalise_name("Kick-off") != bf.normalise_name("Kickoff")
    assert bf.normalise_name(None) == ""


def test_one_candidate_each_pairs_and_several_are_ambiguous():
    left = [bf.Candidate(1, "Plan"), bf.Candidate(2, "Report"), bf.Candidate(3, "report "),
            bf.Candidate(4, "Only here"), bf.Candidate(5, "plan", in_scope=False), bf.Candidate(6, "")]
    right = [bf.Candidate(10, "PLAN"), bf.Candidate(11, "Report"), bf.Candidate(12, "Plan", linked=True),
             bf.Candidate(13, "Other")]
    result = bf.match_tasks(left, right)
    assert result.pairs == ((1, 10),)
    assert result.ambiguous == (bf.Ambiguous("report", (2, 3), (11,)),)
    assert result.unmatched_left == (4, 6)
    assert result.unmatched_right == (13,)


names = st.sampled_from(["a", "A ", "b", "c", "  c", "d", ""])
candidates = st.lists(st.builds(bf.Candidate, number=st.integers(1, 40), name=names,
                                in_scope=st.booleans(), linked=st.booleans()),
                      max_size=25, unique_by=lambda c: c.number)


@settings(max_examples=300)
@given(left=candidates, right=candidates)
def test_matching_never_pairs_twice_across_scopes_or_ambiguously(left, right):
    result = bf.match_tasks(left, right)
    lefts = {c.number: c for c in left}
    rights = {c.number: c for c in right}
    paired_left = [a for a, _ in result.pairs]
    paired_right = [b for _, b in result.pairs]
    assert len(paired_left) == len(set(paired_left)) and len(paired_right) == len(set(paired_right))
    ambiguous_keys = {a.name for a in result.ambiguous}
    for a, b in result.pairs:
        assert lefts[a].in_scope and rights[b].in_scope
        assert not lefts[a].linked and not rights[b].linked
        key = bf.normalise_name(lefts[a].name)
        assert key and key == bf.normalise_name(rights[b].name) and key not in ambiguous_keys
        assert sum(bf.normalise_name(c.name) == key for c in left if c.in_scope and not c.linked) == 1
        assert sum(bf.normalise_name(c.name) == key for c in right if c.in_scope and not c.linked) == 1
    # Every eligible task lands in exactly one outcome; nothing else appears anywhere.
    for side, items, unmatched, paired, index in ((left, lefts, result.unmatched_left, paired_left, 1),
                                                  (right, rights, result.unmatched_right, paired_right, 2)):
        in_ambiguous = [n for a in result.ambiguous for n in (a.left if index == 1 else a.right)]
        outcomes = list(unmatched) + paired + in_ambiguous
        assert sorted(outcomes) == sorted(c.number for c in side if c.in_scope and not c.linked)
        for number in in_ambiguous:
            assert bf.normalise_name(items[number].name) in ambiguous_keys


# --- seeding --------------------------------------------------------------------------------------

def _views(link, partner_raw, client_raw):
    return {"partner": canonical_task(partner_raw, link, "partner"),
            "client": canonical_task(client_raw, link, "client")}


PARTNER_RAW = {"id": 7, "name": "Kick-off", "description": "partner text", "priority": "Urgent",
               "status": {"id": 2}, "project": {"id": 10}, "assignees": {"users": [{"id": "user:4"}]},
               "customFieldData": [{"field": {"id": 100}, "value": 5}, {"field": {"id": 101}, "value": "mail"}]}
CLIENT_RAW = {"id": 30, "name": "kick-off", "description": "client text", "priority": "NotUrgent",
              "status": {"id": 12}, "project": {"id": 20}, "assignees": {"users": [{"id": "user:5"}]},
              "customFieldData": [{"field": {"id": 200}, "value": 9}, {"field": {"id": 201}, "value": "phone"}]}


def test_seeded_snapshots_let_the_owner_rules_decide(link):
    seeds = bf.seed_snapshots(link, "partner", _views(link, PARTNER_RAW, CLIENT_RAW))
    # name and cf 100/200 are owned by the partner, description by the client; priority has no
    # owner (the prevailing first side wins); cf 101 flows partner -> client only.
    assert seeds["partner"]["name"] == bf.UNAGREED and seeds["client"]["name"] == "kick-off"
    assert seeds["client"]["description"] == bf.UNAGREED and seeds["partner"]["description"] == "partner text"
    assert seeds["partner"]["priority"] == bf.UNAGREED and seeds["client"]["priority"] == "NotUrgent"
    assert seeds["partner"]["cf:100"] == bf.UNAGREED and seeds["client"]["cf:200"] == 9
    assert seeds["partner"]["cf:101"] == bf.UNAGREED and seeds["client"]["cf:201"] == "phone"
    assert seeds["client"]["cf:202"] is None  # the note field is written, never carried


@pytest.mark.parametrize("first", ["partner", "client"])
def test_whichever_side_syncs_first_each_carries_only_what_it_wins(link, first):
    views = _views(link, PARTNER_RAW, CLIENT_RAW)
    seeds = bf.seed_snapshots(link, "partner", views)
    other = link.other(first)
    plan = plan_task_sync(link, first, views[first], seeds[first], views[other], seeds[other],
                          lambda side, n: None, {})
    carried = set(plan.update_body)
    if first == "partner":
        assert {"name", "priority"} <= carried and "description" not in carried
        assert {entry["field"]["id"] for entry in plan.update_body["customFieldData"]} >= {200, 201}
    else:
        assert carried == {"description"}


def test_the_dry_run_says_what_pairing_overwrites_field_by_field_and_by_which_rule(link):
    views = _views(link, PARTNER_RAW, CLIENT_RAW)
    seeds = bf.seed_snapshots(link, "partner", views)
    found = {(item["on"], item["field"]): item
             for item in bf.pairing_overwrites(link, seeds, views, {"partner": PARTNER_RAW, "client": CLIENT_RAW},
                                               lambda side, n: None)}
    # The client owns descriptions: the partner's own text is what pairing loses.
    assert found[("partner", "description")] == {"on": "partner", "field": "description", "from": "partner text",
                                                 "to": "client text", "by": "owner: client"}
    assert found[("client", "name")]["to"] == "Kick-off" and found[("client", "name")]["by"] == "owner: partner"
    assert found[("client", "priority")]["by"] == "partner is the original"
    assert found[("client", "cf:200")] == {"on": "client", "field": "cf:200", "from": 9, "to": 5, "by": "owner: partner"}
    assert ("partner", "name") not in found and ("client", "description") not in found
    # Each is what the pair's syncs then write: applied, nothing is left to overwrite.
    after = {side: {**views[side], **{item["field"]: item["to"] for item in found.values() if item["on"] == side}}
             for side in views}
    assert bf.pairing_overwrites(link, {side: after[side] for side in after}, after,
                                 {"partner": PARTNER_RAW, "client": CLIENT_RAW}, lambda side, n: None) == ()


def test_the_marker_goes_on_a_task_free_of_integration_data(link):
    free, taken = {"id": 1}, {"id": 2, "sourceObjectId": "0f1e", "sourceDataVersion": "v3"}
    assert bf.marker_side(link, {"partner": free, "client": free}) == "client"
    assert bf.marker_side(link, {"partner": free, "client": taken}) == "partner"
    assert bf.marker_side(link, {"partner": taken, "client": taken}) is None


def test_plan_skips_what_is_linked_or_out_of_scope(link):
    listings = {
        "partner": [{"id": 1, "name": "A", "project": {"id": 10}},
                    {"id": 2, "name": "B", "project": {"id": 10}},
                    {"id": 3, "name": "C", "project": {"id": 10}},
                    {"id": 4, "name": "D", "project": {"id": 11}},
                    {"id": 5, "name": "E", "project": {"id": 10}}],
        "client": [{"id": 21, "name": "a", "project": {"id": 20}},
                   {"id": 22, "name": "B", "project": {"id": 20}},
                   {"id": 23, "name": "C copy", "project": {"id": 20},
                    "sourceDataVersion": mirror_marker("demo", "partner", 3)},
                   {"id": 24, "name": "D", "project": {"id": 20}}],
    }
    plan = bf.plan_backfill(link, listings, {"partner:2": 40, "client:40": 2})
    assert [(p.numbers, p.marker_on) for p in plan.pairs] == [((1, 21), "client")]
    assert plan.create == (("partner", 5), ("client", 22), ("client", 24))
    assert plan.already_linked == {"partner": 2, "client": 1}
    assert plan.out_of_scope == {"partner": 1, "client": 0}


def test_estimate_counts_pages_markers_and_syncs_at_the_slower_account(link):
    plan = bf.BackfillPlan(pairs=(bf.PairPlan(("partner", "client"), (1, 2), "client", {}),),
                           create=(("partner", 3),), ambiguous=(), already_linked={}, out_of_scope={})
    est = bf.estimate(link, plan, {"partner": 2, "client": 1}, {"partner": 1.0, "client": 2.0})
    syncs_partner, syncs_client = 2, 1  # partner 1 and 3, client 2
    source, target = bf.SOURCE_CALLS_PER_SYNC, bf.TARGET_CALLS_PER_SYNC
    assert est.requests["partner"] == 2 + syncs_partner * source + syncs_client * target
    assert est.requests["client"] == 1 + 1 + syncs_client * source + syncs_partner * target
    assert est.seconds == pytest.approx(est.requests["partner"] / 1.0)


# --- whole runs against Redis and the emulator ---------------------------------------------------

@pytest.fixture
def setup(link, redis_url):
    seed = copy.deepcopy(example("emulator.yaml"))
    for account in seed["accounts"].values():
        account["limits"] = {"rate_per_s": None, "daily_quota": None}
        account["scenarios"] = []
    seed["accounts"]["partner"]["tasks"] += [
        {"id": 3, "name": "Report", "processId": 1, "status": 1, "project": 10},
        {"id": 4, "name": "report", "processId": 1, "status": 1, "project": 10},
        {"id": 5, "name": "Budget review", "processId": 1, "status": 1, "project": 10}]
    seed["accounts"]["client"]["tasks"] += [
        {"id": 2, "name": "kick-off meeting", "processId": 3, "status": 11, "project": 20},
        {"id": 3, "name": "Report", "processId": 3, "status": 11, "project": 20},
        {"id": 4, "name": "Budget Review", "processId": 3, "status": 11, "project": 20}]
    world = World.from_config(seed)
    store = redis.Redis.from_url(redis_url)
    enqueuer = Enqueuer(redis_url)
    with TestClient(create_app(world)) as http:
        clients = {side: PlanfixClient(conf.base_url, conf.token({conf.token_env: token}),
                                       account=conf.account, http=http, read_retries=0,
                                       limiter=AccountLimiter(store, rate_per_s=0))
                   for (side, conf), token in zip(link.sides.items(), ("demo-partner-sync", "demo-client-sync"))}

        def run(**kwargs):
            return bf.run_backfill(link, clients, store, None if kwargs.get("dry_run") else enqueuer, **kwargs)

        run.clients, run.enqueuer = clients, enqueuer  # for a person's decisions, beside the backfill
        yield world, store, run
    enqueuer.close()
    store.close()
    world.close()


def _jobs(store):
    """How many times a task was queued for a sync: each time leaves its hint, coalesced or not
    (lone tasks share their side's batch job, so the broker's queue does not tell)."""
    return sum(store.llen(key) for key in store.scan_iter("crosslink:hints:*"))


def _state(store):
    return {key: store.dump(key) for key in sorted(store.keys("*")) if not key.startswith(b"crosslink:limiter")}


def test_dry_run_writes_nothing_and_lists_the_plan(setup):
    world, store, run = setup
    before_redis, before = _state(store), (world.dump_tasks("partner"), world.dump_tasks("client"))
    report = run(dry_run=True)
    assert _state(store) == before_redis
    assert (world.dump_tasks("partner"), world.dump_tasks("client")) == before
    assert [(p["partner"], p["client"]) for p in report.pairs] == [(1, 2), (5, 4)]
    assert report.create == [("partner", 2), ("client", 1)]
    assert report.ambiguous == [{"name": "report", "partner": [3, 4], "client": [3]}]
    assert report.complete


def test_interrupted_run_resumes_without_pairing_or_queueing_twice(setup):
    world, store, run = setup
    first = run(max_items=1)
    assert not first.complete and first.handled == 1 and first.total == 4
    state = LinkState(store, "demo")
    assert state.counterpart("task", "partner", 1) == 2
    assert parse_marker(world.get_task("client", 2, "sourceDataVersion")["sourceDataVersion"]) == \
        ("demo", "partner", 1)
    assert state.snapshot("partner", 1)["name"] == bf.UNAGREED  # the partner owns names
    assert _jobs(store) == 2
    for key in store.scan_iter("crosslink:pending:*"):
        store.delete(key)  # the jobs started: coalescing no longer hides a second queueing
    second = run()
    assert second.complete and second.resumed and second.handled == 3
    assert _jobs(store) == 2 + 2 + 2  # pair 5/4 (both sides), then partner 2 and client 1
    assert store.exists(bf.PROGRESS_KEY.format(link="demo")) == 0
    assert state.counterpart("task", "partner", 5) == 4
    assert state.counterpart("task", "partner", 3) is None  # ambiguous: left to a person
    assert not state.is_mirror("task", "client", 2)  # both hand-made tasks are originals


def test_a_pair_made_before_a_failed_marker_write_is_finished_on_resume(setup):
    world, store, run = setup
    with pytest.raises(PlanfixError):  # writes to the client fail once both sides are listed
        run(on_plan=lambda report: world.set_faults("client", error_500=1.0))
    world.set_faults("client")
    assert bf.BackfillProgress(store, "demo").stages() == {"pair:partner:1:client:2": bf.PAIRED}
    assert world.get_task("client", 2, "sourceDataVersion").get("sourceDataVersion") is None
    report = run()
    assert report.complete and report.resumed
    assert parse_marker(world.get_task("client", 2, "sourceDataVersion")["sourceDataVersion"]) == \
        ("demo", "partner", 1)
    assert LinkState(store, "demo").counterpart("task", "client", 2) == 1
    assert _jobs(store) == 6


def test_a_task_mirrored_by_live_traffic_since_the_listing_is_not_paired_again(setup):
    """A webhook's sync mirrored partner #1 between the backfill's listing and its pairing: the
    backfill must leave that pair alone, not pair #1 with the hand-made client #2 as well."""
    world, store, run = setup
    state = LinkState(store, "demo")
    report = run(on_plan=lambda _: state.pair("task", "partner", 1, "client", 99))
    assert report.complete
    assert [{key: pair[key] for key in ("partner", "client", "marker_on")} for pair in report.linked_meanwhile] == \
        [{"partner": 1, "client": 2, "marker_on": "client"}]
    assert state.counterpart("task", "partner", 1) == 99
    assert state.counterpart("task", "client", 2) is None
    assert world.get_task("client", 2, "sourceDataVersion").get("sourceDataVersion") is None
    assert state.counterpart("task", "partner", 5) == 4  # the other pair is made as planned


def test_pairing_waits_for_a_live_sync_run_of_either_task(setup):
    world, store, run = setup
    held = TaskLock(store, (lock_key("demo", "client", 2),))
    waited = []

    def sync_run_finishes(seconds: float) -> None:
        waited.append(seconds)
        held.release()

    report = run(on_plan=lambda _: held.acquire(), sleep=sync_run_finishes)
    assert waited and report.complete
    assert LinkState(store, "demo").counterpart("task", "partner", 1) == 2


def test_a_persons_pairing_is_refused_for_a_task_paired_already_and_made_otherwise(setup, link):
    world, store, run = setup
    LinkState(store, "demo").pair("task", "partner", 3, "client", 99)
    with pytest.raises(bf.DecisionRefused, match=r"partner #3 \(with #99\)"):
        bf.pair_by_decision(link, {"partner": 3, "client": 3}, run.clients, store, run.enqueuer)
    made = bf.pair_by_decision(link, {"partner": 4, "client": 3}, run.clients, store, run.enqueuer)
    assert (made["partner"], made["client"]) == (4, 3)
    assert LinkState(store, "demo").counterpart("task", "client", 3) == 4
    assert _jobs(store) == 2  # both tasks synced, under the owner rules seeded
    with pytest.raises(bf.DecisionRefused, match="partner #4 is paired with #3"):
        bf.mirror_by_decision(link, "partner", 4, store, run.enqueuer, by="olga", at=1.0)
