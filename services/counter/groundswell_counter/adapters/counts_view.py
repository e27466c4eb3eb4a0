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


def render(snapshot: PetitionCountChanged) -> CountEntry:
    body = (
        CountDocument(
            slug=snapshot.slug,
            signatures=snapshot.signatures,
            pending=snapshot.pending,
            by_area=snapshot.by_area,
            by_country=snapshot.by_country,
            by_source=snapshot.by_source,
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
    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._topic = topic
        self._by_id: dict[UUID, CountEntry] = {}
        self._id_by_slug: dict[str, UUID] = {}
        self._changed: dict[UUID, asyncio.Future[None]] = {}
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

    # --- updating -------------------------------------------------------------

    def apply(self, snapshot: PetitionCountChanged) -> None:
        entry = render(snapshot)
        previous = self._by_id.get(snapshot.petition_id)
        if previous is not None and previous.etag == entry.etag:
            return
        if previous is not None and previous.slug and previous.slug != entry.slug:
            self._id_by_slug.pop(previous.slug, None)
        self._by_id[snapshot.petition_id] = entry
        if entry.slug:
            self._id_by_slug[entry.slug] = snapshot.petition_id
        VIEW_PETITIONS.set(len(self._by_id))
        future = self._changed.pop(snapshot.petition_id, None)
        if future is not None and not future.done():
            future.set_result(None)

    def apply_records(self, records: Iterable[ConsumerRecord[bytes, bytes]]) -> None:
        for record in records:
            try:
                event = parse_event(record.value or b"")
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
