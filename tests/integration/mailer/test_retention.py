"""`groundswell-mailer retention` against real PostgreSQL, with a frozen clock."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters import retention
from groundswell_runtime.db import create_pool, migrate
from groundswell_stack.infra import Infra

from ...conftest import scratch_database

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)


@pytest.fixture
async def db(infra: Infra) -> AsyncIterator[asyncpg.Pool]:
    async with scratch_database(infra, "mailer") as url:
        await migrate(url, repo.SCHEMA, repo.migrations())
        pool = await create_pool(url, max_size=2)
        try:
            yield pool
        finally:
            await pool.close()


async def _email(pool: asyncpg.Pool, status: str, finished_days_ago: int | None) -> int:
    finished = None if finished_days_ago is None else NOW - timedelta(days=finished_days_ago)
    await pool.execute(
        "INSERT INTO mailer.recipients (address_key, unsubscribe_token, last_signature_id, "
        "last_petition_id) VALUES ('someone@example.org', 'tok', $1, $1) "
        "ON CONFLICT DO NOTHING",
        uuid.uuid4(),
    )
    email_id: int = await pool.fetchval(
        "INSERT INTO mailer.emails (signature_id, kind, petition_id, address_key, content, "
        "message_id, status, created_at, finished_at) VALUES ($1, 'thank_you', $1, "
        "'someone@example.org', '{}'::jsonb, $2, $3, $4, $4) RETURNING id",
        uuid.uuid4(),
        f"<{uuid.uuid4()}@groundswell.test>",
        status,
        finished or NOW - timedelta(days=200),
    )
    if finished is None:  # not finished: created long ago, still waiting
        await pool.execute("UPDATE mailer.emails SET finished_at = NULL WHERE id = $1", email_id)
    return email_id


async def test_finished_emails_go_after_their_period_and_nothing_else(db: asyncpg.Pool) -> None:
    old = {s: await _email(db, s, 91) for s in ("sent", "failed", "suppressed", "cancelled")}
    recent = await _email(db, "sent", 89)
    waiting = {s: await _email(db, s, None) for s in ("held", "queued")}
    await db.executemany(
        "INSERT INTO mailer.processed_events (event_id, processed_at) VALUES ($1, $2)",
        [(uuid.uuid4(), NOW - timedelta(days=400)), (uuid.uuid4(), NOW - timedelta(days=10))],
    )

    counts = await retention.prune(
        db,
        now=NOW,
        email_retention=timedelta(days=90),
        processed_events_retention=None,
        batch_size=2,  # several batches
    )

    assert counts == {"emails_deleted": 4, "processed_events_deleted": 0}
    left = {r["id"] for r in await db.fetch("SELECT id FROM mailer.emails")}
    assert left == {recent, *waiting.values()}
    assert not left & set(old.values())
    # The handled-event ids are the guard against sending twice: kept by default.
    assert await db.fetchval("SELECT count(*) FROM mailer.processed_events") == 2

    again = await retention.prune(
        db, now=NOW, email_retention=timedelta(days=90), processed_events_retention=None
    )
    assert again == {"emails_deleted": 0, "processed_events_deleted": 0}


async def test_processed_events_pruned_only_when_asked(db: asyncpg.Pool) -> None:
    keep, drop = uuid.uuid4(), uuid.uuid4()
    await db.executemany(
        "INSERT INTO mailer.processed_events (event_id, processed_at) VALUES ($1, $2)",
        [(drop, NOW - timedelta(days=400)), (keep, NOW - timedelta(days=10))],
    )
    counts = await retention.prune(
        db,
        now=NOW,
        email_retention=timedelta(days=90),
        processed_events_retention=timedelta(days=365),
    )
    assert counts == {"emails_deleted": 0, "processed_events_deleted": 1}
    assert [
        r["event_id"] for r in await db.fetch("SELECT event_id FROM mailer.processed_events")
    ] == [keep]
