"""The monitor's data: one reading of the broker, PostgreSQL and the services per tick.

`Monitor.tick` gathers; `findings` (pure) says what an operator should look at. The
rendering lives in `render.py`, the loop in `cli.py`.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

import asyncpg

from groundswell_ops.cluster import Cluster, TopicLayout
from groundswell_ops.config import OUTBOX_SCHEMAS, REDRIVE_GROUP, OpsConfig
from groundswell_ops.database import OutboxBacklog, open_connection, outbox_backlog
from groundswell_ops.dlq import DeadLetterTopic, dead_letters_from
from groundswell_ops.errors import CannotConnect
from groundswell_ops.health import ServiceHealth, probe_all
from groundswell_ops.lag import TP, GroupLag, Sample, group_lag, rates_in

# An outbox whose oldest pending row is older than this is not keeping up.
OUTBOX_STALE_SECONDS = 30.0
# Readings kept to judge whether lag grows (one per tick).
WINDOW = 5


@dataclass(frozen=True)
class PartitionRow:
    partition: int
    end: int
    per_second: float | None


@dataclass(frozen=True)
class TopicRow:
    topic: str
    partitions: list[PartitionRow]

    @property
    def end(self) -> int:
        return sum(p.end for p in self.partitions)

    @property
    def per_second(self) -> float | None:
        rates = [p.per_second for p in self.partitions]
        return None if any(r is None for r in rates) else sum(r for r in rates if r is not None)


@dataclass
class Snapshot:
    taken_at: str
    bootstrap: str
    topics: list[TopicRow] = field(default_factory=list)
    groups: list[GroupLag] = field(default_factory=list)
    dead_letters: list[DeadLetterTopic] = field(default_factory=list)
    outbox: list[OutboxBacklog] = field(default_factory=list)
    services: list[ServiceHealth] = field(default_factory=list)
    # Parts that could not be read this tick ("postgresql": "cannot reach ...").
    errors: dict[str, str] = field(default_factory=dict)

    @property
    def findings(self) -> list[str]:
        return findings(self)

    def to_json(self) -> dict[str, Any]:
        document = asdict(self)
        for topic, row in zip(document["topics"], self.topics, strict=True):
            topic["end"], topic["per_second"] = row.end, row.per_second
        for group, lag in zip(document["groups"], self.groups, strict=True):
            group["partitions"] = [
                {"topic": t, "partition": p, "lag": n} for (t, p), n in lag.partitions.items()
            ]
        for dead in document["dead_letters"]:
            dead.pop("pending")
        document["findings"] = self.findings
        return document


def findings(snapshot: Snapshot) -> list[str]:
    """What needs a look, worst first; empty when events flow and nothing piles up."""
    found = [f"{part}: {error}" for part, error in snapshot.errors.items()]
    for service in snapshot.services:
        if not service.alive:
            found.append(f"{service.name} not answering at {service.url}")
        elif not service.ready:
            checks = ", ".join(service.failing) or "not ready"
            found.append(f"{service.name} not ready ({checks})")
    for group in snapshot.groups:
        # Records in flight make a busy group's lag wobble; it is piling up when it grows
        # and is more than a second of the group's own handling (all of it, if stopped).
        if group.trend == "growing" and group.total > (group.consumed_per_second or 0):
            found.append(f"group {group.group}: lag growing ({group.total})")
    for dead in snapshot.dead_letters:
        if dead.waiting:
            found.append(f"{dead.topic}: {dead.waiting} dead letters waiting")
    for box in snapshot.outbox:
        if box.oldest_age_seconds is not None and box.oldest_age_seconds > OUTBOX_STALE_SECONDS:
            found.append(
                f"{box.schema} outbox: {box.pending} pending, oldest {box.oldest_age_seconds:.0f}s"
            )
    return found


class Monitor:
    """Keeps the last few readings so rates and lag trends span ticks."""

    def __init__(self, config: OpsConfig, cluster: Cluster, *, window: int = WINDOW) -> None:
        self.config = config
        self.cluster = cluster
        self.history: deque[Sample] = deque(maxlen=window)
        self._db: asyncpg.Connection | None = None

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close(timeout=2)
            self._db = None

    async def sample(self) -> tuple[Sample, dict[str, TopicLayout]]:
        layouts = await self.cluster.layout()
        partitions: list[TP] = [tp for layout in layouts.values() for tp in layout.partitions]
        starts, ends, listed = await asyncio.gather(
            self.cluster.start_offsets(partitions),
            self.cluster.end_offsets(partitions),
            self.cluster.groups(),
        )
        committed: dict[str, dict[TP, int]] = {}
        for group in sorted(set(self.config.groups) | set(listed)):
            offsets = await self.cluster.committed(group, partitions)
            expected = self.config.groups.get(group, ())
            # A group's partitions: those it committed on, and those it is meant to read.
            committed[group] = {tp: o for tp, o in offsets.items() if o >= 0 or tp[0] in expected}
        return Sample(time.monotonic(), starts, ends, committed), layouts

    async def _outbox(self) -> list[OutboxBacklog]:
        if self._db is None or self._db.is_closed():
            self._db = await open_connection(self.config.database_url)
        try:
            return await outbox_backlog(self._db, OUTBOX_SCHEMAS)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            self._db = None
            raise

    async def tick(self) -> Snapshot:
        snapshot = Snapshot(
            datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            self.cluster.bootstrap,
        )
        sampled, services, outbox = await asyncio.gather(
            self.sample(),
            probe_all(self.config.services),
            self._outbox(),
            return_exceptions=True,
        )
        if isinstance(sampled, BaseException):
            raise sampled  # the broker is the one part the monitor cannot do without
        sample, layouts = sampled
        previous = self.history[-1] if self.history else None
        self.history.append(sample)
        rates = rates_in(previous, sample)
        snapshot.topics = [
            TopicRow(
                name,
                [
                    PartitionRow(p, sample.ends.get((name, p), 0), rates.get((name, p)))
                    for p in sorted(layout.leaders)
                ],
            )
            for name, layout in layouts.items()
        ]
        snapshot.groups = [
            group_lag(list(self.history), g) for g in sample.committed if g != REDRIVE_GROUP
        ]
        snapshot.dead_letters = dead_letters_from(
            layouts, sample.starts, sample.ends, sample.committed.get(REDRIVE_GROUP, {})
        )
        if isinstance(services, BaseException):
            snapshot.errors["services"] = str(services) or type(services).__name__
        else:
            snapshot.services = services
        if isinstance(outbox, CannotConnect):
            snapshot.errors["postgresql"] = str(outbox)
        elif isinstance(outbox, BaseException):
            snapshot.errors["postgresql"] = f"{type(outbox).__name__}: {outbox}"
        else:
            snapshot.outbox = outbox
        return snapshot
