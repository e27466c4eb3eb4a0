"""`groundswell-mailer serve | migrate | retention`."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from groundswell_runtime.db import create_pool, migrate
from groundswell_runtime.logging import configure_logging
from groundswell_runtime.retention import add_retention_command, report
from groundswell_runtime.serving import serve

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters import retention
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.entrypoints.http import create_app


async def _retention(settings: MailerSettings, metrics_file: Path | None) -> str:
    await migrate(settings.database_url, repo.SCHEMA, repo.migrations())
    pool = await create_pool(settings.database_url, max_size=2)
    kept = settings.processed_events_retention_days
    try:
        started = time.monotonic()
        counts = await retention.prune(
            pool,
            now=datetime.now(UTC),
            email_retention=timedelta(days=settings.email_retention_days),
            processed_events_retention=timedelta(days=kept) if kept else None,
            batch_size=settings.retention_batch_size,
        )
        seconds = time.monotonic() - started
    finally:
        await pool.close()
    return report(
        "mailer", counts, seconds=seconds, finished_at=time.time(), metrics_file=metrics_file
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="groundswell-mailer", description="Groundswell's email service."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP app, the consumer and the sender")
    commands.add_parser("migrate", help="apply the database migrations, then exit")
    add_retention_command(commands)
    args = parser.parse_args(argv)

    settings = MailerSettings()
    configure_logging("mailer", settings.log_level)
    if args.command == "migrate":
        asyncio.run(migrate(settings.database_url, repo.SCHEMA, repo.migrations()))
        return
    if args.command == "retention":
        print(asyncio.run(_retention(settings, args.metrics_file)), end="")
        return
    serve(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
