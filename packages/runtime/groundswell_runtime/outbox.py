"""Transactional outbox: events are rows written in the caller's transaction.

`enqueue` writes the event into `<schema>.outbox` inside the same transaction as
the business change, so the event exists if and only if the change committed.
`OutboxRelay` takes pending rows in id order, deleting them in the same transaction,
and commits once the broker has them: an outbox row may hold sealed personal data or a
data key, and nothing needs it after publication (a rebuild replays from the business
tables, not from here).

Only one relay publishes at a time (a transaction-scoped advisory lock), which keeps
per-petition order even with several service instances; rows are also taken
`FOR UPDATE SKIP LOCKED` so no two relays can hold the same row. If the broker is
down the relay backs off and retries; nothing is lost because no deletion commits
until the broker has acknowledged it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
import zlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Any
from uuid import UUID

import asyncpg
import structlog
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.producer.message_accumulator import BatchBuilder
from aiokafka.structs import RecordMetadata
from groundswell_contracts.events import BaseEvent, encode_text, topic_for
from groundswell_contracts.headers import CORRELATION_ID, EVENT_TYPE
from prometheus_client import Counter, Gauge

from groundswell_runtime.consumer_lag import PublishedOffsets
from groundswell_runtime.correlation import current_correlation_id
from groundswell_runtime.db import INDEX_SCANS_ONLY, TEMPORARY_DATABASE_ERRORS, Migration
from groundswell_runtime.kafka import make_producer

log = structlog.get_logger()

OUTBOX_PUBLISHED = Counter(
    "groundswell_outbox_published_total", "Outbox rows published to Kafka", ["schema"]
)
OUTBOX_PENDING = Gauge(
    "groundswell_outbox_pending", "Outbox rows waiting to be published", ["schema"]
)
OUTBOX_FAILURES = Counter(
    "groundswell_outbox_publish_failures_total", "Failed publish attempts", ["schema"]
)
OUTBOX_OLDEST_AGE = Gauge(
    "groundswell_outbox_oldest_age_seconds",
    "Age of the oldest row in the last batch the relay published (0 when idle)",
    ["schema"],
)
OUTBOX_LAST_PROGRESS = Gauge(
    "groundswell_outbox_last_progress_timestamp_seconds",
    "When the relay last finished a pass (published, or found nothing to publish)",
    ["schema"],
)

# A relay that has not finished a pass for this long is stuck (its pass runs every
# second when idle): readiness says so.
STALL_SECONDS = 15.0

OUTBOX_DDL = """
CREATE TABLE outbox (
    id             bigserial PRIMARY KEY,
    event_id       uuid        NOT NULL,
    event_type     text        NOT NULL,
    topic          text        NOT NULL,
    message_key    text        NOT NULL,
    payload        text        NOT NULL,
    correlation_id text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);
