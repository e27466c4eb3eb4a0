"""`groundswell-signing serve | relay | migrate | replay | retention`."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

from groundswell_runtime.db import create_pool, migrate
from groundswell_runtime.logging import configure_logging
from groundswell_runtime.retention import add_retention_command, report
from groundswell_runtime.serving import serve

from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.config import SigningSettings
from groundswell_signing.migrations import MIGRATIONS
from groundswell_signing.service_layer.replay import replay_all
from groundswell_signing.service_layer.retention import RetentionPolicy, run_retention


async def _replay(settings: SigningSettings) -> int:
    await migrate(settings.database_url, SCHEMA, MIGRATIONS)
    pool = await create_pool(settings.database_url)
    try:
        return await replay_all(pool)
    finally:
        await pool.close()


async def _retention(settings: SigningSettings, metrics_file: Path | None) -> str:
    await migrate(settings.database_url, SCHEMA, MIGRATIONS)
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        started = time.monotonic()
        result = await run_retention(pool, RetentionPolicy.of(settings), datetime.now(UTC))
        seconds = time.monotonic() - started
    finally:
        await pool.close()
    return report(
        "signing",
        result.counts(),
        seconds=seconds,
        finished_at=time.time(),
        metrics_file=metrics_file,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="groundswell-signing", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "serve",
        help="run the HTTP service (and its outbox relay, unless SIGNING_RELAY_MODE=separate)",
    )
    commands.add_parser(
        "relay", help="run the outbox relay alone, with /readyz on SIGNING_RELAY_PORT (8005)"
    )
    commands.add_parser("migrate", help="apply database migrations and exit")
    commands.add_parser(
        "replay",
        help="queue every petition and signature event again (rebuilds an empty broker); "
        "the running service's relay publishes them",
    )
    add_retention_command(commands)
    args = parser.parse_args(argv)
    settings = SigningSettings()  # ADMIN_TOKEN comes from the environment
    configure_logging("signing", settings.log_level)

    if args.command == "serve":
        from groundswell_signing.entrypoints.http.app import create_app

        app = (
            "groundswell_signing.entrypoints.http.app:app_from_environment"
            if settings.workers > 1
            else create_app(settings)
        )
        serve(app, host=settings.host, port=settings.port, workers=settings.workers, factory=True)
    elif args.command == "relay":
        from groundswell_signing.entrypoints.relay import run_relay

        run_relay(settings)
    elif args.command == "migrate":
        asyncio.run(migrate(settings.database_url, SCHEMA, MIGRATIONS))
    elif args.command == "replay":
        count = asyncio.run(_replay(settings))
        print(f"queued {count} events for publication")
    elif args.command == "retention":
        print(asyncio.run(_retention(settings, args.metrics_file)), end="")


if __name__ == "__main__":
    main()
