"""An at-least-once consumer loop with dead-lettering, for the plain aiokafka services.

Offsets are committed only after a batch is handled, so a crash redelivers; handlers
must therefore be idempotent (see `claim_event`). A record that can never be handled
(malformed, or a handler raising `PermanentError`, or failing `max_attempts` times)
goes to `<consumer>.dlq` with the error in a header, and the stream moves on.
Database or broker outages are retried without limit: they are not the event's fault.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import asyncpg
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from groundswell_contracts.events import TOPIC_OF, AnyEvent, parse_event
from groundswell_contracts.headers import DLQ_ERROR, DLQ_SOURCE
from groundswell_contracts.topics import dead_letter_topic
from prometheus_client import Counter
from pydantic import ValidationError

from groundswell_runtime.correlation import bind_correlation_id, correlation_from_headers
from groundswell_runtime.db import TEMPORARY_DATABASE_ERRORS

log = structlog.get_logger()

EVENTS_HANDLED = Counter(
    "groundswell_events_handled_total", "Events consumed", ["consumer", "event_type"]
)
DEAD_LETTERS = Counter("groundswell_dead_letters_total", "Events dead-lettered", ["consumer"])

Handler = Callable[[AnyEvent], Awaitable[None]]

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
    ) -> None:
        self.name = name
        self._consumer = consumer
        self._dead_letters = dead_letters
        self._handler = handler
        self._max_attempts = max_attempts

    async def run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=1000)
            # Partitions in parallel, each in order: keyed order (one petition's events)
            # lives within a partition, and the database waits of one partition no longer
            # hold up the others. Offsets are committed only when every partition's records
            # are handled.
            async with asyncio.TaskGroup() as group:
                for records in batches.values():
                    group.create_task(self._handle_in_order(records))
            if batches:
                await self._consumer.commit()

    async def _handle_in_order(self, records: list[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            await self._handle(record)

    async def _handle(self, record: ConsumerRecord[bytes, bytes]) -> None:
        bind_correlation_id(correlation_from_headers(list(record.headers)))
        try:
            event = parse_event(record.value or b"")
        except ValidationError as exc:
            if _is_unknown_type(record.value):
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
        headers = [*record.headers, (DLQ_ERROR, error[:500].encode())]
        headers.append((DLQ_SOURCE, f"{record.topic}:{record.partition}:{record.offset}".encode()))
        await self._dead_letters.send_and_wait(
            dead_letter_topic(self.name), value=record.value, key=record.key, headers=headers
        )
        DEAD_LETTERS.labels(self.name).inc()
        # The full error travels in the dead letter's header (read with `groundswell-ops dlq
        # show`, which masks personal data); the log line names only its kind.
        log.error(
            "event_dead_lettered",
            topic=record.topic,
            offset=record.offset,
            error=error.split(":", 1)[0][:80],
        )


def _is_unknown_type(raw: bytes | None) -> bool:
    try:
        document = json.loads(raw or b"")
    except ValueError:
        return False
    if not isinstance(document, dict):
        return False
    event_type = document.get("event_type")
    return isinstance(event_type, str) and event_type not in TOPIC_OF
