"""Milestone thresholds, goal raising and milestone event ids (pure, no I/O)."""

from __future__ import annotations

import uuid

import pytest
from groundswell_counter.domain.milestones import milestone_event_id, progress, raised_goal


@pytest.mark.parametrize(
    ("goal", "raised"),
    [
        (1_000, 2_000),
        (1_500, 3_000),
        (7_300, 15_000),
        (999, 2_000),
        (100, 200),
        (5, 10),
        (55, 110),
        (1, 2),
        (123_456, 250_000),
    ],
)
def test_goal_is_doubled_and_rounded_up_to_two_significant_digits(goal: int, raised: int) -> None:
    assert raised_goal(goal) == raised


def test_each_threshold_is_reached_once() -> None:
    first = progress(
        1_200, thresholds=(1_000, 10_000), goal=None, auto_raise_goal=False, reached=()
    )
    assert [h.threshold for h in first.hits] == [1_000]
    assert first.hits[0].signatures == 1_200
    again = progress(
        1_300, thresholds=(1_000, 10_000), goal=None, auto_raise_goal=False, reached=first.reached
    )
    assert again.hits == () and again.reached == (1_000,)


def test_goal_is_a_milestone_and_stays_when_not_auto_raised() -> None:
    result = progress(250, thresholds=(100,), goal=200, auto_raise_goal=False, reached=())
    assert [h.threshold for h in result.hits] == [100, 200]
    assert result.goal == 200


def test_auto_raised_goal_passes_every_intermediate_goal() -> None:
    # A count far above the goal (e.g. the goal was lowered): every raised goal on the
    # way is announced once, and the goal ends ahead of the count.
    result = progress(850, thresholds=(), goal=100, auto_raise_goal=True, reached=())
    assert [h.threshold for h in result.hits] == [100, 200, 400, 800]
    assert result.goal == 1_600


def test_a_goal_equal_to_a_threshold_is_announced_once() -> None:
    result = progress(1_000, thresholds=(1_000,), goal=1_000, auto_raise_goal=True, reached=())
    assert [h.threshold for h in result.hits] == [1_000]
    assert result.goal == 2_000


def test_no_milestones_below_threshold_or_for_non_positive_thresholds() -> None:
    result = progress(0, thresholds=(0, -5, 10), goal=0, auto_raise_goal=True, reached=())
    assert result.hits == () and result.goal == 0


def test_milestone_event_id_is_deterministic_per_petition_and_threshold() -> None:
    petition = uuid.uuid4()
    assert milestone_event_id(petition, 1_000) == milestone_event_id(petition, 1_000)
    assert milestone_event_id(petition, 1_000) == uuid.uuid5(petition, "1000")
    assert milestone_event_id(petition, 1_000) != milestone_event_id(petition, 10_000)
    assert milestone_event_id(petition, 1_000) != milestone_event_id(uuid.uuid4(), 1_000)


def test_the_fast_path_agrees_with_progress_on_every_record() -> None:
    """`_with_milestones` skips `progress` when nothing is due: it must never skip a hit,
    a goal raise or anything else `progress` would change."""
    import random
    from dataclasses import replace

    from groundswell_counter.domain.milestones import MilestonePolicy
    from groundswell_counter.domain.processing import PetitionRecord, _with_milestones
    from groundswell_counter.domain.tally import Tally

    rng = random.Random(13)
    policy = MilestonePolicy(default_thresholds=(5, 10, 20))
    for _ in range(20_000):
        signatures = rng.randrange(0, 30)
        thresholds = tuple(sorted(rng.sample(range(0, 25), rng.randrange(0, 4))))
        goal = rng.choice([None, 0, *range(1, 30)])
        auto_raise = rng.random() < 0.5
        # Reached: what an earlier, smaller count would have left (or arbitrary values).
        earlier = progress(
            rng.randrange(0, signatures + 1),
            thresholds=thresholds or policy.default_thresholds,
            goal=goal,
            auto_raise_goal=auto_raise,
            reached=(),
        )
        record = PetitionRecord(
            uuid.uuid4(),
            tally=Tally(signatures=signatures),
            goal=earlier.goal if rng.random() < 0.8 else goal,
            thresholds=thresholds,
            auto_raise_goal=auto_raise,
            reached=earlier.reached,
        )
        full = progress(
            signatures,
            thresholds=thresholds or policy.default_thresholds,
            goal=record.goal,
            auto_raise_goal=auto_raise,
            reached=record.reached,
        )
        expected = replace(record, goal=full.goal, reached=full.reached)
        assert _with_milestones(record, policy) == (expected, full.hits), record
