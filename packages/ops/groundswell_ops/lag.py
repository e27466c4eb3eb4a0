"""Lag, rates and trends from successive readings of the broker: pure, no I/O.

A reading (`Sample`) holds, at one moment, each partition's start and end offset and each
group's committed offsets. From it:
- a group's lag on a partition is `end - committed`: the records written that the group
  has not yet acknowledged. A partition the group never committed is read from the start
  (every consumer here resets to earliest), so its lag is `end - start`. Lag is never
  negative: a commit can only be at most the end it was read up to, and a broker that
  lost its log (the memory-only local one, after a restart) can leave a commit past the
  new end; that is reported as 0, not as a negative backlog.
- the rate in (or consumed) between two readings is the offset difference over the time
  between them; offsets only grow, so a drop means the topic was recreated, and the rate
  is then unknown rather than negative.
- a group's lag is growing when it is positive and larger than in the oldest reading of
  the window: consumers are falling behind the producers.
Offsets count records exactly, so all of this is exact, not sampled.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

TP = tuple[str, int]
Trend = Literal["growing", "shrinking", "steady"]


@dataclass(frozen=True)
class Sample:
    at: float  # seconds, monotonic
    starts: Mapping[TP, int]
    ends: Mapping[TP, int]
    # group -> partition -> committed offset (-1: nothing committed)
    committed: Mapping[str, Mapping[TP, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class GroupLag:
    group: str
    partitions: dict[TP, int]
    total: int
    trend: Trend
    consumed_per_second: float | None


def partition_lag(start: int, end: int, committed: int) -> int:
    if committed < 0:
        return max(end - start, 0)
    return max(end - committed, 0)


def lags(sample: Sample, group: str) -> dict[TP, int]:
    return {
        tp: partition_lag(sample.starts.get(tp, 0), sample.ends.get(tp, 0), offset)
        for tp, offset in sorted(sample.committed.get(group, {}).items())
    }


def rate(before: int | None, after: int | None, seconds: float) -> float | None:
    if before is None or after is None or seconds <= 0 or after < before:
        return None
    return (after - before) / seconds


def rates_in(previous: Sample | None, current: Sample) -> dict[TP, float | None]:
    """Records written per second per partition since the previous reading."""
    if previous is None:
        return {tp: None for tp in current.ends}
    seconds = current.at - previous.at
    return {tp: rate(previous.ends.get(tp), end, seconds) for tp, end in current.ends.items()}


def trend(history: Sequence[Sample], group: str) -> Trend:
    if len(history) < 2:
        return "steady"
    now = sum(lags(history[-1], group).values())
    then = sum(lags(history[0], group).values())
    if now > then:
        return "growing"
    if now < then:
        return "shrinking"
    return "steady"


def consumed_per_second(history: Sequence[Sample], group: str) -> float | None:
    """Commits advanced per second between the last two readings (None until two exist)."""
    if len(history) < 2:
        return None
    before, after = history[-2], history[-1]
    previous = before.committed.get(group, {})
    advanced = 0
    for tp, offset in after.committed.get(group, {}).items():
        old = previous.get(tp, -1)
        if offset >= 0 and old >= 0:
            if offset < old:
                return None  # offsets reset: no meaningful rate
            advanced += offset - old
    return rate(0, advanced, after.at - before.at)


def group_lag(history: Sequence[Sample], group: str) -> GroupLag:
    per_partition = lags(history[-1], group)
    return GroupLag(
        group,
        per_partition,
        sum(per_partition.values()),
        trend(history, group),
        consumed_per_second(history, group),
    )
