"""`groundswell-signing serve | relay | replay | migrate | retention` (groundswell_runtime.cli)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import datetime

import asyncpg
from groundswell_runtime.cli import Command, Database, ServiceCli
from groundswell_runtime.db import create_pool, migrate
from groundswell_runtime.serving import serve

from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.config import SigningSettings
from groundswell_signing.migrations import MIGRATIONS


def _serve(settings: SigningSettings) -> None:
    from groundswell_signing.entrypoints.http.app import create_app

    app = (
        "groundswell_signing.entrypoints.http.app:app_from_environment"
        if settings.workers > 1
        else create_app(settings)
    )
    serve(app, host=settings.host, port=settings.port, workers=settings.workers, factory=True)


def _relay(settings: SigningSettings) -> None:
    from groundswell_signing.entrypoints.relay import run_relay

    run_relay(settings)


def _replay(settings: SigningSettings) -> None:
    from groundswell_signing.service_layer.replay import replay_all

    async def replay() -> int:
        await migrate(settings.database_url, SCHEMA, MIGRATIONS)
        pool = await create_pool(settings.database_url)
        try:
            return await replay_all(pool)
        finally:
            await pool.close()

    print(f"queued {asyncio.run(replay())} events for publication")


async def _prune(settings: SigningSettings, pool: asyncpg.Pool, now: datetime) -> Mapping[str, int]:
    from groundswell_signing.service_layer.retention import RetentionPolicy, run_retention

    result = await run_retention(pool, RetentionPolicy.of(settings), now)
    return result.counts()


cli = ServiceCli(
    name="signing",
    description="Groundswell's signing service: petitions, signatures, pages, admin API.",
    settings=SigningSettings,  # ADMIN_TOKEN comes from the environment
    serve=Command(
        "run the HTTP service (and its outbox relay, unless SIGNING_RELAY_MODE=separate)",
        _serve,
    ),
    database=Database(SCHEMA, MIGRATIONS, _prune),
    extra={
        "relay": Command(
            "run the outbox relay alone, with /readyz on SIGNING_RELAY_PORT (8005)", _relay
        ),
        "replay": Command(
            "queue every petition and signature event again (rebuilds an empty broker); "
            "the running relay publishes them",
            _replay,
        ),
    },
)
main = cli.main

if __name__ == "__main__":
    main()
