"""Milestones: thresholds a petition's count crosses, each announced once."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from uuid import UUID, uuid5

DEFAULT_THRESHOLDS: tuple[int, ...] = (1_000, 10_000, 100_000)


@dataclass(frozen=True, slots=True)
class MilestonePolicy:
    """Thresholds for petitions that do not choose their own."""

    default_thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS


@dataclass(frozen=True, slots=True)
class MilestoneHit:
    threshold: int
    signatures: int


def milestone_event_id(petition_id: UUID, threshold: int) -> UUID:
    """The same id every time a milestone is announced, so consumers can drop repeats."""
    return uuid5(petition_id, str(threshold))


def raised_goal(goal: int) -> int:
    """The next goal once `goal` is reached: double it, rounded up to two significant digits.

    1,000 -> 2,000; 1,500 -> 3,000; 7,300 -> 15,000; 999 -> 2,000.
    """
    doubled = max(goal, 1) * 2
    step = int(10 ** max(len(str(doubled)) - 2, 0))
    return -(-doubled // step) * step


@dataclass(frozen=True, slots=True)
class MilestoneProgress:
    goal: int | None
    reached: tuple[int, ...]
    hits: tuple[MilestoneHit, ...]


def progress(
    signatures: int,
    *,
    thresholds: Iterable[int],
    goal: int | None,
    auto_raise_goal: bool,
    reached: Iterable[int],
) -> MilestoneProgress:
    """Announce every threshold (and the goal) the count has reached for the first time.

    A reached goal is raised, when the petition asks for it, until it is ahead of the
    count again; every goal passed on the way is a milestone of its own.
    """
    done = set(reached)
    candidates = {t for t in thresholds if t > 0}
    hits: list[MilestoneHit] = []
    while True:
        if goal is not None and goal > 0:
            candidates.add(goal)
        for threshold in sorted(t for t in candidates if t <= signatures and t not in done):
            done.add(threshold)
            hits.append(MilestoneHit(threshold, signatures))
        if auto_raise_goal and goal is not None and goal > 0 and signatures >= goal:
            goal = raised_goal(goal)
            continue
        return MilestoneProgress(goal, tuple(sorted(done)), tuple(hits))
