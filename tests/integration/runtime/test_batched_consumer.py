"""A partition's events applied in one transaction; a bad one fails alone; a consumer
yielding to a surge takes in nothing until it passes (runtime consumer)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import asyncpg
from aiokafka import AIOKafkaConsumer
from groundswell_contracts.events import AnyEvent, SignatureConfirmed, encode
from groundswell_contracts.topics import dead_letter_topic
from groundswell_runtime.consumer import EventConsumer, InTransaction, PermanentError
from groundswell_runtime.kafka import ensure_topics, make_consumer, make_producer
from groundswell_stack.infra import Infra
from prometheus_client import REGISTRY

from ...conftest import PressureDial


class Recorder:
    """Writes each event's id; refuses one event forever; counts its transactions."""

    def __init__(self, poison: uuid.UUID | None) -> None:
        self.poison = poison
        self.transactions: set[int] = set()

    async def __call__(self, conn: asyncpg.Connection, event: AnyEvent) -> None:
        self.transactions.add(await conn.fetchval("SELECT txid_current()"))
        if event.event_id == self.poison:
            raise PermanentError("this one can never be applied")
        await conn.execute("INSERT INTO applied (event_id) VALUES ($1)", event.event_id)


async def published(
    infra: Infra, database: str, events: list[SignatureConfirmed]
) -> tuple[str, str, asyncpg.Pool]:
    """A new one-partition topic holding `events`, a new consumer name, and a pool on
    `database` with an empty `applied` table."""
    topic = f"batched-{uuid.uuid4().hex[:8]}"
    name = f"batched-{uuid.uuid4().hex[:8]}"
    await ensure_topics(infra.kafka_bootstrap, 1, 1, [topic, dead_letter_topic(name)])
    pool = await asyncpg.create_pool(database)
    assert pool is not None
    await pool.execute("DROP TABLE IF EXISTS applied")
    await pool.execute("CREATE TABLE applied (event_id uuid PRIMARY KEY)")
    producer = make_producer(infra.kafka_bootstrap)
    await producer.start()
    try:
        for event in events:  # all before the consumer starts: one fetch, one batch
            await producer.send(topic, encode(event), key=b"k")
        await producer.flush()
    finally:
        await producer.stop()
    return topic, name, pool


async def consume(
    infra: Infra, database: str, events: list[SignatureConfirmed], poison: uuid.UUID | None
) -> tuple[set[uuid.UUID], int, list[bytes]]:
    """Applied event ids, transactions used, and dead letters, once all good ones applied."""
    topic, name, pool = await published(infra, database, events)
    recorder = Recorder(poison)
    good = len(events) - (poison is not None)

    consumer = make_consumer(infra.kafka_bootstrap, name, topic)
    dead_letters = make_producer(infra.kafka_bootstrap)
    await consumer.start()
    await dead_letters.start()
    handler = InTransaction(pool, recorder)
    task = asyncio.create_task(EventConsumer(name, consumer, dead_letters, handler).run())
    try:
        async with asyncio.timeout(60):
            while await pool.fetchval("SELECT count(*) FROM applied") < good:
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await dead_letters.stop()

    applied = {r["event_id"] for r in await pool.fetch("SELECT event_id FROM applied")}
    await pool.close()
    reader = AIOKafkaConsumer(
        dead_letter_topic(name),
        bootstrap_servers=infra.kafka_bootstrap,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        batch = await reader.getmany(timeout_ms=3000)
    finally:
        await reader.stop()
    dead = [r.value or b"" for records in batch.values() for r in records]
    return applied, len(recorder.transactions), dead


def confirmations(n: int) -> list[SignatureConfirmed]:
    return [
        SignatureConfirmed(petition_id=uuid.uuid4(), signature_id=uuid.uuid4()) for _ in range(n)
    ]


async def test_a_partitions_fetch_is_applied_in_one_transaction(
    infra: Infra, fresh_database: str
) -> None:
    events = confirmations(50)
    applied, transactions, dead = await consume(infra, fresh_database, events, None)
    assert applied == {e.event_id for e in events} and dead == []
    assert transactions <= 5  # one per fetch (one event per transaction would be 50)


async def test_a_bad_event_in_a_batch_fails_alone(infra: Infra, fresh_database: str) -> None:
    events = confirmations(50)
    poison = events[20].event_id
    applied, transactions, dead = await consume(infra, fresh_database, events, poison)
    assert applied == {e.event_id for e in events} - {poison}
    # The batch was tried, rolled back, then replayed one event per transaction.
    assert transactions > 50
    assert len(dead) == 1 and str(poison) in dead[0].decode()


async def test_a_consumer_yielding_to_a_surge_waits_then_takes_everything(
    infra: Infra, fresh_database: str, pressure: PressureDial
) -> None:
    events = confirmations(20)
    topic, name, pool = await published(infra, fresh_database, events)

    async def apply(conn: asyncpg.Connection, event: AnyEvent) -> None:
        await conn.execute("INSERT INTO applied (event_id) VALUES ($1)", event.event_id)

    async def applied() -> int:
        return int(await pool.fetchval("SELECT count(*) FROM applied"))

    surge = pressure.surge_yield(interval=0.01)
    sampler = asyncio.create_task(surge.run())
    consumer = make_consumer(infra.kafka_bootstrap, name, topic)
    dead_letters = make_producer(infra.kafka_bootstrap)
    await consumer.start()
    await dead_letters.start()
    task: asyncio.Task[None] | None = None
    try:
        async with asyncio.timeout(5):
            while not surge.yielding:
                await asyncio.sleep(0.01)
        handler = InTransaction(pool, apply)
        task = asyncio.create_task(
            EventConsumer(name, consumer, dead_letters, handler, surge=surge).run()
        )
        await asyncio.sleep(2.5)
        assert await applied() == 0
        # Alive all along: the poll timestamp moves while it waits.
        first_seen = last_poll(name)
        await asyncio.sleep(1.2)
        assert last_poll(name) > first_seen
        assert await applied() == 0

        pressure.share = 0.0  # the surge passes
        async with asyncio.timeout(30):
            while await applied() < len(events):
                await asyncio.sleep(0.05)
        rows = await pool.fetch("SELECT event_id FROM applied")
        assert {r["event_id"] for r in rows} == {e.event_id for e in events}
    finally:
        for running in (task, sampler):
            if running is not None:
                running.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await running
        await consumer.stop()
        await dead_letters.stop()
        await pool.close()


def last_poll(consumer: str) -> float:
    value = REGISTRY.get_sample_value(
        "groundswell_consumer_last_poll_timestamp_seconds", {"consumer": consumer}
    )
    assert value is not None
    return value
