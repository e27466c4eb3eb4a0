"""A consumer group's lag as its publisher sees it (groundswell_runtime.consumer_lag):
the rule alone, on made-up offsets and times."""

from __future__ import annotations

from aiokafka import TopicPartition
from groundswell_runtime.consumer_lag import STALLED_AFTER, PublishedOffsets

A, B = TopicPartition("signatures", 0), TopicPartition("signatures", 1)


def test_the_lag_is_the_age_of_the_oldest_batch_not_committed() -> None:
    published = PublishedOffsets()
    published.published(A, 10, at=100.0)  # offsets 0-9
    published.published(A, 20, at=101.0)  # 10-19
    published.published(B, 5, at=100.5)  # 0-4
    assert published.lag({A: 0, B: 0}, now=102.0) == 2.0  # A's first batch
    assert published.lag({A: 10, B: 0}, now=102.0) == 1.5  # B's is the oldest now
    assert published.lag({A: 15, B: 5}, now=102.0) == 1.0  # inside A's second batch
    assert published.lag({A: 20, B: 5}, now=102.0) == 0.0  # everything committed


def test_partitions_the_group_never_committed_are_not_counted() -> None:
    published = PublishedOffsets()
    published.published(A, 10, at=100.0)
    published.published(B, 10, at=100.0)
    assert published.lag({A: 10, B: -1}, now=105.0) == 0.0
    # ... nor kept: B's batches were let go, and a later commit finds only newer ones.
    published.published(B, 20, at=106.0)
    assert published.lag({A: 10, B: 0}, now=107.0) == 1.0


def test_a_group_behind_that_stops_committing_is_away_not_slow() -> None:
    published = PublishedOffsets()
    published.published(A, 10, at=100.0)
    published.published(A, 20, at=100.2)
    assert published.lag({A: 5}, now=100.5) == 0.5
    assert published.lag({A: 5}, now=100.5 + STALLED_AFTER - 0.1) is not None
    assert published.lag({A: 5}, now=100.5 + STALLED_AFTER) is None
    # It moves again: a lag once more, from the batch it is in.
    assert published.lag({A: 12}, now=110.0) == 110.0 - 100.2


def test_only_so_many_batches_are_kept_per_partition() -> None:
    published = PublishedOffsets(kept=3)
    for n in range(1, 6):
        published.published(A, 10 * n, at=100.0 + n)
    # Batches ending at 10 and 20 were let go: the oldest kept one (30, at 103) stands in.
    assert published.lag({A: 0}, now=110.0) == 7.0
