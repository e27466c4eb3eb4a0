"""`groundswell-sharing retention` against real PostgreSQL, with a frozen clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from groundswell_runtime.db import create_pool, migrate
from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.adapters import retention
from groundswell_stack.infra import Infra

from ...conftest import scratch_database

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    async with scratch_database(infra, "sharing") as url:
        await migrate(url, repo.SCHEMA, repo.migrations())
        pool = await create_pool(url, max_size=2)
        try:
            yield pool
        finally:
            await pool.close()


async def _click(pool: asyncpg.Pool, code: str, petition: uuid.UUID, days_ago: float) -> int:
    at = NOW - timedelta(days=days_ago)
    click_id: int = await pool.fetchval(
        "INSERT INTO sharing.clicks (share_code, petition_id, channel, visitor_hash, "
        "clicked_on, clicked_at) VALUES ($1, $2, 'whatsapp', $3, $4, $5) RETURNING id",
        code,
        petition,
        uuid.uuid4().hex,
        at.date(),
        at,
    )
    return click_id


async def test_old_clicks_and_stale_pending_clicks_go(db: asyncpg.Pool) -> None:
    petition = uuid.uuid4()
    await db.execute(
        "INSERT INTO sharing.petitions VALUES ($1, 'p', 'A petition', $2)", petition, NOW
    )
    await db.execute(
        "INSERT INTO sharing.share_links (share_code, signature_id, petition_id, status, "
        "created_at) VALUES ('abc123', $1, $2, 'counted', $3)",
        uuid.uuid4(),
        petition,
        NOW - timedelta(days=500),
    )
    old = [await _click(db, "abc123", petition, days) for days in (400, 366, 365.5)]
    kept = [await _click(db, "abc123", petition, days) for days in (364, 1)]
    for days in (2, 0.5):
        at = NOW - timedelta(days=days)
        await db.execute(
            "INSERT INTO sharing.pending_clicks (share_code, channel, visitor_hash, "
            "clicked_on, clicked_at) VALUES ('zzz999', 'email', $1, $2, $3)",
            uuid.uuid4().hex,
            at.date(),
            at,
        )

    counts = await retention.prune(
        db,
        now=NOW,
        click_retention=timedelta(days=365),
        pending_click_retention=timedelta(days=1),
        batch_size=2,
    )

    assert counts == {"clicks_deleted": 3, "pending_clicks_deleted": 1}
    left = {r["id"] for r in await db.fetch("SELECT id FROM sharing.clicks")}
    assert left == set(kept) and not left & set(old)
    assert await db.fetchval("SELECT count(*) FROM sharing.pending_clicks") == 1
    # The link itself stays: the stats are made of it.
    assert await db.fetchval("SELECT count(*) FROM sharing.share_links") == 1
    again = await retention.prune(
        db,
        now=NOW,
        click_retention=timedelta(days=365),
        pending_click_retention=timedelta(days=1),
    )
    assert again == {"clicks_deleted": 0, "pending_clicks_deleted": 0}
