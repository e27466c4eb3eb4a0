"""The served view: the latest count snapshot per petition, read from the `counts` topic.

Every worker reads every partition of `counts` from the beginning with a plain
consumer (no group), so a request landing on any worker gets the same answer,
whichever worker owns the petition's partition of the source topics. The faust
table is never read here: it only holds the partitions this worker owns.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord
from aiokafka.errors import KafkaError
from groundswell_contracts.events import PetitionCountChanged, parse_event
from prometheus_client import Counter, Gauge
from pydantic import BaseModel, ValidationError

from groundswell_counter.adapters.kafka_reads import FETCH_MAX_WAIT_MS
from groundswell_counter.adapters.snapshots import DEFAULT_SOURCE_LIMIT
from groundswell_counter.domain.tally import top_buckets

log = structlog.get_logger()

VIEW_PETITIONS = Gauge("groundswell_counter_view_petitions", "Petitions in the served view")
VIEW_SNAPSHOTS = Counter(
    "groundswell_counter_view_snapshots_total", "Count snapshots read into the served view"
)


class CountDocument(BaseModel):
    """What `GET /api/petitions/{slug}/count` returns (and each live-stream event carries)."""

    slug: str | None
    signatures: int
    pending: int
    by_area: dict[str, int]
    by_country: dict[str, int]
    by_source: dict[str, int]
    by_referral: dict[str, int]
    milestones: list[int]
    goal: int | None
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class CountEntry:
    petition_id: UUID
    slug: str | None
    # Rendered once per snapshot, not once per request: one body, one ETag, any worker.
    body: bytes
    etag: str


def render(snapshot: PetitionCountChanged, source_limit: int = DEFAULT_SOURCE_LIMIT) -> CountEntry:
    """The public document of a snapshot. `by_source` is capped here too, so that a
    snapshot from a worker that did not cap it (an older version) stays bounded."""
    # model_construct: the snapshot has just been validated, once is enough.
    body = (
        CountDocument.model_construct(
            slug=snapshot.slug,
            signatures=snapshot.signatures,
            pending=snapshot.pending,
            by_area=snapshot.by_area,
            by_country=snapshot.by_country,
            by_source=top_buckets(snapshot.by_source, source_limit),
            by_referral=snapshot.by_referral,
            milestones=snapshot.milestones,
            goal=snapshot.goal,
            updated_at=snapshot.occurred_at,
        )
        .model_dump_json()
        .encode()
    )
    etag = '"' + hashlib.blake2b(body, digest_size=12).hexdigest() + '"'
    return CountEntry(snapshot.petition_id, snapshot.slug, body, etag)


class CountsView:
    def __init__(
        self, bootstrap: str, topic: str, source_limit: int = DEFAULT_SOURCE_LIMIT
    ) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._source_limit = source_limit
        # A digest of each petition's last snapshot record: the same record read again
        # (a worker republishes every petition it owns after a recovery or a
        # rebalance) is recognised without being decoded and rendered again.
        self._last_digest: dict[bytes, bytes] = {}
        self._by_id: dict[UUID, CountEntry] = {}
        self._id_by_slug: dict[str, UUID] = {}
        self._changed: dict[UUID, asyncio.Future[None]] = {}
        # Listeners waiting for a slug the view has not met yet (see `wait_for_slug`).
        self._slug_waiters: dict[str, set[asyncio.Future[None]]] = {}
        self._caught_up = False

    # --- reading --------------------------------------------------------------

    @property
    def caught_up(self) -> bool:
        """True once the view has read everything that was in the topic when it started."""
        return self._caught_up

    def by_slug(self, slug: str) -> CountEntry | None:
        petition_id = self._id_by_slug.get(slug)
        return None if petition_id is None else self._by_id.get(petition_id)

    def by_id(self, petition_id: UUID) -> CountEntry | None:
        return self._by_id.get(petition_id)

    def changed(self, petition_id: UUID) -> asyncio.Future[None]:
        """A future resolved at the petition's next change.

        Shared by every listener of the petition, so an idle listener costs one
        waiting coroutine and no polling. Never cancel it: await it through
        asyncio.wait (which leaves it alone) or asyncio.shield.
        """
        future = self._changed.get(petition_id)
        if future is None:
            future = asyncio.get_running_loop().create_future()
            self._changed[petition_id] = future
        return future

    async def wait_for_slug(self, slug: str, within: float) -> CountEntry | None:
        """The slug's entry, waiting up to `within` seconds for it to appear.

        A petition page opened as soon as the petition is created asks for its live
        stream before the petition's first snapshot has reached this view (~0.1-0.3 s
        later). Answering 404 there ends the browser's EventSource for good, and SSE
        clients that do retry come back only after their ~3 s retry delay: that was the
        3.4-3.7 s wait before a new petition's first signature showed.
        """
        entry = self.by_slug(slug)
        if entry is not None or within <= 0:
            return entry
        waiter = asyncio.get_running_loop().create_future()
        waiters = self._slug_waiters.setdefault(slug, set())
        waiters.add(waiter)
        try:
            await asyncio.wait({waiter}, timeout=within)
        finally:
            waiters.discard(waiter)
            if not waiters and self._slug_waiters.get(slug) is waiters:
                del self._slug_waiters[slug]
        return self.by_slug(slug)

    # --- updating -------------------------------------------------------------

    def apply(self, snapshot: PetitionCountChanged) -> None:
        entry = render(snapshot, self._source_limit)
        previous = self._by_id.get(snapshot.petition_id)
        if previous is not None and previous.etag == entry.etag:
            return
        if previous is not None and previous.slug and previous.slug != entry.slug:
            self._id_by_slug.pop(previous.slug, None)
        self._by_id[snapshot.petition_id] = entry
        if entry.slug:
            self._id_by_slug[entry.slug] = snapshot.petition_id
            for waiter in self._slug_waiters.pop(entry.slug, ()):
                if not waiter.done():
                    waiter.set_result(None)
        VIEW_PETITIONS.set(len(self._by_id))
        future = self._changed.pop(snapshot.petition_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def apply_records(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            raw = record.value or b""
            if record.key is not None:
                digest = hashlib.blake2b(raw, digest_size=16).digest()
                if self._last_digest.get(record.key) == digest:
                    continue
                self._last_digest[record.key] = digest
            try:
                event = parse_event(raw)
            except ValidationError:
                log.warning(
                    "count_snapshot_unreadable", partition=record.partition, offset=record.offset
                )
                continue
            if isinstance(event, PetitionCountChanged):
                VIEW_SNAPSHOTS.inc()
                self.apply(event)

    async def run(self) -> None:
        while True:
            # No group: every partition, from the beginning, on every worker. Not
            # runtime's make_consumer: that one has no way to set the fetch wait, and
            # the local broker holds each Fetch for half of it (see kafka_reads).
            consumer = AIOKafkaConsumer(
                self._topic,
                bootstrap_servers=self._bootstrap,
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
            )
            try:
                await consumer.start()
                await self._consume(consumer)
            except KafkaError as exc:
                log.warning("counts_view_retrying", error=type(exc).__name__)
                await asyncio.sleep(1)
            finally:
                await consumer.stop()

    async def _consume(self, consumer: AIOKafkaConsumer) -> None:
        while True:
            batches = await consumer.getmany(timeout_ms=500, max_records=2000)
            for records in batches.values():
                self.apply_records(records)
            if not self._caught_up and await self._reached_end(consumer):
                self._caught_up = True
                log.info("counts_view_caught_up", petitions=len(self._by_id))

    async def _reached_end(self, consumer: AIOKafkaConsumer) -> bool:
        # The high-water mark from Fetch, never ListOffsets: the local broker's
        # ListOffsets(latest) undercounts.
        assignment = consumer.assignment()
        if not assignment:
            return False
        for tp in assignment:
            highwater = consumer.highwater(tp)
            if highwater is None or await consumer.position(tp) < highwater:
                return False
        return True
