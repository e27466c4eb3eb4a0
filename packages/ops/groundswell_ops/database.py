"""PostgreSQL reads: each service's outbox backlog."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

import asyncpg

from groundswell_ops.errors import CannotConnect

CONNECT_TIMEOUT_SECONDS = 5.0


@dataclass(frozen=True)
class OutboxBacklog:
    schema: str
    present: bool  # False until the service has migrated its schema
    pending: int
    oldest_age_seconds: float | None


def _where(url: str) -> str:
    # Never echo a password from the URL into an error line.
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path}"


async def open_connection(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT_SECONDS)
    except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CannotConnect(f"cannot reach PostgreSQL at {_where(url)}: {detail}") from None


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await open_connection(url)
    try:
        yield conn
    finally:
        await asyncio.shield(conn.close(timeout=2))


async def outbox_backlog(conn: asyncpg.Connection, schemas: Sequence[str]) -> list[OutboxBacklog]:
    present = {
        row["table_schema"]
        for row in await conn.fetch(
            "SELECT table_schema FROM information_schema.tables "
            "WHERE table_name = 'outbox' AND table_schema = ANY($1)",
            list(schemas),
        )
    }
    backlog = []
    for schema in schemas:
        if schema not in present:
            backlog.append(OutboxBacklog(schema, False, 0, None))
            continue
        # Both read through the partial index on pending rows (`outbox_pending`); the
        # oldest by id is the oldest by time, as ids are assigned at insert.
        row = await conn.fetchrow(
            f'SELECT (SELECT count(*) FROM "{schema}".outbox WHERE published_at IS NULL) AS n, '
            "(SELECT extract(epoch FROM now() - created_at) "
            f' FROM "{schema}".outbox WHERE published_at IS NULL ORDER BY id LIMIT 1) AS age'
        )
        assert row is not None
        age = float(row["age"]) if row["age"] is not None else None
        backlog.append(OutboxBacklog(schema, True, int(row["n"]), age))
    return backlog
