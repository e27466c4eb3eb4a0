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

Beside publishing, the relay watches how far behind the counter is after it
(`SIGNING_ADMISSION_CONSUMERS`, groundswell_runtime.consumer_lag) and writes it into
signing's database, where `serve`'s admission reads it with the outbox's age
(service_layer/backlog.py).

The relay process answers `/livez`, `/readyz` (database reachable, broker reachable, a
pass finished within `groundswell_runtime.outbox.STALL_SECONDS`) and `/metrics` on
`SIGNING_RELAY_PORT`.
"""

from __future__ import annotations

import functools
import uuid
from typing import Literal

import asyncpg
from fastapi import FastAPI
from groundswell_runtime.consumer_lag import ConsumerLagWatch, PublishedOffsets
from groundswell_runtime.kafka import ensure_topics
from groundswell_runtime.outbox import OutboxRelay
from groundswell_runtime.service import Service, service_app
from groundswell_runtime.serving import serve
from pydantic_settings import BaseSettings, SettingsConfigDict

from groundswell_signing.adapters.repository import SCHEMA, record_consumer_lag
from groundswell_signing.config import SigningSettings
from groundswell_signing.migrations import MIGRATIONS

RelayMode = Literal["in-process", "separate"]


class RelaySettings(BaseSettings):
    """`SIGNING_RELAY_MODE`, `SIGNING_RELAY_HOST`, `SIGNING_RELAY_PORT`."""

    model_config = SettingsConfigDict(env_prefix="SIGNING_RELAY_", extra="ignore")

    mode: RelayMode = "in-process"
    host: str = "127.0.0.1"
    port: int = 8005


# Connections a relay's pool needs: the LISTEN one, the one a pass publishes on, and one
# for the consumers' lag.
RELAY_POOL_SIZE = 3


def add_relay(service: Service, pool: asyncpg.Pool, settings: SigningSettings) -> OutboxRelay:
    """The signing outbox's relay as `service`'s loop, and the watch of each admission
    consumer's lag beside it."""
    published = PublishedOffsets()
    relay = service.add_relay(new_relay(pool, settings, published))
    name = uuid.uuid4().hex[:12]  # this relay's row (several may take turns publishing)
    for consumer in settings.admission_consumers:
        watch = ConsumerLagWatch(
            settings.kafka_bootstrap_servers,
            consumer,
            published,
            functools.partial(record_consumer_lag, pool, consumer, name),
        )
        service.add_loop(f"consumer-lag-{consumer}", watch.run)
    return relay


def new_relay(
    pool: asyncpg.Pool, settings: SigningSettings, published: PublishedOffsets | None = None
) -> OutboxRelay:
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
        published=published,
    )


class RelayService(Service):
    """Only the relay; the outbox table is signing's, so a relay started before `serve`
    applies signing's migrations (the scaffold does, under the schema's lock)."""

    name = "signing-relay"
    # Signatures are taken while the broker is away: the relay makes the topics.
    creates_topics = False

    def __init__(self, settings: SigningSettings) -> None:
        # Its own connections, and one for the scaffold's readiness checks.
        super().__init__(
            settings, schema=SCHEMA, migrations=MIGRATIONS, pool_max=RELAY_POOL_SIZE + 1
        )
        self.settings: SigningSettings = settings

    async def setup(self) -> None:
        add_relay(self, self.pool, self.settings)


def create_relay_app(settings: SigningSettings) -> FastAPI:
    return service_app(
        RelayService(settings),
        title="Groundswell signing relay",
        description="Publishes the signing outbox to Kafka.",
    )


def run_relay(settings: SigningSettings) -> None:
    relay_settings = RelaySettings()
    serve(create_relay_app(settings), host=relay_settings.host, port=relay_settings.port)
