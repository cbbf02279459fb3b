"""The benchmark's pure parts: which rates get a long run, and the statistics it reports."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from crosslink.bench import jain, percentile, sustain_order

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
