"""A consumer yielding to a surge takes in nothing, stays alive and in its group, and takes
in everything once the surge passes (runtime consumer + surge_yield, real broker)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
from groundswell_contracts.events import AnyEvent, SignatureConfirmed, encode
from groundswell_contracts.topics import dead_letter_topic
from groundswell_runtime.consumer import EventConsumer, InTransaction
from groundswell_runtime.kafka import ensure_topics, make_consumer, make_producer
from groundswell_stack.infra import Infra
from prometheus_client import REGISTRY

from ...conftest import PressureDial


def last_poll(consumer: str) -> float:
    value = REGISTRY.get_sample_value(
        "groundswell_consumer_last_poll_timestamp_seconds", {"consumer": consumer}
    )
    assert value is not None
    return value


async def test_a_yielding_consumer_waits_then_takes_everything(
    infra: Infra, fresh_database: str, pressure: PressureDial
) -> None:
    topic = f"yield-{uuid.uuid4().hex[:8]}"
    name = f"yield-{uuid.uuid4().hex[:8]}"
    await ensure_topics(infra.kafka_bootstrap, 1, 1, [topic, dead_letter_topic(name)])
    pool = await asyncpg.create_pool(fresh_database)
    assert pool is not None
    await pool.execute("CREATE TABLE applied (event_id uuid PRIMARY KEY)")

    async def apply(conn: asyncpg.Connection, event: AnyEvent) -> None:
        await conn.execute("INSERT INTO applied (event_id) VALUES ($1)", event.event_id)

    events = [
        SignatureConfirmed(petition_id=uuid.uuid4(), signature_id=uuid.uuid4()) for _ in range(20)
    ]
    producer = make_producer(infra.kafka_bootstrap)
    await producer.start()
    try:
        for event in events:
            await producer.send(topic, encode(event), key=b"k")
        await producer.flush()
    finally:
        await producer.stop()

    surge = pressure.surge_yield(interval=0.01)
    sampler = asyncio.create_task(surge.run())
    consumer = make_consumer(infra.kafka_bootstrap, name, topic)
    dead_letters = make_producer(infra.kafka_bootstrap)
    await consumer.start()
    await dead_letters.start()
    running = EventConsumer(
        name, consumer, dead_letters, InTransaction(pool, apply), surge=surge
    ).run()
    task: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(5):
            while not surge.yielding:
                await asyncio.sleep(0.01)
        task = asyncio.create_task(running)
        await asyncio.sleep(2.5)
        assert await pool.fetchval("SELECT count(*) FROM applied") == 0
        # Alive all along: the poll timestamp moved while it waited.
        first_seen = last_poll(name)
        await asyncio.sleep(1.2)
        assert last_poll(name) > first_seen
        assert await pool.fetchval("SELECT count(*) FROM applied") == 0

        pressure.share = 0.0  # the surge passes
        async with asyncio.timeout(30):
            while await pool.fetchval("SELECT count(*) FROM applied") < len(events):
                await asyncio.sleep(0.05)
        applied = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM applied")}
        assert applied == {e.event_id for e in events}
    finally:
        for running_task in (task, sampler):
            if running_task is not None:
                running_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running_task
        if task is None:
            running.close()
        await consumer.stop()
        await dead_letters.stop()
        await pool.close()
