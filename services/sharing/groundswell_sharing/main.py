"""`groundswell-sharing serve | migrate | retention`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from groundswell_runtime.db import create_pool, migrate
from groundswell_runtime.logging import configure_logging
from groundswell_runtime.retention import add_retention_command, report
from groundswell_runtime.serving import serve

from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.adapters import retention
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.entrypoints.http import create_app


async def _retention(settings: SharingSettings, metrics_file: Path | None) -> str:
    await migrate(settings.database_url, repo.SCHEMA, repo.migrations())
    pool = await create_pool(settings.database_url, max_size=2)
    try:
        started = time.monotonic()
        counts = await retention.prune(
            pool,
            now=datetime.now(UTC),
            click_retention=timedelta(days=settings.click_retention_days),
            pending_click_retention=timedelta(days=settings.pending_click_retention_days),
            batch_size=settings.retention_batch_size,
        )
        seconds = time.monotonic() - started
    finally:
        await pool.close()
    return report(
        "sharing", counts, seconds=seconds, finished_at=time.time(), metrics_file=metrics_file
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="groundswell-sharing", description="Groundswell share links and sharing stats."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP app and the event consumer")
    commands.add_parser("migrate", help="apply the database migrations, then exit")
    add_retention_command(commands)
    args = parser.parse_args(argv)

    settings = SharingSettings()
    configure_logging("sharing", settings.log_level)
    if args.command == "migrate":
        asyncio.run(migrate(settings.database_url, repo.SCHEMA, repo.migrations()))
        return
    if args.command == "retention":
        print(asyncio.run(_retention(settings, args.metrics_file)), end="")
        return
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        # It guards the organisers' stats and keys the visitor salt (unless
        # SHARING_VISITOR_SALT is set): serving without it would do neither.
        sys.exit("groundswell-sharing: set ADMIN_TOKEN (the same one signing uses).")
    # Header size, count and time limits, idle timeout and a concurrency cap.
    serve(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
