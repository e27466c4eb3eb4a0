"""The command line every service has, built one way.

`groundswell-<service> serve | migrate | retention [--metrics-file F]`, plus the commands a
service adds (signing's `relay` and `replay`). A service's `main.py` only says what its
commands do: how to serve, and, for a service with a database of its own, its schema and
migrations and what retention prunes. Reading one service's `main.py` is reading them
all; the counter keeps no database (its state lives in Kafka), so it has `serve` alone.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Generic, TypeVar

import asyncpg

from groundswell_runtime.db import Migration, create_pool, migrate
from groundswell_runtime.logging import configure_logging
from groundswell_runtime.retention import add_retention_command, report
from groundswell_runtime.settings import ServiceSettings

S = TypeVar("S", bound=ServiceSettings)


@dataclass(frozen=True)
class Command(Generic[S]):
    help: str
    run: Callable[[S], None]


@dataclass(frozen=True)
class Database(Generic[S]):
    """A service's own PostgreSQL schema: `migrate` and `retention` act on it."""

    schema: str
    migrations: Sequence[Migration]
    # What retention deletes or anonymises, as counts per action (a pool of two).
    prune: Callable[[S, asyncpg.Pool, datetime], Awaitable[Mapping[str, int]]]


@dataclass(frozen=True)
class ServiceCli(Generic[S]):
    name: str  # "mailer": the log's service name and `groundswell-mailer`
    description: str
    settings: Callable[[], S]
    serve: Command[S]
    database: Database[S] | None
    extra: Mapping[str, Command[S]] = field(default_factory=dict)

    def main(self, argv: list[str] | None = None) -> None:
        parser = argparse.ArgumentParser(
            prog=f"groundswell-{self.name}", description=self.description
        )
        commands = parser.add_subparsers(dest="command", required=True)
        commands.add_parser("serve", help=self.serve.help)
        for name, command in self.extra.items():
            commands.add_parser(name, help=command.help)
        database = self.database
        if database is not None:
            commands.add_parser("migrate", help="apply the database migrations, then exit")
            add_retention_command(commands)
        args = parser.parse_args(argv)

        settings = self.settings()
        configure_logging(self.name, settings.log_level)
        if database is not None and args.command == "migrate":
            asyncio.run(migrate(settings.database_url, database.schema, list(database.migrations)))
        elif database is not None and args.command == "retention":
            pruned = self._retention(settings, database, args.metrics_file)
            print(asyncio.run(pruned), end="")
        elif args.command == "serve":
            self.serve.run(settings)
        else:
            self.extra[args.command].run(settings)

    async def _retention(
        self, settings: S, database: Database[S], metrics_file: Path | None
    ) -> str:
        await migrate(settings.database_url, database.schema, list(database.migrations))
        pool = await create_pool(settings.database_url, max_size=2)
        try:
            started = time.monotonic()
            counts = await database.prune(settings, pool, datetime.now(UTC))
            seconds = time.monotonic() - started
        finally:
            await pool.close()
        return report(
            self.name, counts, seconds=seconds, finished_at=time.time(), metrics_file=metrics_file
        )
