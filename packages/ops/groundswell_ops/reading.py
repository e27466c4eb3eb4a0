"""Reading records: fixed offset ranges (dlq, trace, tail without follow) or live (tail).

Readers are assigned partitions by hand and never join a consumer group, so looking
at a topic never moves anybody's offsets or triggers a rebalance.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import TypeAlias

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from groundswell_ops.cluster import REQUEST_TIMEOUT_MS, unreachable
from groundswell_ops.errors import OpsError
from groundswell_ops.lag import TP

# The local broker holds a Fetch for about half its max wait: keep it short.
FETCH_MAX_WAIT_MS = 100
# A range that makes no progress for this long is reported instead of waited on forever.
STALL_SECONDS = 30.0

Record: TypeAlias = ConsumerRecord[bytes, bytes]


@asynccontextmanager
async def reader(bootstrap: str, group_id: str | None = None) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer outside any group; `group_id` only to commit offsets (never subscribes)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
        request_timeout_ms=REQUEST_TIMEOUT_MS + 1000,
    )
    try:
        await asyncio.wait_for(consumer.start(), REQUEST_TIMEOUT_MS / 1000)
    except (KafkaError, OSError, TimeoutError) as exc:
        await consumer.stop()
        raise unreachable(bootstrap, exc) from None
    try:
        yield consumer
    finally:
        await consumer.stop()


async def read_ranges(
    consumer: AIOKafkaConsumer, ranges: Mapping[TP, tuple[int, int]]
) -> AsyncIterator[Record]:
    """Every record with start <= offset < end per partition, each partition in order."""
    todo = {TopicPartition(*tp): bounds for tp, bounds in ranges.items() if bounds[1] > bounds[0]}
    if not todo:
        return
    consumer.assign(list(todo))
    for tp, (start, _) in todo.items():
        consumer.seek(tp, start)
    last_progress = time.monotonic()
    while todo:
        batches = await consumer.getmany(*todo, timeout_ms=500)
        for tp, records in batches.items():
            end = todo.get(tp, (0, 0))[1]
            for record in records:
                if record.offset < end:
                    yield record
        progressed = bool(batches)
        for tp in list(todo):
            if await consumer.position(tp) >= todo[tp][1]:
                del todo[tp]
                consumer.pause(tp)
                progressed = True
        if progressed:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > STALL_SECONDS:
            left = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in todo)
            raise OpsError(f"reading stalled for {STALL_SECONDS:.0f}s on {left}")


async def follow(consumer: AIOKafkaConsumer, starts: Mapping[TP, int]) -> AsyncIterator[Record]:
    """Records from the given offsets on, as they arrive, until cancelled."""
    partitions = [TopicPartition(*tp) for tp in starts]
    consumer.assign(partitions)
    for tp in partitions:
        consumer.seek(tp, starts[(tp.topic, tp.partition)])
    while True:
        batches = await consumer.getmany(timeout_ms=500)
        for records in batches.values():
            for record in records:
                yield record
