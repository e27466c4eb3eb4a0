"""Applying a batch of source records to the table, exactly once (see `domain.processing`).

Each record is classified against its partition's watermark first: the next one is
applied; a replay is skipped (unless it shows the broker lost the log, which stops the
worker); a record after a gap is applied after the records skipped over, read back.
The batch then writes, after every signature record written while applying it, each
changed petition record once, then the watermarks that vouch for them, and returns only
when all are acknowledged: faust may commit the batch's offsets as soon as it returns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import structlog
from groundswell_contracts.events import (
    Event,
    SignatureConfirmed,
    SignatureCreated,
    SignatureInvalidated,
    SignatureWithdrawn,
    encode,
    parse_event,
)
from groundswell_contracts.headers import CORRELATION_ID, EVENT_TYPE
from groundswell_runtime.correlation import correlation_from_headers
from groundswell_runtime.dead_letters import header_pairs, is_unknown_type
from prometheus_client import Counter
from pydantic import ValidationError

from groundswell_counter.adapters.records import (
    petition_from_json,
    petition_to_json,
    signature_from_json,
    signature_to_json,
)
from groundswell_counter.adapters.snapshots import milestone_reached
from groundswell_counter.domain.milestones import MilestoneHit, MilestonePolicy
from groundswell_counter.domain.processing import (
    Delivery,
    MisroutedEvent,
    Outcome,
    PetitionRecord,
    Position,
    SignatureRecord,
    Source,
    delivery,
    from_lost_log,
    petition_key,
    process,
    signature_key,
    watermark_key,
)
from groundswell_counter.service_layer.ports import (
    ChangelogWriter,
    DeadLetters,
    GapReader,
    Highwater,
    Publisher,
    SourceLogLost,
    SourceRecord,
)

log = structlog.get_logger()

EVENTS = Counter(
    "groundswell_counter_events_total", "Source events read", ["event_type", "outcome"]
)
MILESTONES = Counter("groundswell_counter_milestones_total", "MilestoneReached announced")
OUT_OF_SEQUENCE = Counter(
    "groundswell_counter_out_of_sequence_total",
    "Source records delivered out of sequence (replayed: skipped; gap, or tail never"
    " delivered: read back and applied)",
    ["kind"],
)

SIGNATURE_EVENTS = (SignatureCreated, SignatureConfirmed, SignatureWithdrawn, SignatureInvalidated)

# A watermark: the offset of the last record applied from a source partition, and
# that record's timestamp (seconds, as faust gives it; None when unknown).
_Mark = tuple[int, float | None]


@dataclass
class _Batch:
    # One clock reading per batch: `updated_at` of every petition the batch changes.
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    petitions: dict[UUID, PetitionRecord] = field(default_factory=dict)
    # (offset, timestamp) of the last record applied per source partition.
    watermarks: dict[tuple[Source, int], _Mark] = field(default_factory=dict)


class Counting:
    """The counts of the partitions this worker owns, kept by applying batches."""

    def __init__(
        self,
        *,
        sources: Mapping[str, Source],
        policy: MilestonePolicy,
        table: ChangelogWriter,
        publisher: Publisher,
        milestones_topic: str,
        gaps: GapReader,
        highwater: Highwater,
        dead_letters: DeadLetters,
    ) -> None:
        self._sources = sources
        self._policy = policy
        self._table = table
        self._publisher = publisher
        self._milestones_topic = milestones_topic
        self._gaps = gaps
        self._highwater = highwater
        self._dead_letters = dead_letters
        # Petitions changed since their last snapshot (taken by `SnapshotPublisher`).
        self.dirty: set[UUID] = set()
        # Decoded records of the partitions this worker owns. The table stays the
        # truth, so both are dropped whenever partitions move (`forget`).
        self._petitions: dict[UUID, PetitionRecord] = {}
        self._watermarks: dict[tuple[Source, int], _Mark | None] = {}
        # One batch at a time: faust's agent and the tail check (`fill_stalled_tails`)
        # share the records above; the rebalance waits for it too (`exclusive`).
        self._lock = asyncio.Lock()
        # Partitions whose watermark was behind their high-water mark at the last tail
        # check, with that watermark.
        self._behind: dict[tuple[str, int], int] = {}
        # Bumped by `forget`: a tail read back across a rebalance is not applied.
        self._generation = 0

    def exclusive(self) -> asyncio.Lock:
        """Held while a batch is applied; hold it to keep batches out (rebalances)."""
        return self._lock

    def forget(self) -> None:
        self._petitions.clear()
        self._watermarks.clear()
        self._behind.clear()
        self._generation += 1

    def petition(self, petition_id: UUID) -> PetitionRecord | None:
        record = self._petitions.get(petition_id)
        if record is None:
            doc = self._table.get(petition_key(petition_id))
            if doc is not None:
                record = self._petitions[petition_id] = petition_from_json(doc)
        return record

    async def apply_batch(self, records: Sequence[SourceRecord]) -> None:
        async with self._lock:
            await self._apply_batch(records)

    async def fill_stalled_tails(self, owned: Iterable[tuple[str, int]]) -> None:
        """Apply records faust fetched but never delivered, at the end of a partition.

        faust has been seen to skip records around a rebalance. A skipped record is
        found as a gap when a later record of its partition arrives (`_deliver`); a
        skipped *last* record has no later one, and would stay uncounted until the next
        signature. So, called periodically: a partition whose watermark is behind the
        high-water mark faust's consumer fetched, and was behind at the same watermark
        at the previous call too (faust delivers in well under the interval), has the
        records in between read back and applied. Safe whenever it runs: the watermark
        makes a record applied here a replay when faust delivers it after all.
        """
        generation = self._generation
        stalled: list[tuple[str, int, int, int]] = []
        for topic, partition in owned:
            mark = self._watermark(self._sources[topic], partition)
            highwater = self._highwater(topic, partition)
            if mark is None or highwater is None or highwater <= mark[0] + 1:
                self._behind.pop((topic, partition), None)
            elif self._behind.get((topic, partition)) != mark[0]:
                self._behind[(topic, partition)] = mark[0]
            else:
                stalled.append((topic, partition, mark[0] + 1, highwater))
        for topic, partition, start, end in stalled:
            log.warning("source_tail_stalled", topic=topic, partition=partition, after=start - 1)
            async for chunk in self._gaps.skipped(topic, partition, start, end):
                async with self._lock:
                    if self._generation != generation:
                        return  # partitions moved while reading: the new owner's now
                    OUT_OF_SEQUENCE.labels("tail").inc(len(chunk))
                    await self._apply_batch(chunk)

    async def _apply_batch(self, records: Sequence[SourceRecord]) -> None:
        batch = _Batch()
        for record in records:
            await self._deliver(record, batch)
        # After every signature record of the batch (see domain.processing), and the
        # watermarks after the petition records they vouch for.
        for petition in batch.petitions.values():
            assert petition.partition is not None
            await self._table.put(
                petition_key(petition.petition_id), petition_to_json(petition), petition.partition
            )
            self._petitions[petition.petition_id] = petition
        for (source, partition), (offset, stamp) in batch.watermarks.items():
            await self._table.put(
                watermark_key(source, partition), {"offset": offset, "timestamp": stamp}, partition
            )
        await self._table.acknowledged()
        self.dirty.update(batch.petitions)

    async def _deliver(self, record: SourceRecord, batch: _Batch) -> None:
        """Apply one delivered source record, after any records it skipped over."""
        source = self._sources[record.topic]
        mark = self._watermark(source, record.partition)
        applied_upto = None if mark is None else mark[0]
        match delivery(record.offset, applied_upto):
            case Delivery.REPLAY:
                assert mark is not None
                highwater = self._highwater(record.topic, record.partition)
                if from_lost_log(record.offset, record.timestamp, highwater, *mark):
                    # Skipping it would drop a new record as a replay of a lost one.
                    log.critical(
                        "source_log_lost",
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        watermark=mark[0],
                        highwater=highwater,
                    )
                    raise SourceLogLost(record.topic, record.partition)
                OUT_OF_SEQUENCE.labels("replayed").inc()
                _count_event("(replayed)", Outcome.ALREADY_APPLIED)
                return
            case Delivery.GAP:
                assert applied_upto is not None
                log.warning(
                    "source_gap",
                    topic=record.topic,
                    partition=record.partition,
                    after=applied_upto,
                    before=record.offset,
                )
                async for skipped in self._gaps.skipped(
                    record.topic, record.partition, applied_upto + 1, record.offset
                ):
                    OUT_OF_SEQUENCE.labels("gap").inc(len(skipped))
                    for missed in skipped:
                        await self._apply(source, missed, batch)
            case Delivery.NEXT:
                pass
        await self._apply(source, record, batch)

    def _watermark(self, source: Source, partition: int) -> _Mark | None:
        key = (source, partition)
        if key not in self._watermarks:
            doc = self._table.get(watermark_key(source, partition))
            # Records written before timestamps were kept have none: offsets still work.
            self._watermarks[key] = (
                None if doc is None else (int(doc["offset"]), doc.get("timestamp"))
            )
        return self._watermarks[key]

    async def _apply(self, source: Source, record: SourceRecord, batch: _Batch) -> None:
        at = Position(source, record.partition, record.offset)
        self._watermarks[(source, at.partition)] = batch.watermarks[(source, at.partition)] = (
            at.offset,
            record.timestamp,
        )
        try:
            parsed = parse_event(record.value or b"")
        except ValidationError as exc:
            if is_unknown_type(record.value):
                # A newer producer's event type: not ours to judge.
                _count_event("(unknown)", Outcome.IGNORED)
                return
            await self._dead_letter(record, _describe(exc))
            return
        if not isinstance(parsed, Event):
            # Keys and privacy requests never reach the counter's topics.
            _count_event(parsed.event_type, Outcome.IGNORED)
            return
        sig_key = (
            signature_key(parsed.signature_id) if isinstance(parsed, SIGNATURE_EVENTS) else None
        )
        try:
            step = process(
                parsed,
                at,
                batch.petitions.get(parsed.petition_id) or self.petition(parsed.petition_id),
                None if sig_key is None else self._signature(sig_key),
                policy=self._policy,
                now=batch.now,
            )
        except MisroutedEvent as exc:
            await self._dead_letter(record, f"misrouted: {exc}")
            return
        except Exception as exc:
            # A bug must not stop counting for everyone: park the event for a replay.
            log.exception(
                "event_processing_failed",
                event_type=parsed.event_type,
                partition=at.partition,
                offset=at.offset,
            )
            await self._dead_letter(record, f"{type(exc).__name__} while counting")
            return
        if step.petition is not None:
            # Acknowledged before the petition record that says they were reached.
            for hit in step.milestones:
                await self._announce(step.petition, hit, record.headers)
            batch.petitions[step.petition.petition_id] = step.petition
        if step.signature is not None:
            assert sig_key is not None
            await self._table.put(sig_key, signature_to_json(step.signature), at.partition)
        _count_event(parsed.event_type, step.outcome)

    def _signature(self, key: str) -> SignatureRecord | None:
        doc = self._table.get(key)
        return None if doc is None else signature_from_json(doc)

    async def _dead_letter(self, record: SourceRecord, error: str) -> None:
        await self._dead_letters(record, error)
        _count_event("(invalid)", "dead_lettered")

    async def _announce(self, record: PetitionRecord, hit: MilestoneHit, source: Any) -> None:
        event = milestone_reached(record, hit)
        headers = [(EVENT_TYPE, event.event_type.encode())]
        correlation_id = correlation_from_headers(header_pairs(source))
        if correlation_id:
            headers.append((CORRELATION_ID, correlation_id.encode()))
        await self._publisher.send_acknowledged(
            self._milestones_topic, event.key.encode(), encode(event), headers
        )
        MILESTONES.inc()
        log.info(
            "milestone_reached",
            petition_id=str(record.petition_id),
            threshold=hit.threshold,
            signatures=hit.signatures,
        )


_EVENT_COUNTERS: dict[tuple[str, str], Any] = {}


def _count_event(event_type: str, outcome: Outcome | str) -> None:
    # Children of a labelled metric looked up once: labels() takes a lock and
    # validates the labels on every call, once per event.
    key = (event_type, str(outcome))
    child = _EVENT_COUNTERS.get(key)
    if child is None:
        child = _EVENT_COUNTERS[key] = EVENTS.labels(event_type, str(outcome))
    child.inc()


def _describe(exc: ValidationError) -> str:
    # Field locations and error kinds only: pydantic's message quotes the input,
    # which may be personal data.
    problems = ", ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['type']}"
        for error in exc.errors()[:5]
    )
    return f"invalid event ({exc.error_count()} errors): {problems}"
