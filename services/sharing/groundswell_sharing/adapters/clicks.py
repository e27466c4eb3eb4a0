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

The consumer handles a run of `SignatureCreated` events with two statements in its
transaction, and the argument holds for each code of the run:
1. `store_links` takes each code's lock before that code's link row is inserted, in
   the same statement, and keeps it to commit;
2. `attribute_pending`, a later statement, takes its snapshot after every lock of
   step 1 was granted.
A click on code c either got c's lock first: it held it until its pending row was
committed, so step 1 waited for that commit and step 2's snapshot sees the row and
moves it. Or the consumer got c's lock first: the click waits for it until the
consumer's transaction, link included, is committed, and its re-read sees the link.
Steps 1 and 2 cannot be one statement: a statement's snapshot is taken before the
locks it goes on to take, so it could miss a pending row committed while it waited.
"""

from __future__ import annotations

from collections.abc import Sequence
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
from groundswell_sharing.domain.signups import NewLink

# Class ids of sharing's two-key advisory locks (the second key is hashtext of the value).
_BUCKET_LOCK = 7301
_CODE_LOCK = 7302


async def lock_code(conn: asyncpg.Connection, share_code: str) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock($1, hashtext($2))", _CODE_LOCK, share_code)


async def store_links(conn: asyncpg.Connection, links: Sequence[NewLink]) -> set[UUID]:
    """Claim a run's events and store the share links of those claimed now, each under its
    code lock held to commit (see the module docstring), with the petition rows they
    need; returns the event ids claimed now (a redelivered one is absent). One statement
    for the whole run (domain/signups.py: distinct ids, signatures and codes).

    Each code's lock is taken while its row to insert is produced, so before its link
    exists, as with `lock_code` first; the locks are taken in one order (the lock key's),
    so two transactions locking several codes cannot wait on each other in a circle (a
    code is one signature's, whose events all go to one partition, so none does today).
    The petitions come from a CTE, which only fills gaps (never overrides what a petition
    event wrote: `updated_at` is -infinity), in key order as well; the links' foreign key
    is checked at the end of the statement, when the petitions are there.
    """
    if not links:
        return set()
    rows = await conn.fetch(
        "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::text[], $3::uuid[], $4::uuid[], "
        "  $5::text[], $6::text[], $7::text[], $8::timestamptz[], $9::text[], $10::text[]) "
        "  WITH ORDINALITY AS t(event_id, share_code, signature_id, petition_id, first_name, "
        "  source, status, created_at, slug, title, n)), "
        "claimed AS (INSERT INTO sharing.processed_events (event_id) "
        "  SELECT event_id FROM input ORDER BY n ON CONFLICT DO NOTHING RETURNING event_id), "
        "new AS (SELECT input.* FROM input JOIN claimed USING (event_id)), "
        "petitions AS (INSERT INTO sharing.petitions (petition_id, slug, title, updated_at) "
        "  SELECT DISTINCT ON (petition_id) petition_id, slug, title, '-infinity'::timestamptz "
        "  FROM new ORDER BY petition_id, n ON CONFLICT (petition_id) DO NOTHING), "
        # pg_advisory_xact_lock is volatile: evaluated above the sort, row by row in its
        # order, each just before that row is inserted.
        "links AS (INSERT INTO sharing.share_links "
        "  (share_code, signature_id, petition_id, first_name, source, status, created_at) "
        "  SELECT share_code, signature_id, petition_id, first_name, source, status, created_at "
        "  FROM (SELECT share_code, signature_id, petition_id, first_name, source, status, "
        "    created_at, pg_advisory_xact_lock($11::int, h) "
        "    FROM (SELECT new.*, hashtext(share_code) AS h FROM new ORDER BY h, share_code, n) "
        "    AS ordered) AS locked "
        "  ON CONFLICT DO NOTHING) "
        "SELECT event_id FROM claimed",
        [link.event.event_id for link in links],
        [link.event.share_code for link in links],
        [link.event.signature_id for link in links],
        [link.event.petition_id for link in links],
        [link.first_name for link in links],
        [link.event.source for link in links],
        [link.status for link in links],
        [link.event.occurred_at for link in links],
        [link.event.petition_slug for link in links],
        [link.event.petition_title for link in links],
        _CODE_LOCK,
    )
    return {r["event_id"] for r in rows}


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


# `attribute_pending`'s statement ($1 codes, $2 their petitions, $3 oldest click kept).
# With nothing pending (nearly every run) it reads only pending_clicks' key, whatever
# plan the connection's prepared statement keeps. Joining the codes with share_links did
# not: asyncpg keeps one prepared statement per connection, PostgreSQL settles on a
# generic plan after five runs, and the one made while share_links held up to a thousand
# rows (a fresh start) read all of share_links on every run from then on (1.3 ms a run at
# 30,000 links in a micro-benchmark; the 700/s profile had 3.8 ms a run). Here
# share_links is read only by the scalar subquery, which PostgreSQL never turns into a
# join: it runs once per pending click found (test_pending_clicks_statement.py checks the
# generic plan).
ATTRIBUTE_PENDING = (
    "WITH moved AS (DELETE FROM sharing.pending_clicks p "
    "  WHERE p.share_code = ANY($1::text[]) "
    # Only onto a stored link (the clicks table's foreign key); else they stay pending.
    "  AND (SELECT true FROM sharing.share_links l WHERE l.share_code = p.share_code) "
    "  RETURNING p.share_code, p.channel, p.visitor_hash, p.site_hash, p.clicked_on, "
    "  p.clicked_at) "
    "INSERT INTO sharing.clicks (share_code, petition_id, channel, visitor_hash, "
    "  site_hash, clicked_on, clicked_at) "
    "SELECT m.share_code, i.petition_id, m.channel, m.visitor_hash, m.site_hash, "
    "  m.clicked_on, m.clicked_at "
    "FROM moved m JOIN unnest($1::text[], $2::uuid[]) AS i(share_code, petition_id) "
    "  ON i.share_code = m.share_code "
    "WHERE m.clicked_at >= $3 "
    "ON CONFLICT (share_code, visitor_hash, clicked_on) DO NOTHING "
    "RETURNING share_code, channel"
)


async def attribute_pending(
    conn: asyncpg.Connection, links: Sequence[tuple[str, UUID]], now: datetime
) -> list[tuple[str, str]]:
    """Move the clicks that waited for these (now stored) links, (share code, petition),
    into clicks; returns (share code, channel) of each click moved.

    Call in the transaction that stored the links under their code locks, in a later
    statement than `store_links` (its snapshot then sees every pending click committed
    before those locks were granted). A click the same network also made after the link
    was known (same day) is already counted: the clicks table's key drops the pending one.
    The codes must be distinct.
    """
    if not links:
        return []
    rows = await conn.fetch(
        ATTRIBUTE_PENDING,
        [code for code, _ in links],
        [petition_id for _, petition_id in links],
        now - PENDING_TTL,
    )
    return [(str(r["share_code"]), str(r["channel"])) for r in rows]
