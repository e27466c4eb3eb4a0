"""The one dead-letter path, for the aiokafka consumers (`groundswell_runtime.consumer`)
and the counter's faust worker alike.

A record a consumer can never handle is parked on `<consumer>.dlq` with the source's key
and headers, plus `DLQ_ERROR` (what went wrong) and `DLQ_SOURCE` (topic:partition:offset),
so `groundswell-ops dlq` reads and redrives every consumer's letters the same way. The
caller sends the letter with its own producer and waits for the broker's acknowledgement
before committing past the record; then `dead_lettered` counts and logs it.

What never goes into a dead letter: a data key (`DataKeyIssued` becomes a stub naming
the key), since a dead-letter topic is not compacted and the copy would outlive the
key's shredding (docs/privacy.md); and in the log line, anything but the error's kind
(the full error, which may quote values, travels in the header, read with `groundswell-ops
dlq show`, which masks personal data).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

import structlog
from groundswell_contracts.events import TOPIC_OF, DataKeyIssued, parse_event
from groundswell_contracts.headers import DLQ_ERROR, DLQ_SOURCE
from groundswell_contracts.topics import dead_letter_topic
from prometheus_client import Counter
from pydantic import ValidationError

log = structlog.get_logger()

DEAD_LETTERS = Counter("groundswell_dead_letters_total", "Events dead-lettered", ["consumer"])
# The same writes by source topic: which stream is producing poison, for the DLQ alert.
DLQ_EVENTS = Counter(
    "groundswell_dlq_events_total",
    "Events written to a dead-letter topic, by consumer and the topic they came from",
    ["consumer", "topic"],
)

# What is kept of an error in its header.
_ERROR_BYTES = 500


class Record(Protocol):
    """What a consumed record offers: aiokafka's ConsumerRecord, faust's message, or one
    a test builds by hand."""

    @property
    def topic(self) -> str: ...
    @property
    def partition(self) -> int: ...
    @property
    def offset(self) -> int: ...
    @property
    def key(self) -> bytes | None: ...
    @property
    def value(self) -> bytes | None: ...
    @property
    def headers(self) -> Any: ...  # (key, value) pairs, or a mapping (faust)


@dataclasses.dataclass(frozen=True)
class DeadLetter:
    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


def header_pairs(headers: Any) -> list[tuple[str, bytes]]:
    """A record's headers as (key, value) pairs: aiokafka gives a sequence of pairs,
    faust may give a mapping."""
    if not headers:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), bytes(v)) for k, v in headers.items()]
    return [(str(k), bytes(v)) for k, v in headers]


def dead_letter(consumer: str, record: Record, error: str, *, to: str | None = None) -> DeadLetter:
    """The letter for a source record; `to` overrides `<consumer>.dlq` (a prefixed topic)."""
    return DeadLetter(
        topic=to or dead_letter_topic(consumer),
        key=record.key,
        value=without_key_material(record.value),
        headers=[
            *header_pairs(record.headers),
            (DLQ_ERROR, error[:_ERROR_BYTES].encode()),
            (DLQ_SOURCE, f"{record.topic}:{record.partition}:{record.offset}".encode()),
        ],
    )


async def park(
    consumer: str,
    record: Record,
    error: str,
    send: Callable[[DeadLetter], Awaitable[None]],
    *,
    to: str | None = None,
) -> None:
    """Write the record's dead letter with `send` (which returns once the broker has it),
    then count and log it."""
    await send(dead_letter(consumer, record, error, to=to))
    DEAD_LETTERS.labels(consumer).inc()
    DLQ_EVENTS.labels(consumer, record.topic).inc()
    log.error(
        "event_dead_lettered",
        consumer=consumer,
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        error=error.split(":", 1)[0][:80],
    )


def without_key_material(raw: bytes | None) -> bytes | None:
    """A data key's record as a stub that still says which key failed (the record itself
    stays on `signer-keys` for a replay); any other record as it is."""
    try:
        event = parse_event(raw or b"")
    except ValidationError:
        return raw  # not a key, whatever it is
    if isinstance(event, DataKeyIssued):
        stub = {"event_type": event.event_type, "key_id": str(event.key_id), "withheld": True}
        return json.dumps(stub).encode()
    return raw


def is_unknown_type(raw: bytes | None) -> bool:
    """A well-formed event of a type this build does not know (a newer producer): skipped,
    not dead-lettered, so a rolling upgrade does not fill the dead-letter topics."""
    try:
        document = json.loads(raw or b"")
    except ValueError:
        return False
    if not isinstance(document, dict):
        return False
    event_type = document.get("event_type")
    return isinstance(event_type, str) and event_type not in TOPIC_OF
