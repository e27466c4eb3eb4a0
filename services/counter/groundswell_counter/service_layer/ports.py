"""What applying a batch needs from outside: small ports, implemented over faust and Kafka
in `adapters` (and by fakes in the unit tests).

The order the correctness argument in `domain.processing` relies on (signature records,
then petition records, then watermarks, all acknowledged before the batch's offsets may
be committed) is kept by `service_layer.counting`; a port only has to keep the records
it is given in the order it is given them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any, Protocol

from groundswell_runtime.dead_letters import Record


class SourceRecord(Record, Protocol):
    """A record read from a source topic: a faust message, or one read back (gaps)."""

    @property
    def timestamp(self) -> float | None: ...  # seconds


class RestartRequired(Exception):
    """The worker must stop without committing anything more; its restart replays from
    the last commit (idempotently) or rebuilds the table. Logged where it is raised."""


class ChangelogWriteFailed(RestartRequired):
    """A table record was not acknowledged by the broker: carrying on would lose counts."""


class SourceLogLost(RestartRequired):
    """The table was built from a source log the broker no longer has."""


class ChangelogWriter(Protocol):
    """The table's records: read from the local copy, written to the changelog."""

    def get(self, key: str) -> dict[str, Any] | None:
        """The record stored under `key`, if any."""
        ...

    async def put(self, key: str, doc: dict[str, Any], partition: int) -> None:
        """Store `doc` under `key` and append it to changelog partition `partition` (that of
        the events it comes from, so their owner recovers it). Returns once the record is
        queued, behind every record put before it."""
        ...

    async def acknowledged(self) -> None:
        """Return when every record put so far is acknowledged by the broker; raise
        `ChangelogWriteFailed` if any was not."""
        ...


class Publisher(Protocol):
    """Events the counter publishes."""

    async def send_acknowledged(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        """Return once the broker has the record, retrying a broker outage until then."""
        ...

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        """Queue the record (sent soon after, not waited for)."""
        ...

    async def flush(self) -> None:
        """Return once every queued record is sent."""
        ...


class GapReader(Protocol):
    def skipped(
        self, topic: str, partition: int, start: int, end: int
    ) -> AsyncIterator[Sequence[SourceRecord]]:
        """The records of one partition with offsets in [start, end), in order, a chunk
        at a time."""
        ...


class Highwater(Protocol):
    def __call__(self, topic: str, partition: int) -> int | None:
        """The partition's high-water mark as last fetched by the worker, if known."""
        ...


class DeadLetters(Protocol):
    async def __call__(self, record: SourceRecord, error: str) -> None:
        """Park `record` on the dead-letter topic with `error` (no event values in it)."""
        ...
