"""Issue 9: signing rides through a PostgreSQL restart with no human.

The test runs its own PostgreSQL cluster, so restarting it disturbs no other test.
"""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from groundswell_stack.postgres import LocalPostgres
from groundswell_stack.processes import free_port

from .conftest import SettingsFactory, SigningHarness, start_harness


@pytest.fixture
async def own_postgres() -> AsyncIterator[LocalPostgres]:
    root = Path(tempfile.mkdtemp(prefix="groundswell-restart-"))
    root.chmod(0o755)
    postgres = await asyncio.to_thread(LocalPostgres(root, free_port()).start)
    try:
        yield postgres
    finally:
        await asyncio.to_thread(postgres.stop)


async def pending_outbox(url: str) -> int:
    conn = await asyncpg.connect(url)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM signing.outbox WHERE published_at IS NULL")
        )
    finally:
        await conn.close()


@pytest.mark.parametrize("mode", ["fast", "immediate"])
async def test_a_database_restart_gives_503s_then_heals_by_itself(
    topics: None, signing_settings: SettingsFactory, own_postgres: LocalPostgres, mode: str
) -> None:
    harness: SigningHarness
    async for harness in start_harness(signing_settings(database_url=own_postgres.url)):
        petition = await harness.create_petition(requires_confirmation=False)
        slug = petition["slug"]
        assert (await harness.sign(slug)).status_code == 202

        await asyncio.to_thread(own_postgres.shutdown, mode)
        during = [await harness.sign(slug) for _ in range(5)]
        assert {r.status_code for r in during} == {503}, [r.text for r in during]
        assert all(int(r.headers["retry-after"]) >= 1 for r in during)
        assert "try again" in during[0].json()["detail"].lower()
        page = await harness.client.post(
            f"/p/{slug}", data={"name": "Ada Lovelace", "email": "p@example.org", "country": "GB"}
        )
        assert page.status_code == 503 and "try again in a moment" in page.text.lower()

        await asyncio.to_thread(own_postgres.start)
        # The pool reconnects by itself: signing works again without a restart.
        for _ in range(100):
            after = await harness.sign(slug)
            if after.status_code == 202:
                break
            assert after.status_code == 503
            await asyncio.sleep(0.1)
        assert after.status_code == 202
        # The outbox relay carries on too: every event is published.
        for _ in range(150):
            if await pending_outbox(own_postgres.url) == 0:
                break
            await asyncio.sleep(0.1)
        assert await pending_outbox(own_postgres.url) == 0
        ready = await harness.client.get("/readyz")
        assert ready.status_code == 200, ready.text
