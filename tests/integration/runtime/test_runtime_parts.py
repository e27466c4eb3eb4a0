"""The runtime's own parts without a service around them: migrations, supervised loops,
and the consumer's patience with a database that is away."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from groundswell_contracts.events import AnyEvent, SignatureConfirmed, encode
from groundswell_contracts.topics import dead_letter_topic
from groundswell_runtime.background import supervise
from groundswell_runtime.consumer import EventConsumer
from groundswell_runtime.db import Migration, create_pool, migrate
from groundswell_runtime.kafka import ensure_topics, make_consumer, make_producer
from groundswell_runtime.outbox import (
    LOCK_FOR_A_PASS,
    OutboxRelay,
    RelayWakeup,
    notify_channel,
    outbox_migration,
    take_batch,
)
from groundswell_stack.infra import Infra


async def test_migrations_apply_once_in_order_and_a_failing_one_alone(
    fresh_database: str,
) -> None:
    schema = f"m{uuid.uuid4().hex[:8]}"
    first = [
        Migration("001_a.sql", "CREATE TABLE a (n int)"),
        Migration("002_b.sql", "INSERT INTO a VALUES (1)"),
    ]
    # Two services starting together: the advisory lock lets one apply, the other finds
    # nothing left to do.
    results = await asyncio.gather(
        migrate(fresh_database, schema, first), migrate(fresh_database, schema, first)
    )
    assert sorted(results, key=len) == [[], ["001_a.sql", "002_b.sql"]]

    broken = [*first, Migration("003_c.sql", "INSERT INTO a VALUES (3); SELECT nonsense")]
    with pytest.raises(asyncpg.PostgresError):
        await migrate(fresh_database, schema, broken)
    conn = await asyncpg.connect(fresh_database)
    try:
        # 003 rolled back whole: its first statement left nothing behind.
        assert await conn.fetchval(f"SELECT array_agg(n ORDER BY n) FROM {schema}.a") == [1]
    finally:
        await conn.close()
    fixed = [*first, Migration("003_c.sql", "INSERT INTO a VALUES (3)")]
    assert await migrate(fresh_database, schema, fixed) == ["003_c.sql"]
    assert await migrate(fresh_database, schema, fixed) == []


async def test_a_supervised_loop_is_restarted_until_it_returns() -> None:
    runs = 0

    async def flaky() -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise ConnectionError("the broker went away")

    await asyncio.wait_for(supervise("flaky", flaky, max_backoff=0.5), timeout=30)
    assert runs == 3  # failed twice, restarted each time, then returned: no more runs

    async def stops() -> None:
        nonlocal runs
        runs += 1

    await supervise("stops", stops)
    assert runs == 4  # a loop that returns is a requested stop: never restarted


async def test_a_database_that_is_away_is_waited_for_never_dead_lettered(infra: Infra) -> None:
    topic = f"patient-{uuid.uuid4().hex[:8]}"
    name = f"patient-{uuid.uuid4().hex[:8]}"
    await ensure_topics(infra.kafka_bootstrap, 1, 1, [topic, dead_letter_topic(name)])
    event = SignatureConfirmed(petition_id=uuid.uuid4(), signature_id=uuid.uuid4())
    producer = make_producer(infra.kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topic, encode(event), key=b"k")
    finally:
        await producer.stop()

    attempts: list[uuid.UUID] = []
    applied = asyncio.Event()

    async def handler(got: AnyEvent) -> None:
        attempts.append(got.event_id)
        if len(attempts) <= 6:  # more than any attempt limit for a failing event
            raise asyncpg.CannotConnectNowError("the database system is starting up")
        applied.set()

    consumer = make_consumer(infra.kafka_bootstrap, name, topic)
    dead_letters = make_producer(infra.kafka_bootstrap)
    await consumer.start()
    await dead_letters.start()
    task = asyncio.create_task(EventConsumer(name, consumer, dead_letters, handler).run())
    try:
        await asyncio.wait_for(applied.wait(), timeout=60)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await dead_letters.stop()
    assert attempts == [event.event_id] * 7
    reader = make_consumer(infra.kafka_bootstrap, None, dead_letter_topic(name))
    await reader.start()
    try:
        batch = await reader.getmany(timeout_ms=2000)
    finally:
        await reader.stop()
    assert not any(batch.values())  # nothing dead-lettered


async def test_a_relay_pass_reads_the_outbox_by_plain_index_scans(fresh_database: str) -> None:
    """Dead rows are most of an outbox between vacuums: only a plain index scan learns to
    skip them (groundswell_runtime.db, `INDEX_SCANS_ONLY`). Left to itself the planner
    takes a bitmap scan and a sort here, which reads every dead row's page on every pass."""
    schema = f"o{uuid.uuid4().hex[:8]}"
    await migrate(fresh_database, schema, [outbox_migration()])
    conn = await asyncpg.connect(fresh_database)
    try:
        await conn.execute(
            f"INSERT INTO {schema}.outbox (event_id, event_type, topic, message_key, payload) "
            "SELECT gen_random_uuid(), 'E', 't', 'k', repeat('x', 600) "
            "FROM generate_series(1, 30000)"
        )
        await conn.execute(f"DELETE FROM {schema}.outbox WHERE id <= 28000")
        explain = f"EXPLAIN {take_batch(schema)}"
        async with conn.transaction():
            assert await conn.fetchval(LOCK_FOR_A_PASS, 1)
            plan = "\n".join(r[0] for r in await conn.fetch(explain, 500))
        assert "Index Scan using outbox_pending" in plan
        assert "Bitmap" not in plan and "Seq Scan" not in plan and "Sort" not in plan
    finally:
        await conn.close()


