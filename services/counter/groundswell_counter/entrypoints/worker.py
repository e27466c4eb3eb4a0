"""The counter worker: a faust app that keeps the counts, plus the HTTP API in the same loop.

- The `count` agent applies `signatures` and `petitions` events, in batches, to one
  table holding `p:<petition id>`, `s:<signature id>` and `o:<source>:<partition>`
  records, exactly once by construction (see `domain.processing`).
- A timer publishes a snapshot of each petition that changed to `counts`, at most
  once per `coalesce_interval_seconds`.
- The HTTP API serves the `counts` topic (see `adapters.counts_view`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, NoReturn, cast
from uuid import UUID

import faust
import mode
import structlog
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError
from faust.exceptions import ConsumerNotStarted
from faust.types import TP
from groundswell_contracts.events import (
    TOPIC_OF,
    Event,
    SignatureConfirmed,
    SignatureCreated,
    SignatureInvalidated,
    SignatureWithdrawn,
    encode,
    parse_event,
)
from groundswell_contracts.headers import CORRELATION_ID, DLQ_ERROR, DLQ_SOURCE, EVENT_TYPE
from groundswell_runtime.kafka import (
    HEARTBEAT_INTERVAL_MS,
    SESSION_TIMEOUT_MS,
    broker_reachable,
    ensure_topics,
)
from groundswell_runtime.lag import faust_lag, register_lag_source
from prometheus_client import Counter, Histogram
from pydantic import ValidationError

from groundswell_counter.adapters.counts_view import CountsView
from groundswell_counter.adapters.embedded_http import CountsViewService, HttpService
from groundswell_counter.adapters.faust_transport import CounterFaustApp
from groundswell_counter.adapters.kafka_reads import fetch_records
from groundswell_counter.adapters.records import (
    petition_from_json,
    petition_to_json,
    signature_from_json,
    signature_to_json,
)
from groundswell_counter.adapters.snapshots import count_snapshot, milestone_reached
from groundswell_counter.config import CounterSettings
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
from groundswell_counter.entrypoints.http import create_http_app

log = structlog.get_logger()

EVENTS = Counter(
    "groundswell_counter_events_total", "Source events read", ["event_type", "outcome"]
)
DEAD_LETTERS = Counter("groundswell_counter_dead_letters_total", "Events dead-lettered")
MILESTONES = Counter("groundswell_counter_milestones_total", "MilestoneReached announced")
SNAPSHOTS = Counter("groundswell_counter_snapshots_total", "Count snapshots published")
OUT_OF_SEQUENCE = Counter(
    "groundswell_counter_out_of_sequence_total",
    "Source records delivered out of sequence (replayed: skipped; gap: read back and applied)",
    ["kind"],
)
BATCH_SECONDS = Histogram(
    "groundswell_counter_batch_seconds",
    "Time to apply one batch of source events",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
)

TABLE_NAME = "counter-state"
SIGNATURE_EVENTS = (SignatureCreated, SignatureConfirmed, SignatureWithdrawn, SignatureInvalidated)
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 5.0)
GAP_READ_CHUNK = 5_000  # records read back at once when faust skipped some
EXIT_TEMPFAIL = 75  # EX_TEMPFAIL: restart me; the restart replays from the last commit


# A watermark: the offset of the last record applied from a source partition, and
# that record's timestamp (seconds, as faust gives it; None when unknown).
_Mark = tuple[int, float | None]

# Compact JSON, as faust's own serializer would write it; one encoder for every record
# (json.dumps with separators builds a new encoder per call).
_JSON = json.JSONEncoder(separators=(",", ":"))


@dataclass
class _Batch:
    # One clock reading per batch: `updated_at` of every petition the batch changes.
    now: datetime = field(default_factory=lambda: datetime.now(UTC))
    petitions: dict[UUID, PetitionRecord] = field(default_factory=dict)
    # (offset, timestamp) of the last record applied per source partition.
    watermarks: dict[tuple[Source, int], _Mark] = field(default_factory=dict)
    writes: list[asyncio.Future[Any]] = field(default_factory=list)


class CounterWorker:
    """The faust app with its table, agent, timer and rebalance hooks."""

    def __init__(self, settings: CounterSettings) -> None:
        self.settings = settings
        self.topics = settings.topics
        self.policy = MilestonePolicy(default_thresholds=tuple(settings.default_milestones))
        self._servers = [host.strip() for host in settings.kafka_bootstrap_servers.split(",")]
        self.app = CounterFaustApp(
            settings.app_id,
            broker=[f"kafka://{host}" for host in self._servers],
            store="memory://",
            autodiscover=False,
            datadir=str(settings.data_dir),
            # The table's partitions must equal the source topics' (created up front).
            topic_partitions=settings.kafka_topic_partitions,
            topic_replication_factor=settings.kafka_replication_factor,
            table_standby_replicas=settings.table_standby_replicas,
            consumer_auto_offset_reset="earliest",
            broker_session_timeout=SESSION_TIMEOUT_MS / 1000,
            broker_heartbeat_interval=HEARTBEAT_INTERVAL_MS / 1000,
            producer_acks=-1,
            # Batching stays on (recovery learns end offsets from Fetch: see
            # faust_transport), and a few ms of linger turns thousands of one-record
            # produce requests into a few: send() was a fifth of the worker's time.
            producer_linger=settings.producer_linger_seconds,
            # Our own HTTP server runs in this loop; faust's would fight for a port.
            web_enabled=False,
        )
        self.table = self.app.Table(
            TABLE_NAME,
            # str keys and dict values both travel as JSON in the changelog.
            key_type=str,
            partitions=settings.kafka_topic_partitions,
        )
        self._changelog_topic = self.table.changelog_topic.get_topic_name()
        self.source = self.app.topic(
            self.topics.signatures,
            self.topics.petitions,
            key_serializer="raw",
            value_serializer="raw",
        )
        self._sources = {
            self.topics.signatures: Source.SIGNATURES,
            self.topics.petitions: Source.PETITIONS,
        }
        # Petitions changed since their last snapshot.
        self._dirty: set[UUID] = set()
        # Decoded records of the partitions this worker owns. The table stays the
        # truth, so both are dropped whenever partitions move.
        self._petitions: dict[UUID, PetitionRecord] = {}
        self._watermarks: dict[tuple[Source, int], _Mark | None] = {}
        self.recovered = False

        self.app.agent(self.source, name="count")(self._count)
        self.app.timer(settings.coalesce_interval_seconds, name="publish-counts")(
            self._publish_dirty
        )
        self.app.on_partitions_revoked.connect(self._on_partitions_revoked)
        self.table.on_recover(self._on_recovered)

    # --- the agent ------------------------------------------------------------------

    async def _count(self, stream: faust.StreamT[bytes]) -> None:
        # In batches: a changed petition record is written once per batch, not once per
        # event. faust acknowledges a batch's events only when this loop asks for the
        # next batch, so no offset is committed before the batch's writes are durable.
        # take_events exists on faust's Stream but not on its StreamT interface.
        async for batch in cast(faust.Stream[bytes], stream).take_events(
            self.settings.batch_max_events, within=self.settings.batch_max_wait_seconds
        ):
            started = time.perf_counter()
            try:
                await self.apply_batch(batch)
            except Exception:
                # faust would restart the agent and carry on after this batch, whose
                # events would then count as handled. Stop instead: the restarted
                # worker replays them, idempotently.
                log.critical("batch_failed", exc_info=True)
                os._exit(EXIT_TEMPFAIL)
            BATCH_SECONDS.observe(time.perf_counter() - started)

    async def apply_batch(self, events: Sequence[Any]) -> None:
        batch = _Batch()
        for event in events:
            await self._deliver(event.message, batch)
        # After every signature record of the batch (see domain.processing), and the
        # watermarks after the petition records they vouch for.
        for record in batch.petitions.values():
            assert record.partition is not None
            await self._put(
                petition_key(record.petition_id), petition_to_json(record), record.partition, batch
            )
            self._petitions[record.petition_id] = record
        for (source, partition), (offset, stamp) in batch.watermarks.items():
            await self._put(
                watermark_key(source, partition),
                {"offset": offset, "timestamp": stamp},
                partition,
                batch,
            )
        await self._acknowledged(batch.writes)
        self._dirty.update(batch.petitions)

    async def _deliver(self, record: Any, batch: _Batch) -> None:
        """Apply one delivered source record, after any records it skipped over."""
        source = self._sources[record.topic]
        mark = self._watermark(source, record.partition)
        applied_upto = None if mark is None else mark[0]
        match delivery(record.offset, applied_upto):
            case Delivery.REPLAY:
                assert mark is not None
                highwater = self._highwater(record.topic, record.partition)
                if from_lost_log(record.offset, _timestamp(record), highwater, *mark):
                    # Skipping it would drop a new record as a replay of a lost one.
                    log.critical(
                        "source_log_lost",
                        topic=record.topic,
                        partition=record.partition,
                        offset=record.offset,
                        watermark=mark[0],
                        highwater=highwater,
                    )
                    _exit_to_rebuild()
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
                start = applied_upto + 1
                while start < record.offset:
                    end = min(record.offset, start + GAP_READ_CHUNK)
                    skipped = await fetch_records(
                        self._servers, record.topic, record.partition, start, end
                    )
                    OUT_OF_SEQUENCE.labels("gap").inc(len(skipped))
                    for missed in skipped:
                        await self._apply(source, missed, batch)
                    start = end
            case Delivery.NEXT:
                pass
        await self._apply(source, record, batch)

    def _watermark(self, source: Source, partition: int) -> _Mark | None:
        key = (source, partition)
        if key not in self._watermarks:
            doc = self.table.data.get(watermark_key(source, partition))
            # Records written before timestamps were kept have none: offsets still work.
            self._watermarks[key] = (
                None if doc is None else (int(doc["offset"]), doc.get("timestamp"))
            )
        return self._watermarks[key]

    def _highwater(self, topic: str, partition: int) -> int | None:
        """The partition's high-water mark from the consumer's last Fetch, if known."""
        try:
            return cast(int | None, self.app.consumer.highwater(TP(topic, partition)))
        except (ConsumerNotStarted, AssertionError, AttributeError, KeyError):
            # Not assigned (any more), or no fetch yet: nothing to compare with.
            return None

    async def _apply(self, source: Source, record: Any, batch: _Batch) -> None:
        at = Position(source, record.partition, record.offset)
        self._watermarks[(source, at.partition)] = batch.watermarks[(source, at.partition)] = (
            at.offset,
            _timestamp(record),
        )
        try:
            parsed = parse_event(record.value or b"")
        except ValidationError as exc:
            if _is_unknown_type(record.value):
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
                batch.petitions.get(parsed.petition_id) or self._petition(parsed.petition_id),
                None if sig_key is None else self._signature(sig_key),
                policy=self.policy,
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
                await self._announce(step.petition, hit, _correlation_id(record.headers))
            batch.petitions[step.petition.petition_id] = step.petition
        if step.signature is not None:
            assert sig_key is not None
            await self._put(sig_key, signature_to_json(step.signature), at.partition, batch)
        _count_event(parsed.event_type, step.outcome)

    async def _put(self, key: str, doc: dict[str, Any], partition: int, batch: _Batch) -> None:
        """Set a table record and append it to the table's changelog.

        Straight to the producer rather than through faust's per-write buffer (a third
        of the worker's time went there), in the format faust recovers the table from
        (JSON key and value). Explicit partition: a batch mixes partitions, and a record
        must go to the changelog partition of its own events so their owner recovers it.
        """
        self.table.data[key] = doc
        # Awaiting send() only enqueues the record (keeping the records in order); the
        # future it returns resolves when the broker has it.
        delivered = await self.app.producer.send(
            self._changelog_topic,
            _JSON.encode(key).encode(),
            _JSON.encode(doc).encode(),
            partition=partition,
            timestamp=None,
            headers=None,
        )
        batch.writes.append(asyncio.ensure_future(delivered))

    async def _acknowledged(self, writes: list[asyncio.Future[Any]]) -> None:
        # faust acknowledges the batch's events (and may commit their offsets) as soon
        # as this batch returns, and a failed write does not stop faust's commit: so
        # the batch is done only when every write is acknowledged by the broker.
        results = await asyncio.gather(*writes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            # Exit without committing anything more: the restarted worker replays from
            # the last commit, idempotently. Carrying on would lose counts.
            log.critical(
                "changelog_write_failed", error=type(failures[0]).__name__, failed=len(failures)
            )
            os._exit(EXIT_TEMPFAIL)

    def _petition(self, petition_id: UUID) -> PetitionRecord | None:
        record = self._petitions.get(petition_id)
        if record is None:
            doc = self.table.data.get(petition_key(petition_id))
            if doc is not None:
                record = self._petitions[petition_id] = petition_from_json(doc)
        return record

    def _signature(self, key: str) -> SignatureRecord | None:
        doc = self.table.data.get(key)
        return None if doc is None else signature_from_json(doc)

    async def _announce(
        self, record: PetitionRecord, hit: MilestoneHit, correlation_id: str | None
    ) -> None:
        event = milestone_reached(record, hit)
        headers = [(EVENT_TYPE, event.event_type.encode())]
        if correlation_id:
            headers.append((CORRELATION_ID, correlation_id.encode()))
        await self._send_acknowledged(
            self.topics.milestones, event.key.encode(), encode(event), headers
        )
        MILESTONES.inc()
        log.info(
            "milestone_reached",
            petition_id=str(record.petition_id),
            threshold=hit.threshold,
            signatures=hit.signatures,
        )

    async def _dead_letter(self, record: Any, error: str) -> None:
        headers = _header_items(record.headers)
        headers.append((DLQ_ERROR, error[:500].encode()))
        headers.append((DLQ_SOURCE, f"{record.topic}:{record.partition}:{record.offset}".encode()))
        await self._send_acknowledged(self.topics.dead_letters, record.key, record.value, headers)
        DEAD_LETTERS.inc()
        _count_event("(invalid)", "dead_lettered")
        # Never the body: events carry names and email addresses.
        log.error(
            "event_dead_lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error=error,
        )

    async def _send_acknowledged(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        # A broker outage is not the event's fault: keep trying, without committing past it.
        attempt = 0
        while True:
            try:
                await self.app.producer.send_and_wait(
                    topic, key, value, partition=None, timestamp=None, headers=list(headers)
                )
                return
            except KafkaError as exc:
                delay = RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]
                attempt += 1
                log.warning("send_retrying", topic=topic, error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)

    # --- snapshots ------------------------------------------------------------------

    async def _publish_dirty(self) -> None:
        dirty, self._dirty = self._dirty, set()
        for petition_id in dirty:
            record = self._petition(petition_id)
            if record is None:
                continue
            snapshot = count_snapshot(record, source_limit=self.settings.public_source_limit)
            await self.app.producer.send(
                self.topics.counts,
                snapshot.key.encode(),
                encode(snapshot),
                partition=None,
                timestamp=None,
                headers=[(EVENT_TYPE, snapshot.event_type.encode())],
            )
            SNAPSHOTS.inc()

    async def _on_partitions_revoked(
        self, sender: Any, /, *args: Any, signal: Any, **kwargs: Any
    ) -> None:
        # Publish what this worker knows before the new owner publishes anything:
        # a snapshot sent after the handover could overwrite a newer one.
        await self._publish_dirty()
        await self.app.producer.flush()
        self._petitions.clear()
        self._watermarks.clear()

    async def _on_recovered(self) -> None:
        # A worker killed between applying events and publishing their snapshot
        # leaves `counts` behind the table: republish every petition we now own.
        self._petitions.clear()
        self._watermarks.clear()
        owned = {
            tp.partition for tp in self.app.assignor.assigned_actives() if tp.topic in self._sources
        }
        for key in list(self.table.data.keys()):
            if isinstance(key, str) and key.startswith("p:"):
                doc = self.table.data.get(key)
                if doc is not None and doc.get("partition") in owned:
                    self._dirty.add(UUID(doc["id"]))
        log.info(
            "counter_recovered",
            worker=self.settings.worker_name,
            partitions=sorted(owned),
            petitions=len(self._dirty),
        )
        self.recovered = True


def _timestamp(record: Any) -> float | None:
    """A source record's timestamp in seconds: faust's messages carry seconds, records
    read back with aiokafka (gaps) milliseconds, converted the way faust does."""
    if isinstance(record, ConsumerRecord):
        return None if record.timestamp is None else record.timestamp / 1000.0
    stamp = getattr(record, "timestamp", None)
    return None if stamp is None else float(stamp)


def _exit_to_rebuild() -> NoReturn:
    # The table was built from a log the broker no longer has: only a restart, which
    # recovers the table from the new broker's (empty) changelog and reads the topics
    # from their start, can rebuild the counts from what the new log holds.
    os._exit(EXIT_TEMPFAIL)


_EVENT_COUNTERS: dict[tuple[str, str], Any] = {}


def _count_event(event_type: str, outcome: Outcome | str) -> None:
    # Children of a labelled metric looked up once: labels() takes a lock and
    # validates the labels on every call, once per event.
    key = (event_type, str(outcome))
    child = _EVENT_COUNTERS.get(key)
    if child is None:
        child = _EVENT_COUNTERS[key] = EVENTS.labels(event_type, str(outcome))
    child.inc()


def _header_items(headers: Any) -> list[tuple[str, bytes]]:
    if not headers:
        return []
    if isinstance(headers, Mapping):
        return [(str(k), bytes(v)) for k, v in headers.items()]
    return [(str(k), bytes(v)) for k, v in headers]


def _correlation_id(headers: Any) -> str | None:
    for key, value in _header_items(headers):
        if key == CORRELATION_ID:
            return value.decode(errors="replace")
    return None


def _is_unknown_type(raw: bytes | None) -> bool:
    try:
        document = json.loads(raw or b"")
    except ValueError:
        return False
    event_type = document.get("event_type") if isinstance(document, dict) else None
    return isinstance(event_type, str) and event_type not in TOPIC_OF


def _describe(exc: ValidationError) -> str:
    # Field locations and error kinds only: pydantic's message quotes the input,
    # which may be personal data.
    problems = ", ".join(
        f"{'.'.join(str(part) for part in error['loc']) or '(root)'}: {error['type']}"
        for error in exc.errors()[:5]
    )
    return f"invalid event ({exc.error_count()} errors): {problems}"


async def _ensure_topics(settings: CounterSettings) -> None:
    # At start-up the broker may still be coming up.
    deadline = time.monotonic() + 60
    while True:
        try:
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                settings.kafka_topic_partitions,
                settings.kafka_replication_factor,
                settings.topics.all(),
            )
            return
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("broker_not_ready", error=type(exc).__name__)
            await asyncio.sleep(1)


def run_worker(settings: CounterSettings) -> None:
    """Run until SIGTERM/SIGINT: the faust worker, and the HTTP API unless disabled."""
    if not settings.verbose_framework_logs:
        for noisy in ("faust", "mode", "aiokafka"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_ensure_topics(settings))
    counter = CounterWorker(settings)
    register_lag_source("counter", faust_lag(counter.app))  # groundswell_consumer_lag_messages
    services: list[mode.ServiceT] = []
    if settings.serves_http:
        view = CountsView(
            settings.kafka_bootstrap_servers,
            settings.topics.counts,
            source_limit=settings.public_source_limit,
        )

        async def broker_ok() -> bool:
            return await broker_reachable(settings.kafka_bootstrap_servers)

        async def recovery_done() -> bool:
            return counter.recovered

        async def view_caught_up() -> bool:
            return view.caught_up

        http_app = create_http_app(
            settings,
            view,
            {"broker": broker_ok, "recovery": recovery_done, "counts_view": view_caught_up},
        )
        services += [CountsViewService(view), HttpService(http_app, settings.host, settings.port)]
    log.info(
        "counter_starting",
        worker=settings.worker_name,
        app_id=settings.app_id,
        http_port=settings.port if settings.serves_http else None,
    )
    worker = faust.Worker(
        counter.app,
        *services,
        loop=loop,
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
    )
    worker.spinner = None  # no terminal progress spinner in logs
    worker.execute_from_commandline()
