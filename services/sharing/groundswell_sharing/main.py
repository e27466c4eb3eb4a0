"""`groundswell-sharing serve | migrate | retention` (groundswell_runtime.cli)."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from datetime import datetime, timedelta

import asyncpg
from groundswell_runtime.cli import Command, Database, ServiceCli
from groundswell_runtime.serving import serve

from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.adapters import retention
from groundswell_sharing.config import SharingSettings


def _serve(settings: SharingSettings) -> None:
    from groundswell_sharing.entrypoints.http import create_app

    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        # It guards the organisers' stats and keys the visitor salt (unless
        # SHARING_VISITOR_SALT is set): serving without it would do neither.
        sys.exit("groundswell-sharing: set ADMIN_TOKEN (the same one signing uses).")
    # Header size, count and time limits, idle timeout and a concurrency cap.
    serve(create_app(settings), host=settings.host, port=settings.port)


async def _prune(settings: SharingSettings, pool: asyncpg.Pool, now: datetime) -> Mapping[str, int]:
    return await retention.prune(
        pool,
        now=now,
        click_retention=timedelta(days=settings.click_retention_days),
        pending_click_retention=timedelta(days=settings.pending_click_retention_days),
        batch_size=settings.retention_batch_size,
    )


cli = ServiceCli(
    name="sharing",
    description="Groundswell share links and sharing stats.",
    settings=SharingSettings,
    serve=Command("run the HTTP app and the event consumer", _serve),
    database=Database(repo.SCHEMA, repo.migrations(), _prune),
)
main = cli.main

if __name__ == "__main__":
    main()
