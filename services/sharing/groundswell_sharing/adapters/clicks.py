"""Recording clicks: the once-a-day key, the hourly budget, and clicks waiting for their link.

The rules are in `domain/clicks.py`; this module keeps them in PostgreSQL. Two advisory
locks (transaction-scoped, so they go with the commit or rollback) make the checks hold
under concurrency:
- the bucket lock (the caller's network, or IPv6 site) serialises the budget count with
  the insert it allows;
- the code lock serialises a click on a link not known yet with the `SignatureCreated`
  that creates it: either the click's pending row is committed first and the event's
  handler moves it, or the link is committed first and the click, re-reading it after
  the lock, counts as an ordinary click. Without it a pending row could be written just
  after the handler looked, and never count.
A holder of a bucket lock never waits for a code lock, so the two cannot deadlock.
"""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

import asyncpg
from groundswell_contracts.events import ShareLinkClicked
from groundswell_runtime.outbox import enqueue

from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.domain.clicks import (
    PENDING_TTL,
    WINDOW,
    ClickBudget,
    Outcome,
    Visitor,
    decide,
)

# Class ids of sharing's two-key advisory locks (the second key is hashtext of the value).
_BUCKET_LOCK = 7301
_CODE_LOCK = 7302


async def lock_code(conn: asyncpg.Connection, share_code: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _CODE_LOCK, share_code)


async def store_link(
    conn: asyncpg.Connection,
    *,
    share_code: str,
    signature_id: UUID,
    petition_id: UUID,
    petition_slug: str,
    petition_title: str,
    first_name: str,
    source: str | None,
    status: repo.Status,
    created_at: datetime,
) -> None:
    """A signature's share link, under its code lock held to commit (see the module
    docstring), with the petition row it needs: one statement, one round trip, where
    three (petition, code lock, link) used to be.

    The lock is taken while the row to insert is produced, so before the link exists, as
    with `lock_code` first. The petition comes from the CTE, which only fills a gap
    (never overrides what a petition event wrote: `updated_at` is -infinity); the
    link's foreign key is checked at the end of the statement, when the petition is there.
    """
    await conn.execute(
        "WITH petition AS (INSERT INTO sharing.petitions (petition_id, slug, title, updated_at) "
        "  VALUES ($3::uuid, $8::text, $9::text, '-infinity') "
        "  ON CONFLICT (petition_id) DO NOTHING) "
        "INSERT INTO sharing.share_links "
        "(share_code, signature_id, petition_id, first_name, source, status, created_at) "
        "SELECT $1::text, $2::uuid, $3::uuid, $4::text, $5::text, $6::text, $7::timestamptz "
        "FROM (SELECT pg_advisory_xact_lock($10::int, hashtext($1::text))) AS code_lock "
        "ON CONFLICT DO NOTHING",
        share_code,
        signature_id,
        petition_id,
        first_name or None,
        source,
        status,
        created_at,
        petition_slug,
        petition_title,
        _CODE_LOCK,
    )


async def record_click(
    pool: asyncpg.Pool,
    *,
    share_code: str,
    channel: str,
    automated: bool,
    visitor: Visitor,
    at: datetime,
    budget: ClickBudget,
    keep_if_unknown: bool,
) -> tuple[Outcome, repo.ShareLink | None]:
    """Count (or not) one visit of `/s/{share_code}`; returns what happened and the link.

    `keep_if_unknown`: keep a person's click on an unknown code as pending (the caller
    redirects or asks the browser to retry); False when it is given up as unknown.
    """
    async with pool.acquire() as conn, conn.transaction():
        link = await repo.find_share_link(conn, share_code)
        if automated:
            return (Outcome.ROBOT if link else Outcome.UNKNOWN), link
        if link is None:
            if not keep_if_unknown:
                return Outcome.UNKNOWN, None
            await lock_code(conn, share_code)
            link = await repo.find_share_link(conn, share_code)
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))", _BUCKET_LOCK, visitor.lock_key
        )
        outcome = await _decide(conn, share_code, visitor, at, budget)
        if outcome is not Outcome.COUNTED:
            return outcome, link
        if link is None:
            return await _keep_pending(conn, share_code, channel, visitor, at), None
        inserted = await conn.fetchval(
            "INSERT INTO sharing.clicks (share_code, petition_id, channel, visitor_hash, "
            "site_hash, clicked_on, clicked_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
            "ON CONFLICT (share_code, visitor_hash, clicked_on) DO NOTHING RETURNING true",
            link.share_code,
            link.petition_id,
            channel,
            visitor.network,
            visitor.site,
            at.date(),
            at,
        )
        if inserted is not True:
            return Outcome.REPEAT, link
        await enqueue(
            conn,
            repo.SCHEMA,
            ShareLinkClicked(petition_id=link.petition_id, share_code=share_code, channel=channel),
        )
        return Outcome.COUNTED, link


