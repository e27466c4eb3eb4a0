"""Real counter workers (separate processes) on the real broker.

Each test gets its own topic prefix and faust app id, so tests never see each
other's events or consumer groups, and a worker never reads events published for
other services' tests.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from aiokafka import AIOKafkaConsumer
from groundswell_contracts.events import Event, PetitionCountChanged, encode, parse_event
from groundswell_counter.config import CounterTopics
from groundswell_runtime.kafka import ensure_topics, make_consumer, make_producer
from groundswell_stack.infra import Infra
from groundswell_stack.processes import ManagedProcess, free_port

from ...conftest import TEST_PARTITIONS

# What the session's topics use (tests/conftest.py).
PARTITIONS = TEST_PARTITIONS


@dataclass
class Worker:
    name: str
    process: ManagedProcess
    port: int
    log_path: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


@dataclass
class CounterStack:
    infra: Infra
    run_dir: Path
    prefix: str = field(default_factory=lambda: f"t{uuid.uuid4().hex[:10]}.")
    app_id: str = field(default_factory=lambda: f"counter-test-{uuid.uuid4().hex[:10]}")
    workers: list[Worker] = field(default_factory=list)

    @property
    def topics(self) -> CounterTopics:
        return CounterTopics.with_prefix(self.prefix)

    @property
    def bootstrap(self) -> str:
        return self.infra.kafka_bootstrap

    def start_worker(self, name: str, **env: str) -> Worker:
        port = free_port()
        log_path = self.run_dir / f"{self.app_id}-{name}.log"
        process = ManagedProcess(
            f"counter-{name}",
            [sys.executable, "-m", "groundswell_counter", "serve"],
            env={
                **os.environ,
                **self.infra.env(),
                "KAFKA_TOPIC_PARTITIONS": str(PARTITIONS),
                "COUNTER_APP_ID": self.app_id,
                "COUNTER_TOPIC_PREFIX": self.prefix,
                "COUNTER_PORT": str(port),
                "COUNTER_WORKER_NAME": name,
                # Rebalance and recovery steps in the worker logs: what a failure here needs.
                "COUNTER_VERBOSE_FRAMEWORK_LOGS": "1",
                "COUNTER_DATA_DIR": str(self.run_dir / f"{self.app_id}-{name}-data"),
                **env,
            },
            log_path=log_path,
            stop_timeout=10,
        ).start()
        worker = Worker(name, process, port, log_path)
        self.workers.append(worker)
        return worker

    async def wait_ready(self, worker: Worker, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(timeout=2) as http:
            while time.monotonic() < deadline:
                assert worker.process.running(), f"{worker.name} exited:\n{worker.log_tail()}"
                try:
                    if (await http.get(worker.url + "/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.2)
        raise AssertionError(f"{worker.name} not ready after {timeout}s:\n{worker.log_tail()}")

    def stop_all(self) -> None:
        for worker in self.workers:
            worker.process.stop()


@pytest.fixture
async def counter_stack(infra: Infra, tmp_path: Path) -> AsyncIterator[CounterStack]:
    stack = CounterStack(infra, tmp_path)
    await ensure_topics(infra.kafka_bootstrap, PARTITIONS, 1, stack.topics.all())
    try:
        yield stack
    finally:
        stack.stop_all()


class Publisher:
    """Publishes events to their topics (keyed by petition) the way the outbox does."""

    def __init__(self, bootstrap: str, topics: CounterTopics) -> None:
        self._producer = make_producer(bootstrap)
        self._topics = topics
        self.sent = 0

    async def __aenter__(self) -> Publisher:
        await self._producer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._producer.stop()

    def topic_of(self, event: Event) -> str:
        return (
            self._topics.petitions
            if event.event_type.startswith("Petition")
            else self._topics.signatures
        )

    async def publish(
        self,
        events: Iterable[Event | tuple[str, bytes, bytes]],
        rate: float | None = None,
        chunk: int = 200,
    ) -> None:
        """Publish in order; `rate` (events/s) spreads them out, like live traffic."""
        started = time.monotonic()
        pending = []
        for item in events:
            if isinstance(item, tuple):
                topic, key, value = item
            else:
                topic, key, value = self.topic_of(item), item.key.encode(), encode(item)
            pending.append(await self._producer.send(topic, value=value, key=key))
            self.sent += 1
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                pending.clear()
                if rate:
                    ahead = self.sent / rate - (time.monotonic() - started)
                    if ahead > 0:
                        await asyncio.sleep(ahead)
        await asyncio.gather(*pending)


class TopicReader:
    """Reads a whole topic from the beginning in the background (no consumer group)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._consumer: AIOKafkaConsumer = make_consumer(bootstrap, None, topic)
        self.records: list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]] = []
        self.latest: dict[uuid.UUID, PetitionCountChanged] = {}
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> TopicReader:
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        await self._consumer.stop()

    async def _run(self) -> None:
        while True:
            batches = await self._consumer.getmany(timeout_ms=200)
            for records in batches.values():
                for record in records:
                    self.records.append((record.key, record.value, list(record.headers)))
                    try:
                        event = parse_event(record.value or b"")
                    except ValueError:
                        continue
                    if isinstance(event, PetitionCountChanged):
                        self.latest[event.petition_id] = event


@pytest.fixture
def publisher_for() -> type[Publisher]:
    return Publisher


@pytest.fixture
def topic_reader() -> type[TopicReader]:
    return TopicReader
