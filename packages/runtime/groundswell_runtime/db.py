"""asyncpg pool and a small forward-only migration runner.

Each service owns one PostgreSQL schema and lists its migrations in order; the
runner records what it applied in `<schema>.schema_migrations` under an advisory
lock, so several instances starting at once migrate exactly once.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.resources import files

import asyncpg
import structlog

from groundswell_runtime.priority import lend_priority

log = structlog.get_logger()


# A database that is briefly away (restarting, "starting up", connection cut, pool full)
# or a transaction that lost a race: none of it is the request's or the event's fault, so
# callers retry (loops) or answer 503 with Retry-After (HTTP), never dead-letter or 500.
TEMPORARY_DATABASE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,  # class 08: connection exceptions
    asyncpg.InterfaceError,  # connection closed or released under us
    # What asyncpg raises when the server's "terminating connection" notice arrives
    # while a query is being sent on a pooled connection (seen on a fast shutdown).
    asyncpg.InternalClientError,
    asyncpg.TooManyConnectionsError,  # 53300
    # Class 57, operator intervention: 57P01 admin shutdown, 57P02 crash shutdown,
    # 57P03 "the database system is starting up", 57014 query cancelled.
    asyncpg.OperatorInterventionError,
    asyncpg.DeadlockDetectedError,  # 40P01
    asyncpg.SerializationError,  # 40001
)


# For the statements that take work from a queue table (the outbox relay's batch, the
# mailer's claim): run this first in the same transaction. Rows leave such a queue by
# being deleted or by changing status, so between two vacuums most of what its index
# holds are entries of dead rows. A plain index scan marks an entry it finds dead (to
# every transaction) as such, and later scans skip it; a bitmap scan never does, and
# reads every dead row's page again, every time. The planner takes the bitmap scan and
# a sort when it expects few rows, which is exactly when the queue is keeping up.
# Measured on the outbox with 30,000 rows deleted and 2,000 pending: 2,811 pages read by
# every pass, against 2,747 for the first pass and 175 for each one after it with plain
# index scans. At 1,000 signatures a second 2,000 outbox rows die a second, and the
# relay's passes slowed until autovacuum came round: the outbox's oldest row aged to
# ~5 s, dropped, and aged again. The settings last until the transaction ends.
# JIT goes too (the pools have it off; this holds for any connection): a plan that still
# needs a disabled node (a sort, say) costs 10^10 more, far over the JIT threshold, and
# compiling one took 2.3 s per mailer claim (measured).
INDEX_SCANS_ONLY = (
    "SELECT set_config('enable_bitmapscan', 'off', true), "
    "set_config('enable_seqscan', 'off', true), set_config('jit', 'off', true)"
)


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str


def migrations_from_package(package: str, folder: str = "migrations") -> list[Migration]:
    """Every `NNN_name.sql` in a package folder, in name order."""
    directory = files(package).joinpath(folder)
    return [
        Migration(entry.name, entry.read_text())
        for entry in sorted(directory.iterdir(), key=lambda e: e.name)
        if entry.name.endswith(".sql")
    ]


async def _keep_session(_conn: asyncpg.Connection) -> None:
    """Release without resetting the session.

    asyncpg's default reset sends `SELECT pg_advisory_unlock_all(); CLOSE ALL; UNLISTEN *;
    RESET ALL` on every release: measured under load, that was the most frequent statement
    on the server, a round trip per pooled use. Nothing here leaves session state on a
    pooled connection: no SET (only SET LOCAL), advisory locks are transaction-scoped,
    cursors live inside transactions, and the LISTEN connections remove their listeners
    before release. asyncpg still rolls back an open transaction and drops listeners.
    """


# Our statements are short (single rows, or a batch of a few hundred): compiling one
# with JIT costs far more than running it, and PostgreSQL decides on JIT by estimated
# cost, which a planner misled by the statistics of a table that was empty a minute ago
# can overshoot (`INDEX_SCANS_ONLY` has a measured case: 2.3 s to compile a claim).
SERVER_SETTINGS = {"jit": "off"}


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, settings: Mapping[str, str] | None = None
) -> asyncpg.Pool:
    """A pool with `SERVER_SETTINGS` and `settings` on each of its connections, whose
    backends share this process's CPU priority where they can (priority.py)."""
    pool = await asyncpg.create_pool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        reset=_keep_session,
        init=lend_priority,
        server_settings=SERVER_SETTINGS | dict(settings or {}),
    )
    assert pool is not None
    return pool


async def wait_for_database(dsn: str, patience: float = 30.0) -> None:
    deadline = asyncio.get_running_loop().time() + patience
    while True:
        try:
            conn = await asyncpg.connect(dsn, timeout=2)
            await conn.close()
            return
        except (TimeoutError, OSError, asyncpg.PostgresError):
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.2)


async def migrate(dsn: str, schema: str, migrations: list[Migration]) -> list[str]:
    """Apply the migrations not yet applied; returns their names."""
    applied: list[str] = []
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", zlib.crc32(schema.encode()))
        await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        await conn.execute(
            f'CREATE TABLE IF NOT EXISTS "{schema}".schema_migrations '
            "(name text PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {
            r["name"] for r in await conn.fetch(f'SELECT name FROM "{schema}".schema_migrations')
        }
        for migration in migrations:
            if migration.name in done:
                continue
            async with conn.transaction():
                await conn.execute(f'SET LOCAL search_path TO "{schema}", public')
                await conn.execute(migration.sql)
                await conn.execute(
                    f'INSERT INTO "{schema}".schema_migrations (name) VALUES ($1)', migration.name
                )
            applied.append(migration.name)
        log.info("migrated", schema=schema, applied=applied)
    finally:
        await conn.execute("SELECT pg_advisory_unlock_all()")
        await conn.close()
    return applied


async def database_reachable(pool: asyncpg.Pool) -> bool:
    async with pool.acquire(timeout=2) as conn:
        return bool(await conn.fetchval("SELECT 1") == 1)


async def close_pool(pool: asyncpg.Pool, grace: float = 10.0) -> None:
    """Close gracefully, but never hang shutdown on a connection left mid-operation."""
    try:
        await asyncio.wait_for(pool.close(), timeout=grace)
    except (TimeoutError, asyncpg.InterfaceError):
        log.warning("pool_close_forced")
        pool.terminate()