async def _decide(
    conn: asyncpg.Connection, share_code: str, visitor: Visitor, at: datetime, budget: ClickBudget
) -> Outcome:
    # Pending clicks count against the budget too: they will count once their link is known.
    row = await conn.fetchrow(
        "SELECT "
        "  EXISTS (SELECT 1 FROM sharing.clicks "
        "          WHERE share_code = $1 AND visitor_hash = $2 AND clicked_on = $3) "
        "  OR EXISTS (SELECT 1 FROM sharing.pending_clicks "
        "             WHERE share_code = $1 AND visitor_hash = $2 AND clicked_on = $3) AS seen, "
        "  (SELECT count(*) FROM sharing.clicks "
        "   WHERE visitor_hash = ANY($4::text[]) AND clicked_at > $6) "
        "  + (SELECT count(*) FROM sharing.pending_clicks "
        "     WHERE visitor_hash = ANY($4::text[]) AND clicked_at > $6) AS network_clicks, "
        "  (SELECT count(*) FROM sharing.clicks "
        "   WHERE site_hash = ANY($5::text[]) AND clicked_at > $6) "
        "  + (SELECT count(*) FROM sharing.pending_clicks "
        "     WHERE site_hash = ANY($5::text[]) AND clicked_at > $6) AS site_clicks",
        share_code,
        visitor.network,
        at.date(),
        list(visitor.window_networks),
        list(visitor.window_sites),
        at - WINDOW,
    )
    assert row is not None
    return decide(
        seen_today=bool(row["seen"]),
        network_clicks=int(row["network_clicks"]),
        site_clicks=int(row["site_clicks"]),
        budget=budget,
    )


async def _keep_pending(
    conn: asyncpg.Connection, share_code: str, channel: str, visitor: Visitor, at: datetime
) -> Outcome:
    # Forget what waited too long for a link that never came, so the table stays small.
    await conn.execute("DELETE FROM sharing.pending_clicks WHERE clicked_at < $1", at - PENDING_TTL)
    inserted = await conn.fetchval(
        "INSERT INTO sharing.pending_clicks (share_code, channel, visitor_hash, site_hash, "
        "clicked_on, clicked_at) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT DO NOTHING RETURNING true",
        share_code,
        channel,
        visitor.network,
        visitor.site,
        at.date(),
        at,
    )
    return Outcome.PENDING if inserted is True else Outcome.REPEAT


async def attribute_pending(
    conn: asyncpg.Connection, share_code: str, petition_id: UUID, now: datetime
) -> list[str]:
    """Move the clicks that waited for this (now stored) link into clicks; their channels.

    Call under `lock_code` in the transaction that stored the link. A click the same
    network also made after the link was known (same day) is already counted: the
    clicks table's key drops the pending one.
    """
    rows = await conn.fetch(
        # Only onto a stored link (the clicks table's foreign key); else they stay pending.
        "WITH moved AS (DELETE FROM sharing.pending_clicks WHERE share_code = $1 "
        "  AND EXISTS (SELECT 1 FROM sharing.share_links WHERE share_code = $1) "
        "  RETURNING channel, visitor_hash, site_hash, clicked_on, clicked_at) "
        "INSERT INTO sharing.clicks (share_code, petition_id, channel, visitor_hash, "
        "  site_hash, clicked_on, clicked_at) "
        "SELECT $1, $2, channel, visitor_hash, site_hash, clicked_on, clicked_at FROM moved "
        "WHERE clicked_at >= $3 "
        "ON CONFLICT (share_code, visitor_hash, clicked_on) DO NOTHING RETURNING channel",
        share_code,
        petition_id,
        now - PENDING_TTL,
    )
    return [str(r["channel"]) for r in rows]
