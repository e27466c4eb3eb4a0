"""`groundswell-signing relay`: the outbox relay as a process of its own.

Why: in the `serve` process the relay shares the event loop with request handling.
Under a surge the loop's ready queue is full of requests and every one of the relay's
round trips waits behind them, so the outbox grew by tens of thousands of rows while
requests were served, and counts and emails lagged by up to a minute (docs/performance.md).
In a process of its own the relay gets the scheduler's share of the CPU whatever the
HTTP side does.

Where it runs is chosen by `SIGNING_RELAY_MODE`:

- `in-process` (the default): `serve` runs the relay itself, so a lone signing process
  is complete (tests, a single-container deployment).
- `separate`: `serve` runs no relay; `groundswell-signing relay` does. `make up` and
  docker-compose run it so, as its own service.

Both may run at once (during a switch-over, or several `serve` workers): only one relay
publishes at a time (the outbox's advisory lock), so nothing is published twice by them.

The relay process answers `/livez`, `/readyz` (database reachable, broker reachable, a
pass finished within `groundswell_runtime.outbox.STALL_SECONDS`) and `/metrics` on
`SIGNING_RELAY_PORT`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Literal

import asyncpg
from fastapi import FastAPI
from groundswell_runtime.background import cancel_and_wait, supervise
from groundswell_runtime.db import (
    close_pool,
    create_pool,
    database_reachable,
    migrate,
    wait_for_database,
)
from groundswell_runtime.kafka import broker_reachable, ensure_topics
from groundswell_runtime.ops import install_ops
from groundswell_runtime.outbox import OutboxRelay
from groundswell_runtime.serving import serve
from pydantic_settings import BaseSettings, SettingsConfigDict

from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.config import SigningSettings
from groundswell_signing.migrations import MIGRATIONS

RelayMode = Literal["in-process", "separate"]


class RelaySettings(BaseSettings):
    """`SIGNING_RELAY_MODE`, `SIGNING_RELAY_HOST`, `SIGNING_RELAY_PORT`."""

    model_config = SettingsConfigDict(env_prefix="SIGNING_RELAY_", extra="ignore")

    mode: RelayMode = "in-process"
    host: str = "127.0.0.1"
    port: int = 8005


def new_relay(pool: asyncpg.Pool, settings: SigningSettings) -> OutboxRelay:
    """The signing outbox's relay, creating the topics before its first publish."""

    async def create_topics() -> None:
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_partitions,
            settings.kafka_replication_factor,
        )

    return OutboxRelay(
        pool,
        SCHEMA,
        settings.kafka_bootstrap_servers,
        prepare_broker=create_topics,
    )


def create_relay_app(settings: SigningSettings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await wait_for_database(settings.database_url)
        # The outbox table is signing's: a relay started before `serve` creates it.
        await migrate(settings.database_url, SCHEMA, MIGRATIONS)
        # Two connections: the LISTEN one and the one a pass publishes on.
        pool = await create_pool(settings.database_url, min_size=2, max_size=3)
        relay = new_relay(pool, settings)
        app.state.pool = pool
        app.state.relay = relay
        task = asyncio.create_task(supervise("outbox-relay", relay.run), name="outbox-relay")
        try:
            yield
        finally:
            await cancel_and_wait(task)
            await relay.stop()
            await close_pool(pool)

    app = FastAPI(
        title="Groundswell signing relay",
        description="Publishes the signing outbox to Kafka.",
        version="0.1.0",
        lifespan=lifespan,
    )

    async def database_ready() -> bool:
        return await database_reachable(app.state.pool)

    async def broker_ready() -> bool:
        return await broker_reachable(settings.kafka_bootstrap_servers)

    async def relay_moving() -> bool:
        relay: OutboxRelay = app.state.relay
        return not relay.stalled()

    install_ops(
        app, {"database": database_ready, "broker": broker_ready, "outbox_relay": relay_moving}
    )
    return app


def run_relay(settings: SigningSettings) -> None:
    relay_settings = RelaySettings()
    serve(create_relay_app(settings), host=relay_settings.host, port=relay_settings.port)
