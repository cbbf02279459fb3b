"""The benchmark's pure parts: which rates get a long run, the statistics it reports, how it reads
what the emulator saw (which task a request concerns, which write carries an event), and the gate."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from crosslink.base.settings import Settings
from crosslink.lab.bench import (
    DAY_S,
    PARTNER_STATUS_CYCLE,
    PEAK_SHARE,
    PLAN_QUOTA,
    POLL,
    SCALE_CHANGES_PER_LINK,
    SCALE_DAY_MIN_S,
    SCALE_DROP_SHARE,
    SCALE_KIND_WEIGHTS,
    SCALE_TASKS_PER_LINK,
    SIDES,
    SPARE_SHARE,
    WORKING_HOURS,
    BenchReport,
    Event,
    Exchange,
    PipelineFigures,
    PollerSettings,
    ScaleFigures,
    Write,
    backlog_fairness,
    capacity,
    carried,
    charge,
    day_plan,
    event_token,
    fastest,
    is_poll,
    jain,
    latencies,
    next_status,
    per_kind,
    percentile,
    poll_cycles,
    quiet_per_day,
    request_kind,
    request_targets,
    runs_by_outcome,
    scale_capacity,
    scale_day_s,
    shapes_by_kind,
    sustain_order,
    worker_counts,
    working_day_times,
    write_times,
)
from crosslink.lab.demo import example
from producers.reconcile import AUDIT_COMMENT_FIELDS
from workers.sync import COMMENT_FIELDS

probe = st.tuples(st.booleans(), st.one_of(st.none(), st.floats(min_value=0, max_value=5000)))
probes = st.dictionaries(st.integers(min_value=1, max_value=1000), probe, max_size=12)


def test_rates_held_go_first_highest_first():
    assert sustain_order({50: (True, 9.0), 100: (True, 40.0), 150: (False, 900.0)}) == [100, 50]


def test_with_a_target_only_rates_whose_probe_was_under_it():
    found = {300: (True, 50.0), 350: (True, 100.0), 400: (True, 60.0), 450: (True, 250.0), 500: (False, 80.0)}
    assert sustain_order(found, 100.0) == [400, 300]


def test_a_probe_without_latencies_meets_no_target():
    assert sustain_order({50: (True, None)}, 100.0) == []
    assert sustain_order({50: (True, None)}) == [50]


@given(probes, st.one_of(st.none(), st.floats(min_value=1, max_value=1000)))
def test_order_is_the_held_rates_under_the_target_descending(found, target):
    order = sustain_order(found, target)
    assert order == sorted(order, reverse=True)
    for rate, (held, p99) in found.items():
        meets = held and (target is None or (p99 is not None and p99 < target))
        assert (rate in order) == meets


def test_the_headline_row_is_the_fastest_and_of_equals_the_lowest_p99():
    one = PipelineFigures(workers=1, pipeline_events_per_s=500.0, e2e_p99_ms=288.6)
    two = PipelineFigures(workers=2, pipeline_events_per_s=500.0, e2e_p99_ms=38.4)
    slower = PipelineFigures(workers=2, pipeline_events_per_s=450.0, e2e_p99_ms=9.0)
    assert fastest([one, two]) is two
    assert fastest([two, one]) is two
    assert fastest([slower, one]) is one
    assert fastest([PipelineFigures(workers=1, pipeline_events_per_s=50.0), slower]) is slower
    assert fastest([]) is None


def test_the_target_row_is_the_fastest_under_the_target_and_of_equals_the_lowest_p99():
    one = PipelineFigures(workers=1, target_events_per_s=500.0, target_p99_ms=47.4, pipeline_events_per_s=500.0,
                          e2e_p99_ms=47.4)
    two = PipelineFigures(workers=2, target_events_per_s=500.0, target_p99_ms=42.8, pipeline_events_per_s=500.0,
                          e2e_p99_ms=900.0)
    assert fastest([one, two], under_target=True) is two
    assert fastest([one, two]) is one
    assert fastest([PipelineFigures(workers=1), one], under_target=True) is one


def test_a_headline_with_no_rate_held_names_no_worker_count():
    report = BenchReport(mode="quick", date="2026-12-04", machine={}, workers=2,
                         pipeline=[PipelineFigures(workers=1), PipelineFigures(workers=2)])
    headline = report.headline()
    assert headline["pipeline_events_per_s"] == 0.0 and headline["pipeline_workers"] is None
    assert headline["target_events_per_s"] == 0.0 and headline["target_workers"] is None
    report.pipeline[1].pipeline_events_per_s = 50.0
    assert report.headline()["pipeline_workers"] == 2


rows = st.builds(PipelineFigures, workers=st.integers(min_value=1, max_value=4),
                 pipeline_events_per_s=st.sampled_from([0.0, 50.0, 400.0, 500.0]),
                 e2e_p99_ms=st.one_of(st.none(), st.floats(min_value=0, max_value=5000)))


@given(st.lists(rows, min_size=1, max_size=6))
def test_no_row_beats_the_headline_row(found):
    best = fastest(found)
    for row in found:
        assert row.pipeline_events_per_s <= best.pipeline_events_per_s
        if row.pipeline_events_per_s == best.pipeline_events_per_s and row.e2e_p99_ms is not None:
            assert best.e2e_p99_ms is not None and best.e2e_p99_ms <= row.e2e_p99_ms


@given(st.lists(st.floats(min_value=0, max_value=1e6), min_size=1, max_size=200),
       st.floats(min_value=0, max_value=1))
def test_percentile_is_a_value_with_at_least_that_share_at_or_below_it(values, share):
    found = percentile(values, share)
    assert found in values
    assert sum(value <= found for value in values) >= share * len(values) - 1e-9


def test_percentile_of_nothing_is_none():
    assert percentile([], 0.99) is None


@given(st.lists(st.floats(min_value=0.01, max_value=1e6), min_size=1, max_size=60))
def test_jain_is_one_for_equal_shares_and_between_1_over_n_and_1(values):
    index = jain(values)
    assert 1 / len(values) - 1e-9 <= index <= 1 + 1e-9
    assert abs(jain([values[0]] * len(values)) - 1) < 1e-9


# --- fairness on a skewed backlog -------------------------------------------------------------

def test_turns_per_link_score_one_on_a_skewed_backlog():
    # Link 0 posts 12 events first, links 1-3 four each; each link gets every fourth slot.
    posted = {0: [0.00 + i * 0.001 for i in range(12)], 1: [0.1] * 4, 2: [0.2] * 4, 3: [0.3] * 4}
    written = {link: [] for link in posted}
    slot = 1.0
    queues = {link: list(times) for link, times in posted.items()}
    while any(queues.values()):
        for link in sorted(queues):
            if queues[link]:
                queues[link].pop()
                written[link].append(slot)
                slot += 1.0
    shares = backlog_fairness(posted, written)
    # The window ends with the first link done, mid-round: the links after it got one turn less.
    assert shares.served == {0: 4, 1: 4, 2: 3, 3: 3}
    assert shares.jain >= 0.95


def test_a_fifo_queue_scores_one_over_the_links_on_a_skewed_backlog():
    posted = {0: [0.00 + i * 0.001 for i in range(12)], 1: [0.1] * 4, 2: [0.2] * 4, 3: [0.3] * 4}
    order = [(link, at) for link in sorted(posted) for at in posted[link]]
    written: dict[int, list[float]] = {link: [] for link in posted}
    for slot, (link, _) in enumerate(order, start=1):
        written[link].append(float(slot))
    shares = backlog_fairness(posted, written)
    assert shares.jain == 0.25
    assert shares.window == (0.3, 12.0)
    assert shares.served == {0: 12, 1: 0, 2: 0, 3: 0}


def test_on_a_round_robin_workload_a_fifo_queue_scores_as_well_as_turns():
    # The old workload (every link's events posted in turns) cannot tell a FIFO queue from turns:
    # the skewed one above can.
    posted = {link: [round_ * 1.0 + link * 0.01 for round_ in range(4)] for link in range(4)}
    fifo = sorted((at, link) for link, times in posted.items() for at in times)
    written: dict[int, list[float]] = {link: [] for link in posted}
    for slot, (_, link) in enumerate(fifo, start=1):
        written[link].append(10.0 + slot)
    assert backlog_fairness(posted, written).jain >= 0.95


def test_a_backlog_not_written_in_full_has_no_index():
    assert backlog_fairness({0: [0.0, 0.1], 1: [0.2]}, {0: [1.0], 1: [2.0]}).jain is None
    assert backlog_fairness({}, {}).jain is None


@given(st.lists(st.integers(min_value=1, max_value=12), min_size=2, max_size=8))
def test_the_backlog_index_lies_between_1_over_n_and_1(sizes):
    posted = {link: [link * 0.01] * size for link, size in enumerate(sizes)}
    order = sorted((link * 0.01, link, i) for link, size in enumerate(sizes) for i in range(size))
    written: dict[int, list[float]] = {link: [] for link in posted}
    for slot, (_, link, _) in enumerate(order, start=1):
        written[link].append(float(slot))
    shares = backlog_fairness(posted, written)
    assert shares.jain is not None
    assert 1 / len(sizes) - 1e-9 <= shares.jain <= 1 + 1e-9


# --- matching events to the writes that carry them --------------------------------------------

def test_a_write_carries_the_marks_in_its_body():
    body = json.dumps({"description": f"{event_token(3, 17)} edit", "name": f"{event_token(4, 2)} x {event_token(3, 9)}"})
    assert carried(body) == {3: 17, 4: 2}
    assert carried("no marks") == {}


def test_an_event_is_matched_to_the_write_carrying_it_not_the_first_later_write():
    events = [Event(stream=1, seq=5, scheduled=10.0), Event(stream=2, seq=6, scheduled=10.1)]
    writes = [Write(done=10.3, carries={2: 6}), Write(done=10.9, carries={1: 5})]
    assert write_times(events, writes) == [10.9, 10.3]
    assert latencies(events, writes) == pytest.approx([0.9, 0.2])


def test_a_later_edit_of_the_same_stream_carries_an_earlier_one():
    # Three edits coalesced into one write carrying the last: all three are synced by it.
    events = [Event(1, seq, 10.0 + seq / 10) for seq in (1, 2, 3)]
    writes = [Write(done=10.2, carries={1: 0}), Write(done=11.0, carries={1: 3})]
    assert write_times(events, writes) == [11.0, 11.0, 11.0]


def test_an_event_no_write_carries_has_no_time():
    events = [Event(1, 4, 0.0)]
    assert write_times(events, [Write(1.0, {1: 3}), Write(2.0, {2: 9})]) == [None]
    assert latencies(events, []) == [None]


def test_latency_counts_from_the_schedule_not_from_the_send():
    # A sender that fell behind sent at 10.5 what was due at 10.0: its own lag counts.
    assert latencies([Event(1, 1, scheduled=10.0)], [Write(done=10.6, carries={1: 1})]) == [pytest.approx(0.6)]


@given(st.lists(st.tuples(st.floats(min_value=0, max_value=100), st.integers(min_value=0, max_value=20)),
                max_size=30), st.integers(min_value=0, max_value=20))
def test_the_matched_write_is_the_first_done_that_carries_the_event_or_a_later_one(found, seq):
    writes = [Write(done, {7: carried_seq}) for done, carried_seq in found]
    (matched,) = write_times([Event(7, seq, 0.0)], writes)
    carrying = [w.done for w in writes if w.carries[7] >= seq]
    assert matched == (min(carrying) if carrying else None)


# --- which task a request concerns ------------------------------------------------------------

def exchange(path: str, body: object = None, method: str = "POST", answer: object = None,
             account: str = "partner") -> Exchange:
    return Exchange(account, method, path, body=json.dumps(body).encode() if body is not None else b"",
                    answer=json.dumps(answer).encode() if answer is not None else b"")


def test_requests_concern_the_task_their_path_names():
    assert request_targets(exchange("/task/12", method="GET"), {}, {}) == [("partner", 12)]
    assert request_targets(exchange("/task/12/checklist/list", {}), {}, {}) == [("partner", 12)]
    assert request_targets(exchange("/task/12/comments/40", {"description": "x"}), {}, {}) == [("partner", 12)]
    assert request_targets(exchange("/task/12", {"name": "x"}), {}, {}) == [("partner", 12)]


def test_a_batch_read_concerns_every_task_it_names():
    read = exchange("/task/list", {"filters": [{"type": 57, "operator": "equal", "value": [3, 4, 5]}]})
    assert request_targets(read, {}, {}) == [("partner", 3), ("partner", 4), ("partner", 5)]
    spent = charge([read, exchange("/task/3", method="GET")], {}, {})
    assert spent.by_task[("partner", 3)] == pytest.approx(1 + 1 / 3)
    assert spent.by_task[("partner", 4)] == pytest.approx(1 / 3)
    assert spent.total == 2 and spent.polls == 0 and spent.no_task == 0


def test_the_poller_feeds_are_polls():
    window = {"dateType": "otherRange_withTime", "dateFrom": "01-01-2026 10:00", "dateTo": "02-01-2026 10:00"}
    feed = exchange("/task/list", {"filters": [{"type": 79, "operator": "equal", "value": window}]})
    comments = exchange("/comment/list", {"filters": [{"type": 3000, "operator": "equal", "value": window}]})
    assert is_poll(feed) and is_poll(comments)
    assert request_targets(feed, {}, {}) == POLL
    assert charge([feed, comments], {}, {}).polls == 2
    assert not is_poll(exchange("/task/list", {"filters": [{"type": 57, "operator": "equal", "value": 3}]}))


def test_the_comment_audit_is_the_pollers_and_a_runs_listing_is_not():
    audit = exchange("/task/12/comments/list", {"fields": AUDIT_COMMENT_FIELDS, "typeList": "All"})
    run = exchange("/task/12/comments/list", {"fields": COMMENT_FIELDS, "typeList": "All"})
    assert is_poll(audit) and request_targets(audit, {}, {}) == POLL
    assert not is_poll(run) and request_targets(run, {}, {}) == [("partner", 12)]


def test_comments_and_files_concern_the_task_that_holds_them():
    comments, files = {("client1", 40): 7}, {("client1", 9): 8}
    assert request_targets(exchange("/comment/40", method="GET", account="client1"), comments, files) == [("client1", 7)]
    assert request_targets(exchange("/comment/40", method="DELETE", account="client1"), comments, files) == [("client1", 7)]
    assert request_targets(exchange("/file/9/download", method="GET", account="client1"), comments, files) == [("client1", 8)]
    assert request_targets(exchange("/file/9/attach/task", account="client1"), comments, files) == [("client1", 8)]
    upload = Exchange("client1", "POST", "/file/", answer=b'{"result": "success", "id": 9}')
    assert request_targets(upload, comments, files) == [("client1", 8)]


def test_a_new_task_is_known_by_the_id_its_answer_names():
    made = exchange("/task/", {"name": "x"}, answer={"result": "success", "id": 31})
    assert request_targets(made, {}, {}) == [("partner", 31)]


def test_what_concerns_no_one_task_is_counted_apart():
    lookups = [exchange("/user/list", {"filters": []}), exchange("/process/task", method="GET"),
               exchange("/comment/99", method="GET")]
    assert [request_targets(e, {}, {}) for e in lookups] == [[], [], []]
    assert charge(lookups, {}, {}).no_task == 3


def test_lists_are_reads_even_by_post():
    assert not exchange("/task/list", {}).is_write
    assert not exchange("/task/3/comments/list", {}).is_write
    assert exchange("/task/3", {}).is_write
    assert exchange("/comment/3", method="DELETE").is_write
    assert not exchange("/task/3", method="GET").is_write


# --- per kind ---------------------------------------------------------------------------------

def test_each_kind_is_charged_what_concerns_its_changes_tasks():
    by_task = {("client1", 1): 2.0, ("partner", 1): 1.0, ("client1", 2): 3.0, ("partner", 2): 1.0,
               ("partner", 3): 7.5, ("client1", 9): 100.0}
    changes = [("client edit", [("client1", 1), ("partner", 1)]), ("client edit", [("client1", 2), ("partner", 2)]),
               ("partner comment", [("partner", 3), ("client1", 3)])]
    assert per_kind(changes, by_task) == {"client edit": 3.5, "partner comment": 7.5}


def test_each_kinds_requests_are_named_by_what_they_were():
    made = [exchange("/task/1", method="GET", account="client1"), exchange("/task/1", {"name": "x"}),
            exchange("/task/1/checklist/list", {}), exchange("/task/2", method="GET", account="client1"),
            exchange("/task/2", {"name": "y"}), exchange("/task/9", method="GET"),
            exchange("/task/list", {"filters": [{"type": 79, "operator": "equal", "value": {}}]})]
    changes = [("client edit", [("client1", 1), ("partner", 1)]), ("client edit", [("client1", 2), ("partner", 2)])]
    assert shapes_by_kind(changes, made, {}, {}) == {
        "client edit": {"GET /task/N": 2, "POST /task/N": 2, "POST /task/N/checklist/list": 1}}


def test_a_task_named_twice_by_one_change_counts_once():
    assert per_kind([("create", [("partner", 1), ("partner", 1)])], {("partner", 1): 4.0}) == {"create": 4.0}


# --- quiet overhead ---------------------------------------------------------------------------

def test_polls_close_together_are_one_cycle():
    assert poll_cycles([0.0, 0.2, 0.4, 9.0, 9.1, 18.0], gap_s=1.5) == [(0.0, 3), (9.0, 2), (18.0, 1)]
    assert poll_cycles([], 1.0) == []


def test_quiet_overhead_is_requests_of_whole_cycles_over_their_time():
    # One request every 90 s: 960 a day.
    assert quiet_per_day([0.0, 90.0, 180.0, 270.0], gap_s=30.0) == pytest.approx(960.0)
    # The same shrunk twenty-fold (a quick run's day): the same per day.
    assert quiet_per_day([0.0, 4.5, 9.0, 13.5], gap_s=1.5, scale=0.05) == pytest.approx(960.0)
    assert quiet_per_day([0.0], gap_s=1.0) is None


def test_a_poll_per_link_makes_the_overhead_grow_with_the_links():
    per_account = quiet_per_day([0.0, 90.0, 180.0], gap_s=30.0)
    per_link = quiet_per_day([t + i * 0.3 for t in (0.0, 90.0, 180.0) for i in range(6)], gap_s=30.0)
    assert per_link == pytest.approx(6 * per_account)


# --- the workers ------------------------------------------------------------------------------

def line(msg: str, **extra: object) -> str:
    return json.dumps({"ts": "2026-12-05T14:02:48", "level": "info", "logger": "x", "msg": msg, **extra})


def test_worker_lines_count_celery_executions_and_finished_runs():
    lines = [
        line("job crosslink.sync.batch received"),
        line("synced: chaos1 client#1 -> #1: created"),
        line("synced: chaos1 client#2 -> #2: updated"),
        line("job crosslink.sync.batch succeeded in 0.160s: synced #1 #2", job="026c"),
        line("job crosslink.sync.task waits in 0.010s: lease-busy, again in 1s"),
        line("job crosslink.reconcile.tick succeeded in 0.060s: 3"),
        "celery beat v5.6.3 (recovery) is starting.",
        line("Task crosslink.sync.task[10] raised unexpected: ValueError()"),   # Celery's, beside ours
        line("job crosslink.sync.task failed in 0.002s: ValueError: "),
    ]
    executions, synced = worker_counts(lines)
    assert synced == 2
    assert executions == {"crosslink.sync.batch": 1, "crosslink.sync.task": 2, "crosslink.reconcile.tick": 1}


def test_sync_runs_are_read_by_outcome_from_a_workers_metrics():
    text = (
        "# HELP crosslink_sync_runs_total Sync runs\n# TYPE crosslink_sync_runs_total counter\n"
        'crosslink_sync_runs_total{kind="updated",link="a",outcome="done",side="client"} 5.0\n'
        'crosslink_sync_runs_total{kind="noop",link="a",outcome="done",side="partner"} 2.0\n'
        'crosslink_sync_runs_total{kind="waiting",link="a",outcome="waiting",side="client"} 4.0\n'
        "# HELP crosslink_webhooks_total x\n# TYPE crosslink_webhooks_total counter\n"
        'crosslink_webhooks_total{outcome="accepted"} 9.0\n')
    assert runs_by_outcome(text) == {"done": 7.0, "waiting": 4.0}


# --- the gate ---------------------------------------------------------------------------------

def passing_report() -> BenchReport:
    return BenchReport(mode="quick", date="2026-12-05", machine={}, workers=2, api_calls_per_change=2.4,
                       quiet_per_day_by_links={"2": 960.0, "6": 972.0}, limiter_violations=0,
                       celery_runs_per_sync=1.1, runs_per_sync=1.6)


def test_a_deployment_within_the_gate_passes():
    assert passing_report().failures() == []


@pytest.mark.parametrize("change, what", [
    ({"api_calls_per_change": 3.2}, "api_calls_per_change"),
    ({"quiet_per_day_by_links": {"2": 960.0, "6": 2880.0}}, "quiet overhead"),
    ({"celery_runs_per_sync": 87.0}, "celery_runs_per_sync"),
    ({"runs_per_sync": 2.5}, "runs_per_sync"),
    ({"limiter_violations": 1}, "limiter_violations"),
    ({"api_calls_per_change": None}, "api_calls_per_change"),
    ({"quiet_per_day_by_links": {"2": 960.0, "6": None}}, "quiet overhead"),
    ({"celery_runs_per_sync": None}, "celery_runs_per_sync"),
])
def test_the_gate_refuses_what_the_issue_names_and_figures_not_measured(change, what):
    report = passing_report()
    for name, value in change.items():
        setattr(report, name, value)
    problems = report.failures()
    assert len(problems) == 1 and what in problems[0], problems


def test_quiet_growth_compares_the_most_links_with_the_fewest():
    report = passing_report()
    report.quiet_per_day_by_links = {"10": 1000.0, "2": 1000.0, "50": 1200.0}
    assert report.quiet_overhead_growth == 1.2


def test_the_poller_runs_at_its_default_settings_with_the_day_shrunk_by_the_scale():
    defaults = Settings.from_env({})
    real, quick = PollerSettings.default(1.0), PollerSettings.default(0.05)
    assert real.floor_s == defaults.reconcile_period_s and real.daily_quota == defaults.daily_quota
    assert quick.floor_s == pytest.approx(defaults.reconcile_period_s * 0.05)
    assert quick.daily_quota == round(defaults.daily_quota / 0.05)
    assert quick.expected_period_s == pytest.approx(real.expected_period_s * 0.05, rel=0.02)
    assert real.env()["CROSSLINK_RECONCILE_PERIOD_S"] == repr(defaults.reconcile_period_s)


# ----------------------------------------------------------------------------------------------
# The scale phase's pure parts: the working day's timing, the day's plan, status moves, capacity

def in_working_hours(at: float) -> bool:
    return WORKING_HOURS[0] * 3600 <= at < WORKING_HOURS[1] * 3600


@given(st.integers(min_value=0, max_value=600), st.integers(min_value=0, max_value=2**32))
def test_a_working_day_has_its_peak_share_in_working_hours_and_the_rest_outside(count, seed):
    times = working_day_times(count, random.Random(seed))
    assert len(times) == count and times == sorted(times)
    assert all(0 <= at < DAY_S for at in times)
    assert sum(1 for at in times if in_working_hours(at)) == round(count * PEAK_SHARE)


def test_the_peak_is_busier_by_the_hour_than_the_rest_of_the_day():
    times = working_day_times(10_000, random.Random(7))
    hours = (WORKING_HOURS[1] - WORKING_HOURS[0])
    peak = sum(1 for at in times if in_working_hours(at)) / hours
    rest = sum(1 for at in times if not in_working_hours(at)) / (24 - hours)
    assert peak > 5 * rest
    # Outside working hours the changes spread over the night and the evening alike.
    assert any(at < WORKING_HOURS[0] * 3600 for at in times) and any(at >= WORKING_HOURS[1] * 3600 for at in times)


@given(st.integers(min_value=1, max_value=60), st.integers(min_value=0, max_value=1000))
def test_a_days_plan_has_its_changes_per_link_and_drops_its_share(links, seed):
    plan = day_plan(links, seed)
    assert len(plan) == links * SCALE_CHANGES_PER_LINK
    assert sum(1 for change in plan if change.dropped) == round(len(plan) * SCALE_DROP_SHARE)
    assert [change.at_s for change in plan] == sorted(change.at_s for change in plan)
    assert all(0 <= change.link < links and 0 <= change.task < SCALE_TASKS_PER_LINK for change in plan)
    assert {change.side for change in plan} <= set(SIDES) and {change.kind for change in plan} <= set(SCALE_KIND_WEIGHTS)
    assert day_plan(links, seed) == plan


def test_a_large_days_plan_has_every_kind_on_both_sides_and_every_link():
    plan = day_plan(50, 1)
    assert {(change.kind, change.side) for change in plan} == {(kind, side) for kind in SCALE_KIND_WEIGHTS
                                                               for side in SIDES}
    assert {change.link for change in plan} == set(range(50))
    assert sum(1 for change in plan if change.dropped) == 50


def test_status_moves_go_back_and_forth_and_never_to_a_dead_end():
    transitions = example("links.yaml")["links"][0]["statuses"]["transitions"]["client"]
    assert next_status("partner", 1, None) == 2
    assert [next_status("partner", status, None) for status in (2, 3)] == [3, 2]
    assert next_status("client", 11, transitions) == 12  # not 15, Rejected, which nothing leaves
    assert next_status("client", 12, transitions) in (13, 14)
    assert next_status("client", 13, transitions) == 12
    assert next_status("client", 15, transitions) is None
    assert set(PARTNER_STATUS_CYCLE.values()) <= {2, 3}


def test_capacity_from_two_link_counts_is_the_line_through_them():
    found = capacity({10: 2000.0, 50: 6000.0})
    assert found.fixed_per_day == pytest.approx(1000.0) and found.per_link_per_day == pytest.approx(100.0)
    # 15,000 requests a day leave 25 % of 20,000: (15,000 - 1,000) / 100.
    assert found.max_links == 140


def test_capacity_from_one_day_takes_the_quiet_overhead_as_its_fixed_part():
    found = capacity({10: 3000.0}, fixed_per_day=1000.0)
    assert found.per_link_per_day == pytest.approx(200.0) and found.max_links == 70
    assert capacity({10: 3000.0}) is None
    assert capacity({}) is None


def test_a_cost_that_does_not_grow_with_the_links_bounds_nothing():
    assert capacity({10: 1000.0, 200: 1000.0}).max_links is None
    assert capacity({10: 16_000.0}, fixed_per_day=16_000.0).max_links is None


def test_a_fixed_part_over_the_budget_serves_no_link():
    assert capacity({10: 17_000.0}, fixed_per_day=16_000.0).max_links == 0


@given(st.floats(min_value=0, max_value=14_000), st.floats(min_value=0.5, max_value=500),
       st.lists(st.integers(min_value=1, max_value=400), min_size=2, max_size=4, unique=True))
def test_the_most_links_fit_the_budget_and_one_more_does_not(fixed, per_link, counts):
    found = capacity({links: fixed + per_link * links for links in counts})
    budget = PLAN_QUOTA * (1 - SPARE_SHARE)
    assert found.per_link_per_day == pytest.approx(per_link, rel=1e-6)
    cost = lambda links: found.fixed_per_day + found.per_link_per_day * links  # noqa: E731
    assert cost(found.max_links) <= budget + 1e-6
    assert cost(found.max_links + 1) > budget - 1e-6


def test_scale_capacity_says_how_it_was_derived():
    days = [ScaleFigures(links=10, time_scale=0.01, day_real_s=864.0, partner_requests_per_day=2000,
                         partner_overhead_quiet_per_day=900.0)]
    one = scale_capacity(days)
    assert one["max_links"] == 128  # (15,000 - 900) / 110 and one["fixed_per_day"] == 900.0 and one["from_links"] == [10]
    assert "quiet overhead" in one["how"]
    days.append(ScaleFigures(links=50, time_scale=0.01, day_real_s=864.0, partner_requests_per_day=6000))
    two = scale_capacity(days)
    assert two["per_link_per_day"] == 100.0 and two["max_links"] == 140 and "least-squares" in two["how"]
    assert scale_capacity([]) == {}


def test_a_day_lasts_longer_with_more_links_so_the_load_per_second_holds():
    assert scale_day_s(1) == SCALE_DAY_MIN_S
    assert scale_day_s(200) > scale_day_s(50) >= scale_day_s(10)


def test_the_scale_headline_is_the_most_links_day_and_absent_when_not_run():
    report = passing_report()
    assert report.headline()["drift_repair_p99_s"] is None and report.headline()["max_links_per_plan"] is None
    report.scale = [ScaleFigures(links=200, time_scale=0.02, day_real_s=1800.0, partner_requests_per_day=14000,
                                 drift_repair_p99_s=250.0),
                    ScaleFigures(links=10, time_scale=0.007, day_real_s=600.0, partner_requests_per_day=1500)]
    report.scale_capacity = scale_capacity(report.scale)
    headline = report.headline()
    assert headline["scale_links"] == 200 and headline["partner_requests_per_day"] == 14000
    assert headline["drift_repair_p99_s"] == 250.0 and headline["max_links_per_plan"] is not None
    assert "a simulated day, 10 links" in report.table() and "partner capacity" in report.table()
    assert json.loads(json.dumps(report.as_dict()))["detail"]["scale"][0]["links"] == 200


def test_a_request_kind_leaves_the_numbers_out_and_names_the_pollers_own():
    read = Exchange("partner", "GET", "/task/123", "fields=id")
    comments = Exchange("partner", "POST", "/task/7/comments/", body=b"{}")
    feed = Exchange("partner", "POST", "/task/list", body=json.dumps(
        {"filters": [{"type": 79, "operator": "equal", "value": {}}]}).encode())
    assert [request_kind(e) for e in (read, comments, feed)] == ["GET /task/N", "POST /task/N/comments",
                                                                   "poll POST /task/list"]


def test_the_scale_phase_waits_on_sync_work_not_on_the_pollers_jobs(redis_url, redis_client, emulator_world):
    from types import SimpleNamespace

    from crosslink.lab.bench import Bench, BenchPlan
    from crosslink.queue.names import SYNC_QUEUE, claims_key, pending_key

    bench = Bench(BenchPlan.quick(), workdir=None)
    bench.redis = SimpleNamespace(url=redis_url)
    bench.stack = SimpleNamespace(world=emulator_world, busy=lambda: True)
    assert bench.busy()  # the stack's own look by default
    bench.sync_work_only = True
    redis_client.lpush(SYNC_QUEUE, "a tick or a poll")
    assert not bench.busy()
    redis_client.set(pending_key("chaos1", "client", 7), 1)
    assert bench.busy()
    redis_client.delete(pending_key("chaos1", "client", 7))
    redis_client.hset(claims_key("chaos1", "partner"), "7", 1)
    assert bench.busy()
