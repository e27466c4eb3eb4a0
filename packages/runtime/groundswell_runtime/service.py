"""The one shape of a Groundswell service process: what starts, in which order, what
readiness means, and how it stops.

A service is a `Service` subclass whose `setup` builds its own parts on the pool and
registers them, plus an app made by `service_app` with the service's routers. Having
read one service's `main.py` and app factory, a newcomer has read them all.

Start (the app's lifespan):

1. wait for the database (compose and `make up` start everything at once), apply the
   migrations (under the schema's advisory lock, so replicas may start together), open
   the pool;
2. create the topics (idempotent; `ensure_topics`), unless `creates_topics` is off;
3. `setup()`: the service builds its parts and registers its loops (`add_loop`,
   `add_consumer`, `add_relay`) and extra readiness checks;
4. every loop runs under `background.supervise`, restarted with backoff after a
   failure, so a broker or database that drops is healed without a human.

Stop runs the loops' stops in the **reverse** order of registration, then closes the
pool. So a service registers what flushes results first (its outbox relay) and what
takes in work last (its consumers): consumers stop taking work, workers drain, the relay
publishes what they recorded, and only then does the pool close.

Readiness (`/readyz`): the database and the broker answer, every consumer holds its
partitions, every outbox relay finished a pass recently, plus a service's own checks.

The counter is the one service without a `Service`: it has no database, and faust's
worker, not an ASGI lifespan, starts and stops its parts (its agent, the counts view and
the embedded HTTP server: groundswell_counter/entrypoints/worker.py). Its app is made by
`ops_app`, as every other app is underneath, so its ops endpoints are the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence

import asyncpg
import structlog
from fastapi import FastAPI
from fastapi.telemetry import TelemetryConfig

from groundswell_runtime.background import ConsumerLoop, cancel_and_wait, supervise
from groundswell_runtime.correlation import install_request_id_middleware
from groundswell_runtime.db import (
    Migration,
    close_pool,
    create_pool,
    database_reachable,
    migrate,
    wait_for_database,
)
from groundswell_runtime.heap import settle_heap
from groundswell_runtime.kafka import broker_reachable, ensure_topics
from groundswell_runtime.ops import ReadinessCheck, install_ops
from groundswell_runtime.outbox import OutboxRelay
from groundswell_runtime.settings import ServiceSettings
from groundswell_runtime.surge_yield import SurgeYield, behind_on_events
from groundswell_runtime.unavailable import install_database_unavailable_handler

log = structlog.get_logger()

VERSION = "0.1.0"
NO_TELEMETRY: TelemetryConfig = {"tracing": False, "metrics": False, "logs": False}


@dataclasses.dataclass
class _Loop:
    name: str
    run: Callable[[], Awaitable[None]]
    # Asked to finish its work in hand before it is cancelled, within `drain_seconds`.
    drain: Callable[[], None] | None = None
    drain_seconds: float = 0.0
    # Run once the task is over (a relay flushing its producer).
    after: Callable[[], Awaitable[None]] | None = None
    task: asyncio.Task[None] | None = None


class Service:
    """Start-up, readiness and shutdown, the same for every service (module docstring)."""

    name = "service"
    # Create the topics at start (2. above). A service that must start while the broker
    # is away (signing takes signatures into its outbox regardless) leaves it to its
    # relay, which creates them before its first publish.
    creates_topics = True
    # Work that can wait (mail, share attribution) yields to a surge: `surge_yield` is
    # then made at start, for the service's consumers and loops to wait on.
    yields_in_surge = False

    def __init__(
        self,
        settings: ServiceSettings,
        *,
        schema: str,
        migrations: Sequence[Migration],
        pool_min: int = 2,
        pool_max: int = 10,
    ) -> None:
        self.settings = settings
        self._schema = schema
        self._migrations = list(migrations)
        self._pool_size = (pool_min, pool_max)
        self._pool: asyncpg.Pool | None = None
        self.surge_yield: SurgeYield | None = None
        self._loops: list[_Loop] = []
        self._cleanups: list[Callable[[], Awaitable[None]]] = []
        # The very dict /readyz reads: checks registered in `setup` show up there.
        self.checks: dict[str, ReadinessCheck] = {
            "database": self._database_ready,
            "broker": self._broker_ready,
        }

    # -- what a service fills in ---------------------------------------------------

    async def setup(self) -> None:
        """Build the service's parts on `self.pool` and register its loops."""

    def behind(self) -> bool:
        """Whether the service has fallen behind its work, for `surge_yield`: by default,
        its consumers' lag (a service whose backlog lives elsewhere adds to it)."""
        return behind_on_events()

    # -- registration --------------------------------------------------------------

    def add_loop(
        self,
        name: str,
        run: Callable[[], Awaitable[None]],
        *,
        drain: Callable[[], None] | None = None,
        drain_seconds: float = 0.0,
        after: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self._loops.append(_Loop(name, run, drain, drain_seconds, after))

    def on_stop(self, cleanup: Callable[[], Awaitable[None]]) -> None:
        """Run once every loop has stopped, before the pool closes (a pool of its own)."""
        self._cleanups.append(cleanup)

    def add_check(self, name: str, check: ReadinessCheck) -> None:
        self.checks[name] = check

    def add_consumer(self, check: str, consumer: ConsumerLoop) -> ConsumerLoop:
        """A consumer loop; ready while it holds its partitions."""

        async def consuming() -> bool:
            return consumer.consuming

        self.add_loop(check, consumer.run)
        self.add_check(check, consuming)
        return consumer

    def add_relay(self, relay: OutboxRelay, check: str = "outbox_relay") -> OutboxRelay:
        """An outbox relay; ready while its passes finish (`OutboxRelay.stalled`)."""

        async def moving() -> bool:
            return not relay.stalled()

        self.add_loop(check, relay.run, after=relay.stop)
        self.add_check(check, moving)
        return relay

    # -- lifecycle -----------------------------------------------------------------

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError(f"the {self.name} service is not started")
        return self._pool

    def require_pool(self) -> asyncpg.Pool:
        """`pool` as a callable, for routers built before the service starts."""
        return self.pool

    def task(self, name: str) -> asyncio.Task[None]:
        """A running loop's task (tests kill one dead to play a crash)."""
        for loop in self._loops:
            if loop.name == name and loop.task is not None:
                return loop.task
        raise KeyError(name)

    async def start(self) -> None:
        settings = self.settings
        await wait_for_database(settings.database_url)
        await migrate(settings.database_url, self._schema, self._migrations)
        pool_min, pool_max = self._pool_size
        self._pool = await create_pool(settings.database_url, min_size=pool_min, max_size=pool_max)
        if self.creates_topics:
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                settings.kafka_topic_partitions,
                settings.kafka_replication_factor,
            )
        if self.yields_in_surge:
            self.surge_yield = SurgeYield(settings.surge_yield_max_seconds, self.behind)
            self.add_loop("surge_yield", self.surge_yield.run)
        await self.setup()
        settle_heap()
        for loop in self._loops:
            loop.task = asyncio.create_task(supervise(loop.name, loop.run), name=loop.name)
        log.info("service_started", service=self.name, loops=[loop.name for loop in self._loops])

    async def stop(self) -> None:
        for loop in reversed(self._loops):
            if loop.drain is not None and loop.task is not None:
                loop.drain()
                await asyncio.wait({loop.task}, timeout=loop.drain_seconds)
            await cancel_and_wait(loop.task)
            if loop.after is not None:
                await loop.after()
        self._loops.clear()
        for cleanup in reversed(self._cleanups):
            await cleanup()
        self._cleanups.clear()
        if self._pool is not None:
            await close_pool(self._pool)
            self._pool = None
        log.info("service_stopped", service=self.name)

    async def _database_ready(self) -> bool:
        return self._pool is not None and await database_reachable(self._pool)

    async def _broker_ready(self) -> bool:
        return await broker_reachable(self.settings.kafka_bootstrap_servers)


