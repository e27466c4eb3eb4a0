"""`groundswell-mailer serve | migrate | retention` (groundswell_runtime.cli)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

import asyncpg
from groundswell_runtime.cli import Command, Database, ServiceCli
from groundswell_runtime.serving import serve

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters import retention
from groundswell_mailer.config import MailerSettings


def _serve(settings: MailerSettings) -> None:
    from groundswell_mailer.entrypoints.http import create_app

    serve(create_app(settings), host=settings.host, port=settings.port)


async def _prune(settings: MailerSettings, pool: asyncpg.Pool, now: datetime) -> Mapping[str, int]:
    kept = settings.processed_events_retention_days
    return await retention.prune(
        pool,
        now=now,
        email_retention=timedelta(days=settings.email_retention_days),
        processed_events_retention=timedelta(days=kept) if kept else None,
        batch_size=settings.retention_batch_size,
    )


cli = ServiceCli(
    name="mailer",
    description="Groundswell's email service.",
    settings=MailerSettings,
    serve=Command("run the HTTP app, the consumers and the sender", _serve),
    database=Database(repo.SCHEMA, repo.migrations(), _prune),
)
main = cli.main

if __name__ == "__main__":
    main()
