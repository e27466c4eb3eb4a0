"""Dead letters: what waits in each `<consumer>.dlq`, and sending it back once fixed.

What has been redriven is recorded on the broker itself, as the committed offsets of
the consumer group `groundswell-ops-redrive` on each dead-letter partition: records
before that offset were sent back, records from it on are waiting. A redrive sends the
waiting records (up to the end it saw when it started) to the topic named by their
`dlq_source` header, with their key, value and headers (minus the dead-letter ones,
plus `dlq_redriven_from`), waits for every send to be acknowledged, then commits. If it
dies between the two, the next redrive sends some records again: consumers drop an
event they have handled by its id, so the effect still happens once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka import TopicPartition
from aiokafka.structs import OffsetAndMetadata
from groundswell_contracts.headers import DLQ_ERROR, DLQ_SOURCE
from groundswell_runtime.kafka import make_producer

from groundswell_ops.cluster import Cluster, TopicLayout
from groundswell_ops.config import REDRIVE_GROUP
from groundswell_ops.errors import UsageError
from groundswell_ops.lag import TP
from groundswell_ops.reading import Record, read_ranges, reader
from groundswell_ops.records import RecordView, header, view

DLQ_SUFFIX = ".dlq"
REDRIVEN_FROM = "dlq_redriven_from"


@dataclass(frozen=True)
class DeadLetterTopic:
    topic: str
    total: int  # records held
    redriven: int  # records before the redrive mark
    waiting: int
    # partition -> (first waiting offset, end offset)
    pending: dict[TP, tuple[int, int]] = field(default_factory=dict)


def source_topic(record: Record) -> str | None:
    """The topic named by `dlq_source` ("topic:partition:offset"), if well formed."""
    source = header(record, DLQ_SOURCE)
    if not source:
        return None
    topic, _, rest = source.rpartition(":")
    topic, _, partition = topic.rpartition(":")
    return topic if topic and partition.isdigit() and rest.isdigit() else None


async def dead_letter_topics(cluster: Cluster) -> list[str]:
    return [t for t in await cluster.layout() if t.endswith(DLQ_SUFFIX)]


def dead_letters_from(
    layouts: Mapping[str, TopicLayout],
    starts: Mapping[TP, int],
    ends: Mapping[TP, int],
    marks: Mapping[TP, int],
) -> list[DeadLetterTopic]:
    """Each dead-letter topic's size, and what is before and after the redrive mark."""
    surveyed = []
    for name, layout in layouts.items():
        if not name.endswith(DLQ_SUFFIX):
            continue
        total = redriven = 0
        pending: dict[TP, tuple[int, int]] = {}
        for tp in layout.partitions:
            start, end = starts.get(tp, 0), ends.get(tp, 0)
            # A mark past the end: the broker lost its log (local broker restarted).
            first = min(max(marks.get(tp, -1), start), end)
            total += end - start
            redriven += first - start
            if end > first:
                pending[tp] = (first, end)
        surveyed.append(DeadLetterTopic(name, total, redriven, total - redriven, pending))
    return surveyed


async def survey(cluster: Cluster, topics: Sequence[str] | None = None) -> list[DeadLetterTopic]:
    names = list(topics) if topics is not None else await dead_letter_topics(cluster)
    layouts = await cluster.layout(names)
    missing = sorted(set(names) - set(layouts))
    if missing:
        raise UsageError(f"no such topic: {', '.join(missing)}")
    not_dlq = sorted(n for n in names if not n.endswith(DLQ_SUFFIX))
    if not_dlq:
        raise UsageError(f"not a dead-letter topic (<consumer>.dlq): {', '.join(not_dlq)}")
    partitions = [tp for layout in layouts.values() for tp in layout.partitions]
    starts = await cluster.start_offsets(partitions)
    ends = await cluster.end_offsets(partitions)
    marks = await cluster.committed(REDRIVE_GROUP, partitions)
    return dead_letters_from(layouts, starts, ends, marks)


async def waiting_records(
    cluster: Cluster, topic: str, limit: int | None = None
) -> list[RecordView]:
    [dead] = await survey(cluster, [topic])
    shown: list[RecordView] = []
    async with reader(cluster.bootstrap) as consumer:
        async for record in read_ranges(consumer, dead.pending):
            shown.append(view(record))
            if limit is not None and len(shown) >= limit:
                break
    return sorted(shown, key=lambda v: (v.time, v.partition, v.offset))


@dataclass
class RedriveResult:
    topic: str
    sent: list[RecordView] = field(default_factory=list)
    # Records that name no source topic: left waiting (the mark stops before them).
    unroutable: list[RecordView] = field(default_factory=list)


async def redrive(cluster: Cluster, topic: str, *, dry_run: bool = False) -> RedriveResult:
    [dead] = await survey(cluster, [topic])
    result = RedriveResult(topic)
    # Per partition: the offset up to which everything was sent (the new mark).
    marks: dict[TP, int] = {}
    blocked: set[TP] = set()
    producer = make_producer(cluster.bootstrap)
    await producer.start()
    try:
        async with reader(cluster.bootstrap) as consumer:
            sends = []
            async for record in read_ranges(consumer, dead.pending):
                tp = (record.topic, record.partition)
                if tp in blocked:
                    continue
                target = source_topic(record)
                if target is None:
                    blocked.add(tp)
                    result.unroutable.append(view(record))
                    continue
                result.sent.append(view(record))
                marks[tp] = record.offset + 1
                if dry_run:
                    continue
                headers = [(k, v) for k, v in record.headers if k not in (DLQ_ERROR, DLQ_SOURCE)]
                where = f"{record.topic}:{record.partition}:{record.offset}".encode()
                headers.append((REDRIVEN_FROM, where))
                sends.append(
                    await producer.send(target, value=record.value, key=record.key, headers=headers)
                )
            for delivery in sends:
                await delivery  # every send acknowledged before anything is marked
    finally:
        await producer.stop()
    if marks and not dry_run:
        async with reader(cluster.bootstrap, REDRIVE_GROUP) as committer:
            offsets = {TopicPartition(*tp): OffsetAndMetadata(o, "") for tp, o in marks.items()}
            committer.assign(list(offsets))
            await committer.commit(offsets)
    return result
