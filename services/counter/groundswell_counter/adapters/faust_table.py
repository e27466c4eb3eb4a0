"""faust's table, stream and consumer, used below their public API (each use explained).

1. Table records go straight to the producer (`FaustTable.put`), not through the
   table's own `table[key] = value`, which buffers every write and sends it from a
   per-write callback: a third of the worker's time went there. The record is written
   in the format faust recovers the table from (JSON key and value, as the table's
   `key_type=str` and default value serializer write them) and to an explicit
   changelog partition: a batch mixes partitions, and a record must go to the
   changelog partition of its own events so that their owner recovers it. The local
   copy is set through `table.data` (the store), which faust itself fills on recovery.
2. `consumer_highwater` reads the high-water mark faust's consumer learnt from its last
   Fetch (`app.consumer.highwater`), which raises in several ways when the partition
   is not (or no longer) assigned or not yet fetched.
3. `owned_partitions` asks faust's assignor for the active partitions of this worker
   (`app.assignor.assigned_actives()`), which faust uses internally for recovery.
4. `batches` calls `take_events`, which faust's Stream has but its StreamT interface
   does not declare.

The transport-level adjustments (end offsets, fetch waits, the fetcher's hand-over) are
in `faust_transport`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from typing import Any, cast
from uuid import UUID

import faust
import structlog
from faust.exceptions import ConsumerNotStarted
from faust.types import TP

from groundswell_counter.service_layer.ports import ChangelogWriteFailed, Highwater

log = structlog.get_logger()

# Compact JSON, as faust's own serializer would write it; one encoder for every record
# (json.dumps with separators builds a new encoder per call).
_JSON = json.JSONEncoder(separators=(",", ":"))


class FaustTable:
    """Implements `service_layer.ports.ChangelogWriter` over a faust table (hack 1)."""

    def __init__(self, app: faust.App, table: faust.types.TableT[str, Any]) -> None:
        self._app = app
        self._data = table.data
        self._changelog_topic = table.changelog_topic.get_topic_name()
        self._writes: list[asyncio.Future[Any]] = []

    def get(self, key: str) -> dict[str, Any] | None:
        return cast(dict[str, Any] | None, self._data.get(key))

    async def put(self, key: str, doc: dict[str, Any], partition: int) -> None:
        self._data[key] = doc
        # Awaiting send() only enqueues the record (keeping the records in order); the
        # future it returns resolves when the broker has it. The producer is looked up
        # here, not kept: faust creates it once the app runs.
        delivered = await self._app.producer.send(
            self._changelog_topic,
            _JSON.encode(key).encode(),
            _JSON.encode(doc).encode(),
            partition=partition,
            timestamp=None,
            headers=None,
        )
        self._writes.append(asyncio.ensure_future(delivered))

    async def acknowledged(self) -> None:
        # faust acknowledges a batch's events (and may commit their offsets) as soon as
        # the batch returns, and a failed write does not stop faust's commit: so the
        # batch is done only when every write is acknowledged by the broker.
        writes, self._writes = self._writes, []
        results = await asyncio.gather(*writes, return_exceptions=True)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            log.critical(
                "changelog_write_failed", error=type(failures[0]).__name__, failed=len(failures)
            )
            raise ChangelogWriteFailed(type(failures[0]).__name__, len(failures))

    def petitions_on(self, partitions: set[int]) -> set[UUID]:
        """The petitions whose records belong to `partitions`."""
        found = set()
        for key in list(self._data.keys()):
            # Petition records only (`domain.processing.petition_key`).
            if isinstance(key, str) and key.startswith("p:"):
                doc = self._data.get(key)
                if doc is not None and doc.get("partition") in partitions:
                    found.add(UUID(doc["id"]))
        return found


def consumer_highwater(app: faust.App) -> Highwater:
    """A `service_layer.ports.Highwater` over faust's consumer (hack 2)."""

    def highwater(topic: str, partition: int) -> int | None:
        try:
            return cast(int | None, app.consumer.highwater(TP(topic, partition)))
        except (ConsumerNotStarted, AssertionError, AttributeError, KeyError):
            # Not assigned (any more), or no fetch yet: nothing to compare with.
            return None

    return highwater


def owned_partitions(app: faust.App, topics: Iterable[str]) -> set[int]:
    """The partitions of `topics` this worker actively owns (hack 3)."""
    wanted = set(topics)
    return {tp.partition for tp in app.assignor.assigned_actives() if tp.topic in wanted}


def batches(
    stream: faust.StreamT[bytes], max_events: int, within: float
) -> AsyncIterator[Sequence[faust.types.EventT[bytes]]]:
    """Up to `max_events` events at a time, or what came `within` seconds (hack 4)."""
    return cast(faust.Stream[bytes], stream).take_events(max_events, within=within)
