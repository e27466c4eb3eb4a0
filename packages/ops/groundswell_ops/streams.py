"""`tail` and `trace`: records of one topic as they come, or one request's path everywhere.

A request's correlation id travels in the `correlation_id` header of every event it
caused (signing's outbox sets it, and each consumer binds it while handling, so what a
consumer publishes in turn carries it too) and in every JSON log line the services
write while handling it. `trace` reads both and puts them on one timeline.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from groundswell_contracts.headers import CORRELATION_ID
from groundswell_contracts.topics import Topic, all_topics

from groundswell_ops.cluster import Cluster
from groundswell_ops.errors import UsageError
from groundswell_ops.reading import Record, follow, read_ranges, reader
from groundswell_ops.records import RecordView, header, masked, scrub, view

# Log fields shown in their own columns; the rest goes into the summary.
LOG_COLUMNS = ("timestamp", "service", "level", "event", "correlation_id", "event_id")


async def petition_key(cluster: Cluster, slug: str, topic: str = Topic.PETITIONS.value) -> str:
    """The petition id (every record's key) for a slug, from the `petitions` topic."""
    layouts = await cluster.layout([topic])
    partitions = [tp for layout in layouts.values() for tp in layout.partitions]
    starts = await cluster.start_offsets(partitions)
    ends = await cluster.end_offsets(partitions)
    found: str | None = None
    async with reader(cluster.bootstrap) as consumer:
        ranges = {tp: (starts[tp], ends[tp]) for tp in partitions}
        async for record in read_ranges(consumer, ranges):
            try:
                document = json.loads(record.value or b"")
            except ValueError:
                continue
            if isinstance(document, dict) and document.get("slug") == slug:
                found = str(document.get("petition_id"))
    if found is None:
        raise UsageError(f"no petition with slug {slug!r} on the {topic} topic")
    return found


async def tail(
    cluster: Cluster,
    topic: str,
    *,
    from_beginning: bool,
    follow_new: bool,
    key: str | None = None,
) -> AsyncIterator[RecordView]:
    layouts = await cluster.layout([topic])
    if topic not in layouts:
        raise UsageError(f"no such topic: {topic}")
    partitions = layouts[topic].partitions
    ends = await cluster.end_offsets(partitions)
    starts = await cluster.start_offsets(partitions) if from_beginning else ends
    wanted = key.encode() if key is not None else None
    async with reader(cluster.bootstrap) as consumer:
        records: AsyncIterator[Record]
        if follow_new:
            records = follow(consumer, starts)
        else:
            records = read_ranges(consumer, {tp: (starts[tp], ends[tp]) for tp in partitions})
        async for record in records:
            if wanted is None or record.key == wanted:
                yield view(record)


@dataclass(frozen=True)
class LogLine:
    time: str
    service: str
    level: str
    event: str
    event_id: str | None
    summary: str
    file: str

    def line(self) -> str:
        eid = f"  event_id={self.event_id}" if self.event_id else ""
        return f"{self.time}  log:{self.service}  {self.level}  {self.event}{eid}  {self.summary}"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def trace_logs(directory: Path, correlation_id: str) -> list[LogLine]:
    """JSON log lines carrying the id, from every `*.log` file under the directory."""
    if not directory.is_dir():
        raise UsageError(f"not a directory: {directory}")
    found = []
    for path in sorted(directory.rglob("*.log")):
        with path.open(errors="replace") as lines:
            for text in lines:
                if correlation_id not in text:
                    continue  # cheap filter before parsing
                try:
                    entry = json.loads(text)
                except ValueError:
                    continue
                if not isinstance(entry, dict) or entry.get("correlation_id") != correlation_id:
                    continue
                rest = masked({k: v for k, v in entry.items() if k not in LOG_COLUMNS})
                found.append(
                    LogLine(
                        time=str(entry.get("timestamp", "-")),
                        service=str(entry.get("service") or path.stem),
                        level=str(entry.get("level", "-")),
                        event=scrub(str(entry.get("event", ""))),
                        event_id=str(entry["event_id"]) if entry.get("event_id") else None,
                        summary=" ".join(f"{k}={v}" for k, v in rest.items())[:160],
                        file=str(path),
                    )
                )
    return sorted(found, key=lambda line: line.time)


async def trace_topics(
    cluster: Cluster, correlation_id: str, topics: Iterable[str] | None = None
) -> list[RecordView]:
    """Every record whose `correlation_id` header is the id, read from start to end."""
    layouts = await cluster.layout(topics)
    if topics is None:
        # Groundswell's own topics (faust changelogs are large and carry no ids), with any
        # prefix a test or a second stack put before them.
        ours = tuple(all_topics())
        layouts = {n: lay for n, lay in layouts.items() if n.endswith(ours)}
    partitions = [tp for layout in layouts.values() for tp in layout.partitions]
    starts = await cluster.start_offsets(partitions)
    ends = await cluster.end_offsets(partitions)
    found = []
    async with reader(cluster.bootstrap) as consumer:
        ranges = {tp: (starts[tp], ends[tp]) for tp in partitions}
        async for record in read_ranges(consumer, ranges):
            if header(record, CORRELATION_ID) == correlation_id:
                found.append(view(record))
    return sorted(found, key=lambda v: (v.time, v.topic, v.partition, v.offset))
