"""Signing refuses new signatures while the ones it accepted wait for the counter
(service_layer/backlog.py): the relay reads the watched group's committed offsets on the
real broker, against the offsets its own batches took (groundswell_runtime.consumer_lag),
and writes the lag into signing's database, where admission reads it."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import OffsetAndMetadata
from groundswell_contracts.topics import Topic

from .conftest import SettingsFactory, start_harness


async def _commit(bootstrap: str, group: str, marks: dict[TopicPartition, int]) -> None:
    """Commit `marks` for `group` as its consumer would (without joining it)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(marks))
        await consumer.commit({tp: OffsetAndMetadata(mark, "") for tp, mark in marks.items()})
    finally:
        await consumer.stop()


async def test_signing_sheds_while_the_counter_is_behind(signing_settings: SettingsFactory) -> None:
    group = f"counter-{uuid.uuid4().hex[:8]}"
    settings = signing_settings(admission_consumers=[group], max_outbox_age_ms=400)
    tps = [TopicPartition(Topic.SIGNATURES, p) for p in range(settings.kafka_topic_partitions)]

    async for harness in start_harness(settings):
        slug = (await harness.create_petition(requires_confirmation=False))["slug"]
        for _ in range(8):
            assert (await harness.sign(slug)).status_code == 202
        await _published(harness.pool)
        # A group that has committed nothing is not counted: no lag, nothing refused.
        await asyncio.sleep(0.6)
        assert await _lag(harness.pool, group) == 0.0
        # The group starts from the beginning of every partition and stays there: what
        # this relay published waits for it, longer and longer.
        await _commit(settings.kafka_bootstrap_servers, group, dict.fromkeys(tps, 0))
        refused = None
        async with asyncio.timeout(4):  # within STALLED_AFTER: it counts as moving
            for _ in range(200):
                answer = await harness.sign(slug)
                if answer.status_code == 503:
                    refused = answer
                    break
                assert answer.status_code == 202, answer.text
                await asyncio.sleep(0.05)
        assert refused is not None, "never shed although the counter fell behind"
        assert refused.headers["retry-after"]
        assert (await _lag(harness.pool, group)) > 0.4
        # Caught up with everything published (the signatures accepted just now too): no lag.
        await _published(harness.pool)
        ends = await _ends(settings.kafka_bootstrap_servers, tps)
        await _commit(settings.kafka_bootstrap_servers, group, ends)
        async with asyncio.timeout(5):
            while await _lag(harness.pool, group) != 0.0:
                await asyncio.sleep(0.1)


async def _published(pool: asyncpg.Pool) -> None:
    async with asyncio.timeout(30):
        while await pool.fetchval("SELECT count(*) FROM signing.outbox"):
            await asyncio.sleep(0.1)


async def _lag(pool: asyncpg.Pool, group: str) -> float | None:
    lag: float | None = await pool.fetchval(
        "SELECT max(seconds) FROM signing.consumer_lag WHERE consumer = $1", group
    )
    return lag


async def _ends(bootstrap: str, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
    """High-water marks from a Fetch (the local broker's ListOffsets undercounts)."""
    reader = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await reader.start()
    try:
        reader.assign(tps)
        await reader.seek_to_end(*tps)
        for tp in tps:
            reader.seek(tp, max(await reader.position(tp) - 1, 0))
        async with asyncio.timeout(10):
            while any(reader.highwater(tp) is None for tp in tps):
                await reader.getmany(timeout_ms=200)
        return {tp: reader.highwater(tp) or 0 for tp in tps}
    finally:
        await reader.stop()