def service_app(
    service: Service,
    *,
    title: str,
    description: str,
) -> FastAPI:
    """The service's FastAPI app, whose lifespan runs the service (`ops_app` for the rest).
    The caller adds its routers and any outer middlewares; `app.state.service` is the
    service."""

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await service.start()
        try:
            yield
        finally:
            await service.stop()

    app = ops_app(
        title=title,
        description=description,
        checks=service.checks,
        lifespan=lifespan,
    )
    app.state.service = service
    return app


def ops_app(
    *,
    title: str,
    description: str,
    checks: Mapping[str, ReadinessCheck],
    lifespan: Callable[[FastAPI], contextlib.AbstractAsyncContextManager[None]] | None = None,
) -> FastAPI:
    """A FastAPI app with what every service's has: `/healthz`, `/readyz` (the given
    checks), `/metrics`, offline `/docs`, request ids and request logs, and a database that
    is briefly away answered 503 with Retry-After.

    The counter uses it alone: faust, not a lifespan, runs its parts (entrypoints/worker.py).
    """
    app = FastAPI(
        title=title,
        description=description,
        version=VERSION,
        lifespan=lifespan,
        # FastAPI's native OpenTelemetry asks the global providers (reading the
        # environment) on every request: 2-4% of signing's CPU under load, for tracing
        # nobody configured. Metrics are Prometheus (ops.py); logs are structlog.
        telemetry=NO_TELEMETRY,
    )
    install_ops(app, checks)
    install_request_id_middleware(app)
    install_database_unavailable_handler(app)
    return app
