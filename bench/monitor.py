"""Watching the stack from outside while the load runs.

- counts: `GET /api/petitions/{slug}/count` per petition every --poll-ms (with
  If-None-Match, as a browser would), keeping each change and when it was seen;
- every second: the signing outbox backlog and its oldest row's age, each consumer
  group's lag on `signatures`, the messages in the SMTP sink, and the CPU seconds and
  resident memory of every process tree (services, PostgreSQL, broker, sink, generator);
- around each step's load: how long each tree waited for a core (`core_waits`).

Consumer lag = high-water mark - committed offset, summed over partitions. On the local
broker (Tansu) ListOffsets(latest) undercounts and a whole-group OffsetFetch is
malformed, so the high-water marks come from Fetch responses and the committed offsets
from an OffsetFetch that names the partitions (a consumer with the group's id that
never subscribes, so it never joins the group).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from dataclasses import dataclass, field

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from prometheus_client.parser import text_string_to_metric_families
from stackrun import ProcessTree, Stack, children_map

LAG_GROUPS = ("counter", "mailer", "sharing")


@dataclass
class Sample:
    t: float
    outbox_pending: int | None
    outbox_oldest_s: float | None
    sink: int
    lag: dict[str, int | None]
    cpu: dict[str, float]
    rss: dict[str, int]


class LagProbe:
    def __init__(self, bootstrap: str, topic: str, partitions: int, groups: list[str]) -> None:
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.reader = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=50,
            max_partition_fetch_bytes=65536,
        )
        self.groups = {
            g: AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=g, enable_auto_commit=False)
            for g in groups
        }

    async def start(self) -> None:
        await self.reader.start()
        self.reader.assign(self.tps)
        for tp in self.tps:
            self.reader.seek(tp, 0)
        # An assigned consumer fetches in the background all the time (here every 50 ms,
        # each fetch costing the local broker a pass over the partition's batches): the
        # probe would load the broker like one more service. Paused between probes.
        self.reader.pause(*self.tps)
        for consumer in self.groups.values():
            await consumer.start()

    async def highwaters(self) -> dict[TopicPartition, int]:
        for tp in self.tps:
            known = self.reader.highwater(tp)
            # Fetching from inside the last batch returns it with the current high-water mark.
            self.reader.seek(tp, max((known or 0) - 1, 0))
        self.reader.resume(*self.tps)
        try:
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline:
                await self.reader.getmany(timeout_ms=200, max_records=100_000)
                if all(self.reader.highwater(tp) is not None for tp in self.tps):
                    break
        finally:
            self.reader.pause(*self.tps)
        return {tp: self.reader.highwater(tp) or 0 for tp in self.tps}

    async def lag(self) -> dict[str, int | None]:
        ends = await self.highwaters()
        result: dict[str, int | None] = {}
        for group, consumer in self.groups.items():
            try:
                async with asyncio.timeout(2):
                    committed = await asyncio.gather(*(consumer.committed(tp) for tp in self.tps))
                result[group] = sum(
                    max(0, ends[tp] - (c or 0)) for tp, c in zip(self.tps, committed, strict=True)
                )
            except Exception:
                result[group] = None
        return result

    async def stop(self) -> None:
        for consumer in [self.reader, *self.groups.values()]:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(consumer.stop(), 5)


@dataclass
class Monitor:
    stack: Stack
    slugs: list[str]
    poll_ms: int
    partitions: int
    interval: float = 1.0
    samples: list[Sample] = field(default_factory=list)
    counts: dict[str, list[tuple[float, int]]] = field(default_factory=dict)
    trees: dict[str, ProcessTree] = field(default_factory=dict)
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)
    _pool: asyncpg.Pool | None = None
    _lag: LagProbe | None = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)

    async def start(self) -> None:
        for name, pid in self.stack.process_roots().items():
            self.trees[name] = ProcessTree(pid)
        database = self.stack.infra.database_url
        self._pool = await asyncpg.create_pool(database, min_size=1, max_size=2)
        groups = [g for g in LAG_GROUPS if g in self.stack.processes]
        if groups:
            self._lag = LagProbe(
                self.stack.infra.kafka_bootstrap, "signatures", self.partitions, groups
            )
            await self._lag.start()
        if "counter" in self.stack.processes:
            for slug in self.slugs:
                self.counts[slug] = []
                self._tasks.append(asyncio.create_task(self._poll_count(slug)))
        self._tasks.append(asyncio.create_task(self._sample_loop()))

    @property
    def lag_groups(self) -> list[str]:
        return list(self._lag.groups) if self._lag is not None else []

    def watch(self, name: str, pid: int) -> None:
        self.trees[name] = ProcessTree(pid)

    def forget(self, name: str) -> None:
        self.trees.pop(name, None)

    def cpu_rss(self) -> tuple[dict[str, float], dict[str, int]]:
        cpu, rss = {}, {}
        children = children_map()
        for name, tree in self.trees.items():
            cpu[name], rss[name] = tree.sample(children)
        return cpu, rss

    def core_waits(self) -> dict[str, float]:
        """Seconds each process tree has waited for a core so far, where the kernel says."""
        children = children_map()
        waits = {name: tree.core_wait(children) for name, tree in self.trees.items()}
        return {name: wait for name, wait in waits.items() if wait is not None}

    def count(self, slug: str) -> int:
        seen = self.counts.get(slug)
        return seen[-1][1] if seen else 0

    async def outbox(self) -> tuple[int | None, float | None]:
        assert self._pool is not None
        try:
            row = await self._pool.fetchrow(
                "SELECT count(*) AS n, extract(epoch FROM clock_timestamp() - min(created_at)) "
                "AS age FROM signing.outbox WHERE published_at IS NULL"
            )
        except (asyncpg.PostgresError, OSError):
            return None, None
        assert row is not None
        return int(row["n"]), float(row["age"]) if row["age"] is not None else 0.0

    async def _sample_loop(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            pending, oldest = await self.outbox()
            lag: dict[str, int | None] = {}
            if self._lag is not None:
                try:
                    lag = await self._lag.lag()
                except Exception:
                    lag = dict.fromkeys(self._lag.groups)
            cpu, rss = self.cpu_rss()
            self.samples.append(
                Sample(started, pending, oldest, self.stack.sink.count(), lag, cpu, rss)
            )
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self._stop.wait(), max(0.05, self.interval - (time.monotonic() - started))
                )

    async def _poll_count(self, slug: str) -> None:
        # Raw HTTP/1.1 over one keep-alive connection: an HTTP client library would cost
        # the bench a good share of a core at 20 polls/s per petition.
        seen = self.counts[slug]
        port = self.stack.specs["counter"].port
        etag = b""
        reader: asyncio.StreamReader | None = None
        writer: asyncio.StreamWriter | None = None
        while not self._stop.is_set():
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", port)
                assert reader is not None
                writer.write(
                    f"GET /api/petitions/{slug}/count HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode()
                    + (b"If-None-Match: " + etag + b"\r\n" if etag else b"")
                    + b"\r\n"
                )
                head = await reader.readuntil(b"\r\n\r\n")
                now = time.monotonic()
                status = int(head[9:12])
                length = 0
                for line in head.lower().split(b"\r\n"):
                    if line.startswith(b"content-length:"):
                        length = int(line[15:])
                    elif line.startswith(b"etag:"):
                        etag = head[head.lower().index(b"etag:") + 5 :].split(b"\r\n")[0].strip()
                body = await reader.readexactly(length) if length else b""
                if status == 200:
                    count = int(json.loads(body)["signatures"])
                    if not seen or count != seen[-1][1]:
                        seen.append((now, count))
            except (OSError, asyncio.IncompleteReadError, ValueError, KeyError):
                if writer is not None:
                    writer.close()
                reader = writer = None
            await asyncio.sleep(self.poll_ms / 1000)
        if writer is not None:
            writer.close()

    async def shed_by_reason(self) -> dict[str, float]:
        """Signing's refusals so far, by the rule that refused (its
        `groundswell_signing_shed_total{reason}`); empty if it cannot be read. Read twice a
        step, so an ordinary client (the count polls above are raw HTTP for their rate)."""
        url = f"http://127.0.0.1:{self.stack.specs['signing'].port}/metrics"
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                text = (await http.get(url)).text
        except httpx.HTTPError:
            return {}
        return {
            sample.labels["reason"]: sample.value
            for family in text_string_to_metric_families(text)
            if family.name == "groundswell_signing_shed"
            for sample in family.samples
            if sample.name == "groundswell_signing_shed_total"
        }

    async def stop(self) -> None:
        self._stop.set()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 10)
        if self._lag is not None:
            await self._lag.stop()
        if self._pool is not None:
            await self._pool.close()