CREATE INDEX outbox_pending ON outbox (id) WHERE published_at IS NULL;
CREATE INDEX outbox_published ON outbox (published_at) WHERE published_at IS NOT NULL;
"""


def outbox_migration() -> Migration:
    return Migration("000_outbox.sql", OUTBOX_DDL)


def notify_channel(schema: str) -> str:
    return f"{schema}_outbox"


async def enqueue(conn: asyncpg.Connection, schema: str, *events: BaseEvent) -> None:
    """Write events into the outbox; call inside the transaction that makes the change."""
    cid = current_correlation_id()
    await enqueue_correlated(conn, schema, [(e, cid) for e in events])


OutboxRow = tuple[UUID, str, str, str, str, str | None]


def outbox_row(event: BaseEvent, correlation_id: str | None) -> OutboxRow:
    """An event as the outbox's columns: (event_id, event_type, topic, message_key,
    payload, correlation_id)."""
    return (
        event.event_id,
        event.event_type,
        topic_for(event).value,
        event.key,
        encode_text(event),
        correlation_id,
    )


def outbox_columns(
    events: Sequence[tuple[BaseEvent, str | None]],
) -> tuple[list[Any], list[Any], list[Any], list[Any], list[Any], list[Any]]:
    """Events as the outbox's column arrays (`outbox_row`'s columns), for a multi-row
    insert from `unnest`."""
    columns: tuple[list[Any], ...] = ([], [], [], [], [], [])
    for event, cid in events:
        for column, value in zip(columns, outbox_row(event, cid), strict=True):
            column.append(value)
    return columns  # type: ignore[return-value]


async def enqueue_correlated(
    conn: asyncpg.Connection,
    schema: str,
    events: Sequence[tuple[BaseEvent, str | None]],
    *,
    notify: bool = True,
) -> None:
    """`enqueue` for events of several requests at once (group commit): each event carries
    the correlation id of the request it came from. One statement, however many events.
    `notify=False` leaves waking the relay to the caller, after the commit (`RelayWakeup`)."""
    if not events:
        return
    insert = (
        f'INSERT INTO "{schema}".outbox '
        "(event_id, event_type, topic, message_key, payload, correlation_id) "
        "SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::text[], "
        "$6::text[])"
    )
    if not notify:
        await conn.execute(insert, *outbox_columns(events))
        return
    # The rows and the wake-up in one statement (a round trip less per transaction); the
    # notification is delivered at commit, so the relay wakes only for rows it can see.
    await conn.execute(
        f"WITH written AS ({insert} RETURNING 1) SELECT pg_notify($7, '')",
        *outbox_columns(events),
        notify_channel(schema),
    )


# PostgreSQL serialises the commits of all transactions that have NOTIFYed, cluster-wide,
# on one lock held until each commit is flushed (async.c, `PreCommit_Notify`: queue
# entries in commit order). So a writer whose commit must be quick (signing's batches:
# the 202 waits for it) NOTIFYs after its commit, in a transaction of its own that is not
# waited for on disk: a wake-up lost in a crash costs nothing, the relay polls. Measured
# at 1,000 signatures/s end to end, before: 99 waits of 10 ms or more for that lock in
# 45 s, up to 114 ms, behind the mailer's and sharing's commits (docs/performance.md).
_WAKE = (
    "SELECT pg_notify($1, '') "
    "FROM (SELECT set_config('synchronous_commit', 'off', true)) AS unflushed"
)


class RelayWakeup:
    """Wakes a schema's relay after commits that wrote outbox rows, from outside them.

    Call it after such a commit. A NOTIFY already on its way may have left before that
    commit, so one more follows it: every commit is followed by a NOTIFY sent after it,
    and the relay wakes to rows it can see. Commits made while one is on its way, or
    within `spacing` seconds after it was sent, share the next: the relay passes at most
    once per `PASS_INTERVAL` however often it is woken, so NOTIFYs closer together than
    half of that only cost both processes and the database a transaction each (measured
    at 1,000 signatures/s: ~60 a second, one per commit round trip).
    """

    def __init__(self, pool: asyncpg.Pool, schema: str, *, spacing: float | None = None) -> None:
        self._pool = pool
        self._channel = notify_channel(schema)
        self._spacing = PASS_INTERVAL / 2 if spacing is None else spacing
        self._sending: asyncio.Task[None] | None = None
        self._again = False

    def __call__(self) -> None:
        if self._sending is not None and not self._sending.done():
            self._again = True
            return
        self._sending = asyncio.get_running_loop().create_task(self._send())

    async def _send(self) -> None:
        self._again = True
        while self._again:
            self._again = False
            try:
                async with self._pool.acquire() as conn:
                    await conn.execute(_WAKE, self._channel)
            except Exception as exc:  # the relay's poll finds the rows within a second
                log.warning("outbox_wakeup_failed", error=type(exc).__name__)
                return
            if self._spacing > 0:
                await asyncio.sleep(self._spacing)  # calls meanwhile share the next one

    async def close(self) -> None:
        if self._sending is not None:
            self._sending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sending


# At most one pass per this many seconds, however often writers commit: under load every
# signing batch wakes the relay, and a pass costs about the same for 2 rows as for 200
# (round trips, a produce request, the broker's handling of it). Each pass leaves one
# record batch per partition it touches, and the local broker (Tansu) lists every batch
# a partition has ever stored on each Fetch that finds records there, so its CPU grows
# with the number of batches: 300 signatures/s for 120 s, the broker 0.18 -> 0.48 of a
# core at 20 ms, 0.14 -> 0.26 at 100 ms (docs/performance.md). What it costs: under
# load, events reach the broker up to this much later; a lone event goes at once.
PASS_INTERVAL = 0.1


# The pass takes its batch by plain index scans: the outbox is mostly dead rows between
# two vacuums (`db.INDEX_SCANS_ONLY` says why and what was measured).
LOCK_FOR_A_PASS = f"SELECT pg_try_advisory_xact_lock($1) FROM ({INDEX_SCANS_ONLY}) AS settings"


def take_batch(schema: str) -> str:
    """The statement that takes (deletes) up to $1 pending rows, oldest first."""
    return (
        f'DELETE FROM "{schema}".outbox WHERE id = ANY(ARRAY('
        f'SELECT id FROM "{schema}".outbox WHERE published_at IS NULL '
        "ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED)) "
        "RETURNING id, topic, message_key, payload, correlation_id, event_type, "
        "extract(epoch from now() - created_at) AS age"
    )


# What `AIOKafkaProducer.send` uses when no partition is given: murmur2 of the key over
# the topic's partitions sorted by id, so a key lands where it always has.
_PARTITIONER = DefaultPartitioner()


# The partition of a key, remembered: the partitioner is murmur2 in pure Python (4-5 us a
# key, a sixth of the relay's CPU under load), and half of what a signing surge relays
# is keyed by a handful of petitions. Keys seen once (a signature's data key) pass
# through; the petitions', used every few rows, stay.
@functools.lru_cache(maxsize=1024)
def _partition(key: bytes, partitions: tuple[int, ...]) -> int:
    return int(_PARTITIONER(key, list(partitions), []))


# A batch handed to the producer: its delivery (resolving to the broker's record metadata,
# the batch's base offset) and how many records it holds.
Delivery = tuple[asyncio.Future[RecordMetadata], int]


async def send_in_batches(
    producer: AIOKafkaProducer, rows: Sequence[asyncpg.Record]
) -> list[Delivery]:
    """Hand `rows` (in id order) to the producer as record batches, one delivery each.

    `producer.send` per row cost the relay a coroutine, a metadata check, a partitioner
    call and a future for every event; a pass of a few hundred events now fills one
    batch per partition (more when one is full) with the producer's own builder and
    submits each with `send_batch`, the public way to do just that. Rows of a partition
    go into its batches in id order and its batches are submitted in that order, which
    the producer keeps (one request in flight per partition), so per-key order is the
    same as before. Returns the batches' deliveries.
    """
    partitions: dict[str, tuple[int, ...]] = {}
    open_batches: dict[tuple[str, int], BatchBuilder] = {}
    deliveries: list[Delivery] = []
    for row in rows:
        topic = row["topic"]
        if topic not in partitions:
            partitions[topic] = tuple(sorted(await producer.partitions_for(topic)))
        key = row["message_key"].encode()
        value = row["payload"].encode()
        partition = _partition(key, partitions[topic])
        headers = [(EVENT_TYPE, row["event_type"].encode())]
        if row["correlation_id"]:
            headers.append((CORRELATION_ID, row["correlation_id"].encode()))
        record = {"timestamp": None, "key": key, "value": value, "headers": headers}
        batch = open_batches.get((topic, partition))
        if batch is not None and batch.append(**record) is not None:
            continue
        if batch is not None:  # full: it goes, and a new one takes the record
            sent = await producer.send_batch(batch, topic, partition=partition)
            deliveries.append((sent, batch.record_count()))
        batch = open_batches[topic, partition] = producer.create_batch()
        # An empty batch takes any one record, even one over the batch size.
        batch.append(**record)
    for (topic, partition), batch in open_batches.items():
        sent = await producer.send_batch(batch, topic, partition=partition)
        deliveries.append((sent, batch.record_count()))
    return deliveries


class OutboxRelay:
    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        bootstrap: str,
        *,
        batch_size: int = 500,
        poll_interval: float = 1.0,
        pass_interval: float = PASS_INTERVAL,
        producer: AIOKafkaProducer | None = None,
        prepare_broker: Callable[[], Awaitable[None]] | None = None,
        published: PublishedOffsets | None = None,
    ) -> None:
        self._pool = pool
        self._bootstrap = bootstrap
        self._schema = schema
        self._batch_size = batch_size
        self._poll_interval = poll_interval
        self._pass_interval = pass_interval
        self._producer = producer or make_producer(bootstrap)
        self._producer_started = producer is not None
        self._wakeup = asyncio.Event()
        self._lock_key = zlib.crc32(f"outbox:{schema}".encode())
        self._last_prune = 0.0
        self.broker_ok = False
        # Run before the first publish and after every outage: a broker that lost its
        # state (the memory-only local one) needs its topics again.
        self._prepare_broker = prepare_broker
        self._broker_prepared = False
        self._last_progress = time.monotonic()
        # Told the offsets each delivered batch took, for a consumer's lag (consumer_lag).
        self._published = published

    def stalled(self) -> bool:
        """True when no pass has finished for a while: broker or database away, or stuck."""
        return time.monotonic() - self._last_progress > STALL_SECONDS

    def _progressed(self) -> None:
        self._last_progress = time.monotonic()
        OUTBOX_LAST_PROGRESS.labels(self._schema).set_to_current_time()

    async def _ensure_producer(self) -> None:
        if self._producer_started:
            return
        try:
            await self._producer.start()
        except BaseException:
            # A producer whose start failed cannot be started again: make a fresh one.
            await self._producer.stop()
            self._producer = make_producer(self._bootstrap)
            raise
        self._producer_started = True

    async def _discard_producer(self) -> None:
        """Start again with a fresh producer: no stale metadata, no half-sent batches.

        Rows of a failed batch stay pending and are sent again; a copy the old producer
        still delivers is a duplicate that consumers drop by event id.
        """
        if self._producer_started:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), timeout=5)
            self._producer_started = False
        self._producer = make_producer(self._bootstrap)

    async def publish_batch(self) -> int:
        """Publish up to one batch; returns how many rows were published."""
        if self._prepare_broker is not None and not self._broker_prepared:
            await self._prepare_broker()
            self._broker_prepared = True
        await self._ensure_producer()
        async with self._pool.acquire() as conn, conn.transaction():
            # With the lock, in the same round trip: plain index scans for this pass.
            if not await conn.fetchval(LOCK_FOR_A_PASS, self._lock_key):
                self._progressed()  # another relay (another worker process) is publishing
                return 0
            # Taken and deleted in one statement (a round trip less than SELECT, then
            # DELETE): the deletion is undone by the rollback if any delivery fails below,
            # so the rows stay pending until the broker has them. ARRAY(...) makes the
            # choice of rows an init plan, run exactly once: with `id IN (subquery)` the
            # planner, misled by the statistics of a table that is empty between bursts,
            # chose a nested loop that ran the subquery again for every outbox row
            # (measured at 1,000 signatures/s: 0.35 s and 426,000 buffer reads per pass).
            rows = await conn.fetch(take_batch(self._schema), self._batch_size)
            if not rows:
                self._progressed()
                OUTBOX_OLDEST_AGE.labels(self._schema).set(0)
                return 0
            # RETURNING has no order of its own; events go out in id order (per-key order).
            rows.sort(key=lambda row: row["id"])
            OUTBOX_OLDEST_AGE.labels(self._schema).set(float(rows[0]["age"]))
            deliveries = await send_in_batches(self._producer, rows)
            # Any failed delivery raises here and rolls the whole batch back, deletion
            # included: rows stay pending and are retried (consumers dedupe the ones that
            # did land). Committing below is what removes them.
            delivered = await asyncio.gather(*(sent for sent, _ in deliveries))
        if self._published is not None:
            at = time.monotonic()
            for meta, (_, count) in zip(delivered, deliveries, strict=True):
                self._published.published(meta.topic_partition, meta.offset + count, at)
        OUTBOX_PUBLISHED.labels(self._schema).inc(len(rows))
        self._progressed()
        return len(rows)

    async def pending(self) -> int:
        async with self._pool.acquire() as conn:
            return int(
                await conn.fetchval(
                    f'SELECT count(*) FROM "{self._schema}".outbox WHERE published_at IS NULL'
                )
            )

    async def prune(self) -> int:
        """Rows an older relay marked published instead of deleting (upgrades)."""
        async with self._pool.acquire() as conn:
            status = await conn.execute(
                f'DELETE FROM "{self._schema}".outbox WHERE published_at IS NOT NULL'
            )
        return int(status.split()[-1])

    def _on_notify(self, *_args: object) -> None:
        self._wakeup.set()

    async def run(self) -> None:
        listener = await self._pool.acquire()
        await listener.add_listener(notify_channel(self._schema), self._on_notify)
        backoff = 0.2
        loop = asyncio.get_running_loop()
        last_pass = -self._pass_interval
        full = False
        try:
            while True:
                # Wake-ups that come closer together than `pass_interval` wait for it; a
                # full batch does not: rows are waiting, and with a pause after each the
                # relay could never publish more than `batch_size` per interval (5,000
                # events a second, 2,500 signatures: signing shed over its outbox's age
                # above that, docs/performance.md). Passes in a row are full batches, so
                # the broker still gets few, large record batches.
                if not full:
                    await asyncio.sleep(last_pass + self._pass_interval - loop.time())
                last_pass = loop.time()
                self._wakeup.clear()
                try:
                    published = await self.publish_batch()
                    full = published >= self._batch_size
                    self.broker_ok = True
                    backoff = 0.2
                except (KafkaError, *TEMPORARY_DATABASE_ERRORS) as exc:
                    # Broker or database briefly away: the rows are safe in the database.
                    full = False
                    OUTBOX_FAILURES.labels(self._schema).inc()
                    log.warning("outbox_publish_failed", error=type(exc).__name__, retry_in=backoff)
                    if not isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
                        # Possibly the broker (timeouts and socket errors can be either):
                        # a fresh producer, and topics again before the next publish.
                        self.broker_ok = False
                        self._broker_prepared = False
                        await self._discard_producer()
                    if listener.is_closed():
                        raise  # a database restart: start again with a new LISTEN connection
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
                    continue
                if full:
                    continue
                if loop.time() - self._last_prune > 60:
                    self._last_prune = loop.time()
                    OUTBOX_PENDING.labels(self._schema).set(await self.pending())
                    await self.prune()
                # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a
                # cancellation that coincides with its timeout, and the relay never stops.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self._poll_interval):
                        await self._wakeup.wait()
        finally:
            # Cancellation can land mid-query on this connection; a connection in that
            # state cannot be returned to the pool cleanly, so it is discarded instead.
            try:
                await listener.remove_listener(notify_channel(self._schema), self._on_notify)
                await self._pool.release(listener, timeout=5)
            except Exception:
                # The pool may already have taken back a connection that was cut: then
                # terminating it raises too, and there is nothing left to clean up.
                with contextlib.suppress(Exception):
                    listener.terminate()
                with contextlib.suppress(Exception):
                    await self._pool.release(listener, timeout=1)

    async def stop(self) -> None:
        if self._producer_started:
            # A producer flushing to a broker that has gone can wait forever.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), timeout=10)
            self._producer_started = False
