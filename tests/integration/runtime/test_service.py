"""The service scaffold (groundswell_runtime.service) without a real service around it:
start order, readiness, stop order, drains and clean-ups, on a real database and broker."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from groundswell_runtime.db import Migration
from groundswell_runtime.service import Service, service_app
from groundswell_runtime.settings import ServiceSettings
from groundswell_stack.infra import Infra

from ...conftest import TEST_PARTITIONS


class Recording(Service):
    """Three loops and a clean-up that write down what happens to them."""

    name = "recording"

    def __init__(self, settings: ServiceSettings, schema: str) -> None:
        super().__init__(
            settings,
            schema=schema,
            migrations=[Migration("001_t.sql", "CREATE TABLE t (n int)")],
        )
        self.events: list[str] = []
        self.drained = asyncio.Event()

    def _forever(self, name: str) -> object:
        async def run() -> None:
            self.events.append(f"start {name}")
            try:
                await asyncio.Event().wait()
            finally:
                self.events.append(f"stop {name}")

        return run

    async def setup(self) -> None:
        # The pool is open and the migrations applied before setup runs.
        await self.pool.execute(f"INSERT INTO {self._schema}.t VALUES (1)")

        async def flushed() -> None:
            self.events.append("after first")

        async def drained_then_stop() -> None:
            self.events.append("start worker")
            await self.drained.wait()
            self.events.append("worker drained")

        async def closed() -> None:
            self.events.append("cleanup")

        self.add_loop("first", self._forever("first"), after=flushed)  # type: ignore[arg-type]
        self.add_loop("worker", drained_then_stop, drain=self.drained.set, drain_seconds=5)
        self.add_loop("last", self._forever("last"))  # type: ignore[arg-type]

        async def never_ready() -> bool:
            return False

        self.add_check("own", never_ready)
        self.on_stop(closed)


async def test_service_starts_tells_readiness_and_stops_in_reverse_order(
    infra: Infra, topics: None, fresh_database: str
) -> None:
    settings = ServiceSettings(
        database_url=fresh_database,
        kafka_bootstrap_servers=infra.kafka_bootstrap,
        kafka_topic_partitions=TEST_PARTITIONS,
    )
    service = Recording(settings, f"s{uuid.uuid4().hex[:8]}")
    app = service_app(service, title="recording", description="a test service")
    assert app.state.service is service

    async with app.router.lifespan_context(app):
        assert await service.pool.fetchval(f"SELECT n FROM {service._schema}.t") == 1
        for _ in range(100):  # the loops run as tasks once start() returns
            if len(service.events) == 3:
                break
            await asyncio.sleep(0.05)
        assert sorted(service.events) == ["start first", "start last", "start worker"]
        assert service.task("worker").done() is False

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://s.test") as client:
            ready = await client.get("/readyz")
            # A check a service adds in setup is on /readyz, and one false check is a 503.
            assert ready.status_code == 503
            assert ready.json()["checks"] == {"database": True, "broker": True, "own": False}
            assert (await client.get("/healthz")).status_code == 200

        service.events.clear()
    # Stop: reverse order of registration; the worker was asked to drain and finished on
    # its own (not cancelled); "first" flushed after it stopped; clean-ups last.
    assert service.events == [
        "stop last",
        "worker drained",
        "stop first",
        "after first",
        "cleanup",
    ]
    try:
        service.pool  # noqa: B018 - the property raises once the pool is closed
    except RuntimeError as exc:
        assert "not started" in str(exc)
    else:
        raise AssertionError("the pool outlived the service")
