"""The benchmark's pure parts: which rates get a long run, and the statistics it reports."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crosslink.bench import BenchReport, PipelineFigures, fastest, jain, percentile, sustain_order

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
