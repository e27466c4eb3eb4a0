"""An at-least-once consumer loop with dead-lettering, for the plain aiokafka services.

Offsets are committed only after a batch is handled, so a crash redelivers; handlers
must therefore be idempotent (see `claim_event`). A record that can never be handled
(malformed, or a handler raising `PermanentError`, or failing `max_attempts` times)
goes to `<consumer>.dlq` with the error in a header (groundswell_runtime.dead_letters),
and the stream moves on.
Database or broker outages are retried without limit: they are not the event's fault.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Collection

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError
from groundswell_contracts.events import AnyEvent, parse_event
from prometheus_client import Counter, Gauge
from pydantic import ValidationError

from groundswell_runtime.correlation import (
    bind_correlation_id,
    correlation_from_headers,
    current_correlation_id,
)
from groundswell_runtime.db import TEMPORARY_DATABASE_ERRORS
from groundswell_runtime.dead_letters import DeadLetter, is_unknown_type, park
from groundswell_runtime.lag import LagRows, register_lag_source, unregister_lag_source
from groundswell_runtime.surge_yield import SurgeYield

log = structlog.get_logger()

EVENTS_HANDLED = Counter(
    "groundswell_events_handled_total", "Events consumed", ["consumer", "event_type"]
)
# Lag alone cannot tell a caught-up consumer from one stuck in a retry loop (its lag
# stops being updated); a poll timestamp that stops moving can.
LAST_POLL = Gauge(
    "groundswell_consumer_last_poll_timestamp_seconds",
    "When the consumer last finished a poll (handled what it fetched, or found nothing)",
    ["consumer"],
)

Handler = Callable[[AnyEvent], Awaitable[None]]
# Applies one event inside a transaction it is given; claims the event itself.
TransactionalHandler = Callable[[asyncpg.Connection, AnyEvent], Awaitable[None]]
# Runs first in a batch's transaction with all its events (e.g. takes their locks in one
# order, so batches of different partitions cannot deadlock on each other).
BatchPreparer = Callable[[asyncpg.Connection, list[AnyEvent]], Awaitable[None]]
# An event and the correlation id it came with.
Item = tuple[AnyEvent, str | None]
# Applies a whole batch inside the transaction it is given, in order (set-based work:
# one statement for many events); claims the events itself.
BatchHandler = Callable[[asyncpg.Connection, list[Item]], Awaitable[None]]


class InTransaction:
    """A per-event handler run inside a transaction: one per event, or one per batch.

    `handle(conn, event)` does one event's work on `conn` (claiming the event id first,
    so a redelivery does nothing). Called with one event it gets a transaction of its
    own; `batch` runs a whole partition's fetch in ONE transaction: one BEGIN, one COMMIT
    and one round of waiting for the commit instead of one per event, which under a surge
    is most of a consumer's cost. All of a batch commits or none of it; when a batch
    fails, the consumer falls back to one transaction per event, so a bad event fails
    alone (and is dead-lettered) while the rest are applied.

    A handler that works on sets gives `handle_batch` instead: it gets the batch's events
    (with their correlation ids) at once, and a single event (the one-by-one fallback) as
    a batch of one, so one code path serves both.
    """

    def __init__(
        self,
        pool: asyncpg.Pool,
        handle: TransactionalHandler | None = None,
        prepare: BatchPreparer | None = None,
        *,
        handle_batch: BatchHandler | None = None,
    ) -> None:
        if (handle is None) == (handle_batch is None):
            raise TypeError("give one of handle and handle_batch")
        self._pool = pool
        self._handle = handle
        self._prepare = prepare
        self._handle_batch = handle_batch

    async def __call__(self, event: AnyEvent) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if self._handle_batch is not None:
                await self._handle_batch(conn, [(event, current_correlation_id())])
            else:
                assert self._handle is not None
                await self._handle(conn, event)

    async def batch(self, events: list[Item]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            if self._prepare is not None:
                await self._prepare(conn, [event for event, _ in events])
            if self._handle_batch is not None:
                await self._handle_batch(conn, events)
                return
            assert self._handle is not None
            for event, correlation_id in events:
                bind_correlation_id(correlation_id)
                await self._handle(conn, event)


TRANSIENT_ERRORS = TEMPORARY_DATABASE_ERRORS


class PermanentError(Exception):
    """This event can never be handled; dead-letter it instead of retrying."""


async def claim_event(conn: asyncpg.Connection, schema: str, event_id: object) -> bool:
    """Record an event as handled inside the handler's transaction.

    False means it was handled before: the caller does nothing (idempotence).
    """
    inserted = await conn.fetchval(
        f'INSERT INTO "{schema}".processed_events (event_id) VALUES ($1) '
        "ON CONFLICT DO NOTHING RETURNING true",
        event_id,
    )
    return bool(inserted)


PROCESSED_EVENTS_DDL = """
CREATE TABLE processed_events (
    event_id     uuid PRIMARY KEY,
    processed_at timestamptz NOT NULL DEFAULT now()
);
"""


class EventConsumer:
    def __init__(
        self,
        name: str,
        consumer: AIOKafkaConsumer,
        dead_letters: AIOKafkaProducer,
        handler: Handler,
        *,
        max_attempts: int = 3,
        first: Collection[str] = (),
        surge: SurgeYield | None = None,
    ) -> None:
        self.name = name
        self._first = frozenset(first)
        self._surge = surge
        self._consumer = consumer
        self._dead_letters = dead_letters
        self._handler = handler
        self._max_attempts = max_attempts
        self._lag: dict[tuple[str, int], int] = {}

    async def run(self) -> None:
        register_lag_source(self.name, self._lag_rows)
        try:
            await self._poll_forever()
        finally:
            # A stopped consumer's lag is unknown, not frozen: its series go away (the
            # poll timestamp stays, so "stalled" still shows).
            unregister_lag_source(self.name, self._lag_rows)

    async def _poll_forever(self) -> None:
        while True:
            # Yielding to a surge (surge_yield.py): no poll, so no fetch either (aiokafka
            # fetches a partition again only once its buffered records are taken). The
            # heartbeat goes on in the background; a yield is bounded well below
            # max_poll_interval_ms. The poll timestamp says the loop is alive, not stalled.
            while self._surge is not None and not await self._surge.wait_working(1.0):
                LAST_POLL.labels(self.name).set_to_current_time()
            batches = await self._consumer.getmany(timeout_ms=1000)
            await self._take_first_too(batches)
            # Partitions in parallel, each in order: keyed order (one petition's events)
            # lives within a partition, and the database waits of one partition no longer
            # hold up the others. Offsets are committed only when every partition's records
            # are handled.
            # The `first` topics' partitions go before the others': what the others' events
            # need (the mailer's data keys before the sealed contacts they open) is then
            # in place, rather than parked and fetched again.
            for phase in (
                [r for tp, r in batches.items() if tp.topic in self._first],
                [r for tp, r in batches.items() if tp.topic not in self._first],
            ):
                async with asyncio.TaskGroup() as group:
                    for records in phase:
                        group.create_task(self._handle_in_order(records))
            if batches:
                await self._consumer.commit()
            await self._measure_lag()
            LAST_POLL.labels(self.name).set_to_current_time()

    async def _take_first_too(
        self, batches: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]
    ) -> None:
        """Add to a poll that holds other records what the `first` topics' partitions
        have fetched meanwhile (without waiting for more). A poll hands out records
        partition by partition, so it often held a sealed contact without its key,
        fetched a moment later: the contact was then parked and taken back (measured at
        1,000 signatures/s: a third of them)."""
        if not self._first or all(tp.topic in self._first for tp in batches):
            return
        first = [tp for tp in self._consumer.assignment() if tp.topic in self._first]
        if not first:
            return
        more = await self._consumer.getmany(*first, timeout_ms=0)
        for tp, records in more.items():
            batches[tp] = [*batches.get(tp, []), *records]

    async def _measure_lag(self) -> None:
        """Per assigned partition: the high-water mark of the latest Fetch minus the next
        offset this consumer will hand out, i.e. what is written but not yet handled.

        Measured once per poll (about a second), from the client's own state: no broker
        round trip. A partition with no Fetch answer yet has no high-water mark and is
        left out rather than guessed.
        """
        lag: dict[tuple[str, int], int] = {}
        for tp in self._consumer.assignment():
            try:
                highwater = self._consumer.highwater(tp)
                if highwater is None:
                    continue
                # A high-water mark means a Fetch was made from a valid position, so this
                # returns at once; the bound only guards a rebalance in between.
                position = await asyncio.wait_for(self._consumer.position(tp), timeout=1.0)
            except (IllegalStateError, AssertionError, TimeoutError):
                continue  # revoked meanwhile, or no position yet: the next poll measures it
            lag[(tp.topic, tp.partition)] = max(highwater - position, 0)
        self._lag = lag

    def _lag_rows(self) -> LagRows:
        return [(topic, partition, value) for (topic, partition), value in self._lag.items()]

    async def _handle_in_order(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        batch = getattr(self._handler, "batch", None)
        if batch is not None and len(records) > 1 and await self._try_batch(batch, records):
            return
        for record in records:
            await self._handle(record)

    async def _try_batch(
        self,
        batch: Callable[[list[tuple[AnyEvent, str | None]]], Awaitable[None]],
        records: list[ConsumerRecord[bytes, bytes]],
    ) -> bool:
        """True when the batch was applied; False sends every record the per-event way
        (which also dead-letters what cannot be parsed)."""
        events = []
        for record in records:
            try:
                event = parse_event(record.value or b"")
            except ValidationError:
                return False
            events.append((event, correlation_from_headers(list(record.headers))))
        attempt = 0
        while True:
            attempt += 1
            try:
                await batch(events)
            except TRANSIENT_ERRORS as exc:
                delay = min(0.2 * 2 ** min(attempt, 5), 5.0)
                log.warning("batch_transient_error", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
                continue
            except Exception as exc:
                log.warning("batch_failed_one_by_one", error=type(exc).__name__, size=len(events))
                return False
            # Once per event type, not per event: a label lookup takes a lock.
            for event_type, n in collections.Counter(e.event_type for e, _ in events).items():
                EVENTS_HANDLED.labels(self.name, event_type).inc(n)
            return True

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        bind_correlation_id(correlation_from_headers(list(record.headers)))
        try:
            event = parse_event(record.value or b"")
        except ValidationError as exc:
            if is_unknown_type(record.value):
                # A newer producer's event type: not ours to judge, and not an error.
                log.info("event_type_ignored", topic=record.topic, offset=record.offset)
                return
            await self._dead_letter(record, f"invalid event: {exc.error_count()} errors")
            return
        structlog.contextvars.bind_contextvars(event_id=str(event.event_id))
        attempt = 0
        while True:
            attempt += 1
            try:
                await self._handler(event)
                EVENTS_HANDLED.labels(self.name, event.event_type).inc()
                return
            except TRANSIENT_ERRORS as exc:
                delay = min(0.2 * 2 ** min(attempt, 5), 5.0)
                log.warning("handler_transient_error", error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)
            except PermanentError as exc:
                await self._dead_letter(record, str(exc))
                return
            except Exception as exc:
                # The exception's type only: its text and traceback can hold event values
                # (an email, a name), which never go into a log line.
                log.warning("handler_failed", attempt=attempt, error=type(exc).__name__)
                if attempt >= self._max_attempts:
                    await self._dead_letter(record, f"{type(exc).__name__}: {exc}")
                    return
                await asyncio.sleep(0.2 * attempt)

    async def _dead_letter(self, record: ConsumerRecord[bytes, bytes], error: str) -> None:
        async def send(letter: DeadLetter) -> None:
            await self._dead_letters.send_and_wait(
                letter.topic, value=letter.value, key=letter.key, headers=letter.headers
            )

        await park(self.name, record, error, send)
