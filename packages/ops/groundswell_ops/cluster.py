"""What the broker knows: topics, partition end offsets, consumer groups and their offsets.

Correct on Apache Kafka and on the local Tansu broker (docs/operations.md, and
/work/shared/notes/tansu.md for the measurements):
- end offsets come from the high-water mark of a Fetch, never from ListOffsets(latest)
  alone, which Tansu answers with the base offset of the last record batch + 1. The
  Fetch starts at that listed offset (exact on Kafka, inside the last batch on Tansu),
  asks for no minimum and waits at most 10 ms, so it returns at once with at most one
  batch per partition. (Tansu answers a Fetch with max wait 0 with no partitions at all.)
- committed offsets come from an OffsetFetch that names every partition; Tansu cannot
  answer a whole-group OffsetFetch (`topics=null`).
- groups are listed with ListGroups (works on both); DescribeGroups is not used: Tansu's
  answer does not decode.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import KafkaError
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.offset import OffsetRequest
from groundswell_runtime.consumer_lag import committed_offsets

from groundswell_ops.errors import CannotConnect
from groundswell_ops.lag import TP

LATEST = -1
EARLIEST = -2
FETCH_MAX_WAIT_MS = 10
REQUEST_TIMEOUT_MS = 5000
# Configuration shown by `topics` (Tansu reports none of them; Kafka all).
SHOWN_CONFIGS = ("cleanup.policy", "retention.ms", "min.insync.replicas", "segment.bytes")


@dataclass(frozen=True)
class TopicLayout:
    name: str
    # partition -> leader broker id
    leaders: dict[int, int]
    replication: int
    configs: dict[str, str] = field(default_factory=dict)

    @property
    def partitions(self) -> list[TP]:
        return [(self.name, p) for p in sorted(self.leaders)]


def unreachable(bootstrap: str, exc: BaseException) -> CannotConnect:
    detail = str(exc) or type(exc).__name__
    return CannotConnect(f"cannot reach Kafka at {bootstrap}: {detail}")


class Cluster:
    """One admin connection; every call is a plain request (no consumer group is joined)."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self._admin = AIOKafkaAdminClient(
            bootstrap_servers=bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS
        )

    async def __aenter__(self) -> Cluster:
        try:
            await asyncio.wait_for(self._admin.start(), REQUEST_TIMEOUT_MS / 1000)
        except (KafkaError, OSError, TimeoutError) as exc:
            await self._admin.close()
            raise unreachable(self.bootstrap, exc) from None
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._admin.close()

    async def layout(self, names: Iterable[str] | None = None) -> dict[str, TopicLayout]:
        """Every topic (or the named ones that exist), with partition leaders."""
        wanted = sorted(names) if names is not None else await self._admin.list_topics()
        if not wanted:
            return {}
        described = await self._admin.describe_topics(list(wanted))
        layouts = {}
        for topic in described:
            if topic["error_code"] != 0 or topic.get("is_internal"):
                continue
            parts = topic["partitions"]
            layouts[topic["topic"]] = TopicLayout(
                topic["topic"],
                {p["partition"]: p["leader"] for p in parts},
                max((len(p["replicas"]) for p in parts), default=0),
            )
        return dict(sorted(layouts.items()))

    async def configs(self, names: Iterable[str]) -> dict[str, dict[str, str]]:
        resources = [ConfigResource(ConfigResourceType.TOPIC, n) for n in names]
        if not resources:
            return {}
        shown: dict[str, dict[str, str]] = {}
        for response in await self._admin.describe_configs(resources):
            for resource in response.resources:
                error, name, entries = resource[0], resource[3], resource[4]
                if error == 0:
                    shown[name] = {e[0]: e[1] for e in entries if e[0] in SHOWN_CONFIGS}
        return shown

    async def _by_leader(self, partitions: Sequence[TP]) -> dict[int, dict[str, list[int]]]:
        grouped: dict[int, dict[str, list[int]]] = defaultdict(lambda: defaultdict(list))
        layouts = await self.layout({t for t, _ in partitions})
        for topic, partition in partitions:
            layout = layouts.get(topic)
            if layout is None or partition not in layout.leaders:
                continue
            grouped[layout.leaders[partition]][topic].append(partition)
        return grouped

    async def _list_offsets(
        self, grouped: dict[int, dict[str, list[int]]], which: int
    ) -> dict[TP, int]:
        listed: dict[TP, int] = {}
        for leader, topics in grouped.items():
            request = OffsetRequest(
                -1, 0, [(t, [(p, which) for p in parts]) for t, parts in topics.items()]
            )
            response = await self._admin._client.send(leader, request)
            for topic, answers in response.topics:
                for answer in answers:
                    partition, error = answer[0], answer[1]
                    if error == 0:
                        # v1+: (partition, error, timestamp, offset, ...); v0: offsets list
                        offset = answer[3] if len(answer) > 3 else answer[2][0]
                        listed[(topic, partition)] = int(offset)
        return listed

    async def start_offsets(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """The first offset still held per partition (0 unless retention removed records)."""
        wanted = list(partitions)
        listed = await self._list_offsets(await self._by_leader(wanted), EARLIEST)
        return {tp: listed.get(tp, 0) for tp in wanted}

    async def end_offsets(self, partitions: Iterable[TP]) -> dict[TP, int]:
        """The offset the next record of each partition will get (exact on both brokers)."""
        wanted = list(partitions)
        grouped = await self._by_leader(wanted)
        listed = await self._list_offsets(grouped, LATEST)
        ends = dict(listed)
        for leader, topics in grouped.items():
            request = FetchRequest(
                FETCH_MAX_WAIT_MS,
                0,
                1 << 20,
                0,
                [
                    (t, [(p, listed.get((t, p), 0), 1) for p in parts])
                    for t, parts in topics.items()
                ],
            )
            response = await self._admin._client.send(leader, request)
            for topic, answers in response.topics:
                for answer in answers:
                    partition, error, highwater = answer[0], answer[1], answer[2]
                    if error == 0 and highwater >= 0:
                        tp = (topic, partition)
                        ends[tp] = max(int(highwater), listed.get(tp, 0))
        return {tp: ends.get(tp, 0) for tp in wanted}

    async def groups(self) -> list[str]:
        """Consumer groups the broker knows (those with committed offsets included)."""
        listed = await self._admin.list_consumer_groups()
        return sorted({str(g[0]) for g in listed})

    async def committed(self, group: str, partitions: Iterable[TP]) -> dict[TP, int]:
        """Committed offset per named partition; -1 where the group committed nothing."""
        wanted = [TopicPartition(t, p) for t, p in partitions]
        marks = await committed_offsets(self._admin, group, wanted)
        return {(tp.topic, tp.partition): mark for tp, mark in marks.items()}
