"""The outbox relay hands its rows to the broker as record batches
(groundswell_runtime.outbox.send_in_batches): same partitions as `producer.send`, same
per-key order, every header, full batches followed by new ones, a record over the batch
size delivered whole, and the offsets each batch took."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

from aiokafka import AIOKafkaConsumer
from groundswell_runtime.kafka import ensure_topics, make_producer
from groundswell_runtime.outbox import send_in_batches
from groundswell_stack.infra import Infra

PARTITIONS = 4
KEYS = [str(uuid.uuid4()) for _ in range(12)]


def _rows(topic: str) -> list[dict[str, Any]]:
    rows = []
    for n in range(300):
        key = KEYS[n % len(KEYS)]
        # ~1 KB each: a partition's share of the pass fills several 16 KB batches.
        payload = {"n": n, "pad": "x" * (40_000 if n == 150 else 1_000)}
        rows.append(
            {
                "topic": topic,
                "message_key": key,
                "payload": json.dumps(payload),
                "event_type": "SignatureCreated",
                "correlation_id": None if n % 3 else f"corr-{n}",
            }
        )
    return rows


async def _read_all(bootstrap: str, topic: str, count: int) -> list[Any]:
    reader = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
    await reader.start()
    records: list[Any] = []
    try:
        async with asyncio.timeout(30):
            while len(records) < count:
                for batch in (await reader.getmany(timeout_ms=500)).values():
                    records.extend(batch)
    finally:
        await reader.stop()
    return records


async def test_rows_go_where_send_puts_their_key_in_order_with_their_headers(
    infra: Infra,
) -> None:
    batched, single = (
        f"outbox-batches-{uuid.uuid4().hex[:8]}",
        f"outbox-single-{uuid.uuid4().hex[:8]}",
    )
    await ensure_topics(infra.kafka_bootstrap, PARTITIONS, 1, [batched, single])
    rows = _rows(batched)
    producer = make_producer(infra.kafka_bootstrap)
    await producer.start()
    try:
        # Where `send` (the producer's own partitioner) puts each key.
        sent = [await (await producer.send(single, b"-", key=k.encode())) for k in KEYS]
        partition_of = {k: meta.partition for k, meta in zip(KEYS, sent, strict=True)}
        deliveries = await send_in_batches(producer, rows)
        delivered = await asyncio.gather(*(sent for sent, _ in deliveries))
    finally:
        await producer.stop()
    used = {partition_of[k] for k in KEYS}
    assert len(deliveries) > len(used), "the batches never filled up"

    records = await _read_all(infra.kafka_bootstrap, batched, len(rows))
    assert len(records) == len(rows)
    seen: dict[str, list[int]] = {}
    for record in records:
        key = record.key.decode()
        payload = json.loads(record.value)
        assert record.partition == partition_of[key], key
        seen.setdefault(key, []).append(payload["n"])
        expected = [("event_type", b"SignatureCreated")]
        if payload["n"] % 3 == 0:
            expected.append(("correlation_id", f"corr-{payload['n']}".encode()))
        assert list(record.headers) == expected
        assert len(payload["pad"]) == (40_000 if payload["n"] == 150 else 1_000)
    for key, numbers in seen.items():
        assert numbers == sorted(numbers), key
        assert numbers == [n for n in range(300) if KEYS[n % len(KEYS)] == key]
    # Each batch's acknowledged base offset and record count give the offsets it took
    # (what a consumer's lag is measured against, groundswell_runtime.consumer_lag): per
    # partition the batches follow one another from 0, and end where its records do.
    offsets = {r.partition: [] for r in records}
    for r in records:
        offsets[r.partition].append(r.offset)
    taken: dict[int, list[tuple[int, int]]] = {}
    for meta, (_, count) in zip(delivered, deliveries, strict=True):
        taken.setdefault(meta.partition, []).append((meta.offset, meta.offset + count))
    for partition, spans in taken.items():
        spans.sort()
        assert spans[0][0] == 0
        assert all(end == start for (_, end), (start, _) in itertools.pairwise(spans))
        assert spans[-1][1] == max(offsets[partition]) + 1 == len(offsets[partition])
