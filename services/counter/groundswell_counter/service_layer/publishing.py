"""Count snapshots: each petition that changed since its last snapshot, published to
`counts` (a timer calls this at most once per `coalesce_interval_seconds`, and the
rebalance hooks before a handover and after a recovery)."""

from __future__ import annotations

from groundswell_contracts.events import encode
from groundswell_contracts.headers import EVENT_TYPE
from prometheus_client import Counter

from groundswell_counter.adapters.snapshots import count_snapshot
from groundswell_counter.service_layer.counting import Counting
from groundswell_counter.service_layer.ports import Publisher

SNAPSHOTS = Counter("groundswell_counter_snapshots_total", "Count snapshots published")


class SnapshotPublisher:
    def __init__(
        self, counting: Counting, publisher: Publisher, topic: str, *, source_limit: int
    ) -> None:
        self._counting = counting
        self._publisher = publisher
        self._topic = topic
        self._source_limit = source_limit

    async def publish_dirty(self) -> None:
        dirty, self._counting.dirty = self._counting.dirty, set()
        for petition_id in dirty:
            record = self._counting.petition(petition_id)
            if record is None:
                continue
            snapshot = count_snapshot(record, source_limit=self._source_limit)
            await self._publisher.send(
                self._topic,
                snapshot.key.encode(),
                encode(snapshot),
                [(EVENT_TYPE, snapshot.event_type.encode())],
            )
            SNAPSHOTS.inc()
