"""The statement that moves clicks which waited for their links (adapters/clicks.py,
`attribute_pending`) on the real PostgreSQL: what it moves, and a plan that reads
share_links only for the pending clicks it finds, whichever generic plan the service's
prepared statement settles on.

The service runs it once per run of new signatures, nearly always with nothing pending.
asyncpg keeps the statement prepared per connection and PostgreSQL settles on a generic
plan after five runs; an earlier shape, planned while share_links was small (a fresh
start), read every link on every run from then on.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from groundswell_runtime.db import migrate
from groundswell_sharing.adapters import clicks
from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.domain.clicks import PENDING_TTL
from groundswell_stack.infra import Infra

from ...conftest import scratch_database

PETITION = uuid.uuid4()


@pytest.fixture
async def conn(infra: Infra) -> AsyncIterator[asyncpg.Connection]:
    async with scratch_database(infra, "spending") as url:
        await migrate(url, repo.SCHEMA, repo.migrations())
        connection = await asyncpg.connect(url)
        try:
            await connection.execute(
                "INSERT INTO sharing.petitions VALUES ($1, 'clean-rivers', 'Clean rivers', now())",
                PETITION,
            )
            yield connection
        finally:
            await connection.close()


async def _links(conn: asyncpg.Connection, codes: list[str]) -> None:
    await conn.executemany(
        "INSERT INTO sharing.share_links (share_code, signature_id, petition_id, status, "
        "created_at) VALUES ($1, gen_random_uuid(), $2, 'counted', now())",
        [(code, PETITION) for code in codes],
    )


async def _pending(conn: asyncpg.Connection, code: str, visitor: str, at: datetime) -> None:
    await conn.execute(
        "INSERT INTO sharing.pending_clicks (share_code, channel, visitor_hash, clicked_on, "
        "clicked_at) VALUES ($1, 'whatsapp', $2, $3::timestamptz::date, $3)",
        code,
        visitor,
        at,
    )


async def test_clicks_waiting_for_stored_links_move_and_the_others_stay(
    conn: asyncpg.Connection,
) -> None:
    now = datetime.now(UTC)
    await _links(conn, ["known"])
    await _pending(conn, "known", "v1", now - timedelta(minutes=3))
    await _pending(conn, "known", "stale", now - PENDING_TTL - timedelta(hours=1))
    # Named in the run but with no link stored (its insert gave way): stays pending.
    await _pending(conn, "no-link", "v2", now - timedelta(minutes=2))
    await _pending(conn, "elsewhere", "v3", now - timedelta(minutes=1))

    moved = await clicks.attribute_pending(conn, [("known", PETITION), ("no-link", PETITION)], now)

    assert moved == [("known", "whatsapp")]
    assert [
        tuple(r)
        for r in await conn.fetch(
            "SELECT share_code, visitor_hash, petition_id FROM sharing.clicks"
        )
    ] == [("known", "v1", PETITION)]
    left = await conn.fetch("SELECT share_code FROM sharing.pending_clicks ORDER BY share_code")
    assert [r["share_code"] for r in left] == ["elsewhere", "no-link"]


def _share_links_nodes(node: dict[str, Any], in_subplan: bool = False) -> list[tuple[str, bool]]:
    """(node type, under a SubPlan) of every plan node that reads share_links."""
    in_subplan = in_subplan or node.get("Parent Relationship") == "SubPlan"
    found = []
    if node.get("Relation Name") == "share_links":
        found.append((str(node["Node Type"]), in_subplan))
    for child in node.get("Plans", []):
        found.extend(_share_links_nodes(child, in_subplan))
    return found


@pytest.mark.parametrize("links", [0, 100, 1000])
async def test_the_generic_plan_reads_share_links_only_for_pending_clicks(
    conn: asyncpg.Connection, links: int
) -> None:
    await _links(conn, [f"c{n}" for n in range(links)])
    await conn.execute("ANALYZE sharing.share_links")
    await conn.execute("SET plan_cache_mode = force_generic_plan")
    await conn.execute(
        f"PREPARE attribute(text[], uuid[], timestamptz) AS {clicks.ATTRIBUTE_PENDING}"
    )
    # EXPLAIN takes no parameters: the petition goes in as a literal (a UUID).
    plan = await conn.fetchval(
        f"EXPLAIN (FORMAT JSON) EXECUTE attribute(ARRAY['c1'], ARRAY['{PETITION}'::uuid], now())"
    )
    nodes = _share_links_nodes(json.loads(plan)[0]["Plan"])
    assert nodes, "the statement checks that each click's link is stored"
    # Only as a SubPlan, run once per pending click found: with nothing pending (nearly
    # every run) share_links is not read at all. A join with it would read it each run.
    assert all(in_subplan for _, in_subplan in nodes), nodes