async def test_pooled_connections_never_compile_statements(fresh_database: str) -> None:
    pool = await create_pool(fresh_database, max_size=1)
    try:
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW jit") == "off"
    finally:
        await pool.close()


class CountingRelay(OutboxRelay):
    """Publishes nothing: counts the passes `run` makes; the first `full_passes` of them
    find a whole batch waiting."""

    passes = 0
    full_passes = 0

    async def publish_batch(self) -> int:
        self.passes += 1
        return self._batch_size if self.passes <= self.full_passes else 0


@contextlib.asynccontextmanager
async def counting_relay(
    database: str, full_passes: int = 0
) -> AsyncIterator[tuple[CountingRelay, asyncpg.Pool, str]]:
    """A running `CountingRelay` with a 1-s pass interval, its pool and its schema."""
    schema = f"o{uuid.uuid4().hex[:8]}"
    await migrate(database, schema, [outbox_migration()])
    pool = await create_pool(database, max_size=2)
    relay = CountingRelay(pool, schema, "127.0.0.1:1", pass_interval=1.0, poll_interval=60)
    relay.full_passes = full_passes
    running = asyncio.create_task(relay.run())
    try:
        yield relay, pool, schema
    finally:
        running.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await running
        await pool.close()


async def test_the_relay_makes_at_most_one_pass_per_interval(fresh_database: str) -> None:
    """Under load every signing batch wakes the relay; passes come no closer together
    than `pass_interval`, however many wake-ups there are."""
    async with counting_relay(fresh_database) as (relay, pool, schema):
        await asyncio.sleep(0.2)  # the first pass, at once
        assert relay.passes == 1
        for _ in range(10):  # a burst of wake-ups within the interval
            await pool.execute(f"SELECT pg_notify('{notify_channel(schema)}', '')")
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        assert relay.passes == 1  # not before the interval is over
        await asyncio.sleep(1.0)
        assert relay.passes == 2  # then one pass for the whole burst
        await asyncio.sleep(1.0)
        assert relay.passes == 2  # and none without a new wake-up


async def test_a_full_batch_is_followed_by_the_next_pass_at_once(fresh_database: str) -> None:
    """The interval spaces wake-ups, not a backlog: with a pause after every full batch
    the relay could never publish more than a batch per interval."""
    async with counting_relay(fresh_database, full_passes=3) as (relay, _, _):
        await asyncio.sleep(0.3)  # well within one interval
        assert relay.passes == 4  # three full batches, then the one that was not
        await asyncio.sleep(1.2)
        assert relay.passes == 4  # then it waits for a wake-up again


async def test_a_wakeup_after_commits_reaches_the_relay_and_bursts_share_one(
    fresh_database: str,
) -> None:
    """Signing wakes its relay after each batch's commit, from outside it (the coalescing
    while a NOTIFY is on its way: tests/unit/runtime/test_relay_wakeup.py)."""
    schema = f"o{uuid.uuid4().hex[:8]}"
    pool = await create_pool(fresh_database, max_size=2)
    listener = await asyncpg.connect(fresh_database)
    heard: asyncio.Queue[str] = asyncio.Queue()
    await listener.add_listener(notify_channel(schema), lambda *args: heard.put_nowait(args[2]))
    wake = RelayWakeup(pool, schema)

    async def notifications() -> int:
        await asyncio.sleep(0.5)  # delivered within milliseconds; wait well past that
        count = heard.qsize()
        while not heard.empty():
            heard.get_nowait()
        return count

    try:
        for _ in range(5):  # all before the NOTIFY leaves: it follows every one of them
            wake()
        assert await notifications() == 1
        wake()
        assert await notifications() == 1
        assert await notifications() == 0  # nothing without a call
    finally:
        await wake.close()
        await listener.close()
        await pool.close()
