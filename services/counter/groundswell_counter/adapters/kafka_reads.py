"""Direct reads from a partition, outside any consumer group.

Both exist because of delivery gaps seen on this stack: the local broker's
ListOffsets(latest) undercounts (`fetched_end_offsets` asks Fetch instead), and
faust can skip records around a rebalance (`fetch_records` reads them back, and
`KafkaGapReads` hands them to the counting as faust would have).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

FETCH_TIMEOUT_SECONDS = 30
# The local broker holds every Fetch for about half its max wait, records or not
# (measured: 1500 ms -> ~700 ms, 500 -> ~200, 100 -> ~30), so waits are kept short.
FETCH_MAX_WAIT_MS = 100
GAP_READ_CHUNK = 5_000  # records read back at once when faust skipped some

PartitionT = TypeVar("PartitionT", bound=tuple[str, int])


def _reader(servers: Sequence[str]) -> AIOKafkaConsumer:
    return AIOKafkaConsumer(
        bootstrap_servers=list(servers),
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
    )


async def fetched_end_offsets(
    servers: Sequence[str], listed: Mapping[PartitionT, int | None]
) -> dict[PartitionT, int]:
    """The end offset of each partition, from the high-water mark of a Fetch.

    `listed` holds what ListOffsets said: a lower bound on the local broker (the last
    batch's base offset + 1), the exact end on Apache Kafka.
    """
    if not listed:
        return {}
    consumer = _reader(servers)
    await consumer.start()
    try:
        partitions = {TopicPartition(tp[0], tp[1]): tp for tp in listed}
        consumer.assign(list(partitions))
        for partition, tp in partitions.items():
            # Fetching from inside the last batch returns it along with the high-water mark.
            consumer.seek(partition, max((listed[tp] or 0) - 1, 0))
        deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
        while any(consumer.highwater(p) is None for p in partitions):
            if time.monotonic() > deadline:
                raise TimeoutError("no Fetch response to learn partition end offsets from")
            await consumer.getmany(timeout_ms=200, max_records=1)
        ends: dict[PartitionT, int] = {}
        for partition, tp in partitions.items():
            highwater = consumer.highwater(partition)
            assert highwater is not None
            ends[tp] = max(highwater, listed[tp] or 0)
        return ends
    finally:
        await consumer.stop()


async def fetch_records(
    servers: Sequence[str], topic: str, partition: int, start: int, end: int
) -> list[ConsumerRecord[bytes, bytes]]:
    """The records of one partition with offsets in [start, end), in order."""
    if end <= start:
        return []
    consumer = _reader(servers)
    await consumer.start()
    try:
        tp = TopicPartition(topic, partition)
        consumer.assign([tp])
        consumer.seek(tp, start)
        records: list[ConsumerRecord[bytes, bytes]] = []
        deadline = time.monotonic() + FETCH_TIMEOUT_SECONDS
        while await consumer.position(tp) < end:
            if time.monotonic() > deadline:
                raise TimeoutError(f"could not read {topic}[{partition}] {start}..{end}")
            batches = await consumer.getmany(tp, timeout_ms=500)
            records += [r for r in batches.get(tp, []) if start <= r.offset < end]
        return records
    finally:
        await consumer.stop()


@dataclass(frozen=True, slots=True)
class FetchedRecord:
    """A record read back, shaped as faust delivers one (`service_layer.ports.SourceRecord`)."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]
    timestamp: float | None  # seconds

    @classmethod
    def of(cls, record: ConsumerRecord[bytes, bytes]) -> FetchedRecord:
        # aiokafka gives milliseconds, faust's messages seconds, converted as faust does
        # (the watermark compares the two: `domain.processing.from_lost_log`).
        stamp = None if record.timestamp is None else record.timestamp / 1000.0
        return cls(
            record.topic,
            record.partition,
            record.offset,
            record.key,
            record.value,
            record.headers,
            stamp,
        )


class KafkaGapReads:
    """Implements `service_layer.ports.GapReader`."""

    def __init__(self, servers: Sequence[str]) -> None:
        self._servers = list(servers)

    async def skipped(
        self, topic: str, partition: int, start: int, end: int
    ) -> AsyncIterator[list[FetchedRecord]]:
        while start < end:
            stop = min(end, start + GAP_READ_CHUNK)
            chunk = await fetch_records(self._servers, topic, partition, start, stop)
            yield [FetchedRecord.of(record) for record in chunk]
            start = stop
