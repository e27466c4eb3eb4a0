"""Lag, rates and trends from readings (groundswell_ops.lag): pure."""

from __future__ import annotations

from groundswell_ops.lag import (
    Sample,
    consumed_per_second,
    group_lag,
    lags,
    partition_lag,
    rates_in,
    trend,
)

A0, A1 = ("a", 0), ("a", 1)


def sample(at: float, ends: dict, committed: dict, starts: dict | None = None) -> Sample:
    return Sample(at, starts or {tp: 0 for tp in ends}, ends, {"g": committed})


def test_lag_is_end_minus_commit_or_from_the_start_when_nothing_committed() -> None:
    assert partition_lag(0, 10, 4) == 6
    assert partition_lag(3, 10, -1) == 7  # reads from the first record held
    assert partition_lag(0, 10, 10) == 0


def test_a_commit_past_the_end_is_no_backlog() -> None:
    # The local broker lost its log but the group's commit survived elsewhere.
    assert partition_lag(0, 2, 50) == 0


def test_lags_cover_the_group_partitions_only() -> None:
    s = sample(0, {A0: 10, A1: 5, ("b", 0): 99}, {A0: 7, A1: -1})
    assert lags(s, "g") == {A0: 3, A1: 5}
    assert lags(s, "unknown") == {}


def test_rates_in_are_offsets_per_second_and_unknown_after_a_reset() -> None:
    before = sample(10.0, {A0: 100, A1: 50}, {})
    after = sample(12.0, {A0: 300, A1: 10}, {})
    rates = rates_in(before, after)
    assert rates[A0] == 100.0
    assert rates[A1] is None  # offsets went back: the topic was recreated
    assert rates_in(None, after) == {A0: None, A1: None}


def test_trend_compares_with_the_oldest_reading_of_the_window() -> None:
    history = [
        sample(0, {A0: 10}, {A0: 10}),
        sample(1, {A0: 20}, {A0: 12}),
        sample(2, {A0: 30}, {A0: 15}),
    ]
    assert trend(history, "g") == "growing"
    assert trend(history[:1], "g") == "steady"
    draining = [sample(0, {A0: 30}, {A0: 10}), sample(1, {A0: 30}, {A0: 25})]
    assert trend(draining, "g") == "shrinking"


def test_consumed_rate_and_group_summary() -> None:
    history = [
        sample(0, {A0: 10, A1: 10}, {A0: 0, A1: 4}),
        sample(2, {A0: 10, A1: 10}, {A0: 6, A1: 10}),
    ]
    assert consumed_per_second(history, "g") == 6.0
    summary = group_lag(history, "g")
    assert summary.total == 4 and summary.partitions == {A0: 4, A1: 0}
    assert summary.trend == "shrinking"
    reset = [sample(0, {A0: 10}, {A0: 8}), sample(1, {A0: 10}, {A0: 2})]
    assert consumed_per_second(reset, "g") is None
