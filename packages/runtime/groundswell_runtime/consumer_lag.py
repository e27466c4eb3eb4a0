"""How far behind a consumer group is, in seconds, as seen by the publisher.

A relay knows when it handed each record batch to the broker and, from the broker's
acknowledgement, the offsets that batch took. The group's committed offsets (one
OffsetFetch that names the partitions: correct on Kafka and on the local broker, which
cannot answer a whole-group one) say where it is. So the group's lag is the age of the
oldest event it has not committed yet: now minus the time the batch holding it was
published, the worst over the partitions. Nothing is fetched from the partitions (the
local broker reads every batch a partition holds for each Fetch).

What it is for: signing refuses new signatures while what it already accepted waits
(service_layer/backlog.py). The outbox's age says how long the relay keeps signatures
waiting; this says how long the counter does after them. Measured (docs/performance.md,
2026-12-04): with signing ahead of the rest on the cores, admission by the outbox alone
let the counter fall 15-23 s behind at 4,000 signatures/s offered; with this lag added,
2.5-3.0 s (freshness p99).

Read with care:
- a group commits every so often (the counter every 0.5 s), so the figure includes up
  to that much that is already processed;
- only what this relay published since it started is known: older records a group has
  not reached are not seen, and where a group has committed nothing (a topic it does
  not read) nothing is counted or kept;
- a group that is not moving at all (its committed offsets unchanged for `STALLED_AFTER`
  while behind) is away, not slow: `lag` is then None, as a relay that cannot publish
  makes the outbox's age say nothing. Shedding signatures because the counter is down
  would turn a counter outage into a signing outage; the events wait in Kafka.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Awaitable, Callable, Mapping

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client import Gauge

CONSUMER_LAG = Gauge(
    "groundswell_consumer_lag_seconds",
    "Age of the oldest event a relay published that a consumer group has not committed",
    ["consumer"],
)

# A group behind and not committing for this long is away (stopped, rebalancing for good).
STALLED_AFTER = 5.0
# An unchanged reading (0 while idle, mostly) is reported again only this often: enough
# for a reader that believes readings for a few seconds, and no write 4 times a second.
REPORT_UNCHANGED_EVERY = 1.0
# Batches remembered per partition: ~10 passes a second, so minutes of them. A group
# further behind than that is read from the oldest one kept (it is far behind either way).
KEPT_BATCHES = 10_000


class PublishedOffsets:
    """Per partition, the end offset of each batch published and when (pure: no I/O)."""

    def __init__(self, kept: int = KEPT_BATCHES) -> None:
        self._batches: dict[TopicPartition, collections.deque[tuple[int, float]]] = {}
        self._kept = kept
        self._marks: dict[TopicPartition, int] = {}
        self._moved_at = time.monotonic()

    def published(self, tp: TopicPartition, end_offset: int, at: float) -> None:
        """A batch of `tp` up to `end_offset` (exclusive) was acknowledged at `at`."""
        batches = self._batches.get(tp)
        if batches is None:
            batches = self._batches[tp] = collections.deque(maxlen=self._kept)
        batches.append((end_offset, at))

    @property
    def partitions(self) -> list[TopicPartition]:
        return list(self._batches)

    def lag(self, committed: Mapping[TopicPartition, int], now: float) -> float | None:
        """Seconds since the oldest batch holding an uncommitted event was published;
        0 when the group has everything; None when it is behind but not moving.

        `committed`: the next offset the group will read, per partition (negative or
        absent: nothing committed, the partition is not counted)."""
        if any(mark > self._marks.get(tp, -1) for tp, mark in committed.items()):
            self._moved_at = now
        self._marks.update(committed)
        oldest: float | None = None
        for tp, batches in self._batches.items():
            mark = committed.get(tp, -1)
            if mark < 0:
                batches.clear()  # not read by this group: nothing to keep
                continue
            while batches and batches[0][0] <= mark:
                batches.popleft()
            if batches and (oldest is None or batches[0][1] < oldest):
                oldest = batches[0][1]
        if oldest is None:
            return 0.0
        if now - self._moved_at >= STALLED_AFTER:
            return None
        return max(0.0, now - oldest)


async def committed_offsets(
    admin: AIOKafkaAdminClient, group: str, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """`group`'s committed offset per named partition (-1 where it committed nothing),
    by an OffsetFetch that names them (the local broker cannot answer one that does not)."""
    if not partitions:
        return {}
    answer = await admin.list_consumer_group_offsets(group, partitions=partitions)
    return {tp: answer[tp].offset if tp in answer else -1 for tp in partitions}


class ConsumerLagWatch:
    """Reads `group`'s committed offsets every `interval` seconds and reports its lag
    (`PublishedOffsets.lag`) to `report`; None while it cannot tell."""

    def __init__(
        self,
        bootstrap: str,
        group: str,
        published: PublishedOffsets,
        report: Callable[[float | None], Awaitable[None]],
        *,
        interval: float = 0.25,
    ) -> None:
        self._bootstrap = bootstrap
        self.group = group
        self._published = published
        self._report = report
        self._interval = interval

    async def run(self) -> None:
        """Runs until cancelled (under `supervise`, restarted after a failure)."""
        admin = AIOKafkaAdminClient(bootstrap_servers=self._bootstrap, request_timeout_ms=2000)
        try:
            await admin.start()
            reported: tuple[float | None, float] | None = None  # (lag, when)
            while True:
                lag: float | None = None
                partitions = self._published.partitions
                with contextlib.suppress(KafkaError, TimeoutError):
                    async with asyncio.timeout(2):
                        marks = await committed_offsets(admin, self.group, partitions)
                    lag = self._published.lag(marks, time.monotonic())
                CONSUMER_LAG.labels(self.group).set(lag or 0.0)
                now = time.monotonic()
                if (
                    reported is None
                    or reported[0] != lag
                    or now - reported[1] >= REPORT_UNCHANGED_EVERY
                ):
                    await self._report(lag)
                    reported = (lag, now)
                await asyncio.sleep(self._interval)
        finally:
            with contextlib.suppress(Exception):
                await self._report(None)
            await admin.close()
