"""The sharing schema: petitions, share links, referrals and stats (clicks: clicks.py).

Functions taking a connection run inside the caller's transaction (so an outbox
row commits with its change); functions taking a pool open their own.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from groundswell_runtime.consumer import PROCESSED_EVENTS_DDL
from groundswell_runtime.db import Migration, migrations_from_package
from groundswell_runtime.outbox import outbox_migration

from groundswell_sharing.domain.stats import ReferrerTally

SCHEMA = "sharing"

Status = str  # 'pending' | 'counted' | 'void'


def migrations() -> list[Migration]:
    return [
        outbox_migration(),
        Migration("000_processed_events.sql", PROCESSED_EVENTS_DDL),
        *migrations_from_package("groundswell_sharing.adapters"),
    ]


def _rowcount(command_status: object) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 3".
    return int(str(command_status).split()[-1])


# --- petitions -------------------------------------------------------------


async def upsert_petition(
    conn: asyncpg.Connection, petition_id: UUID, slug: str, title: str, at: datetime
) -> None:
    """From a petition event: the newest one wins, whatever order they arrive in."""
    await conn.execute(
        "INSERT INTO sharing.petitions (petition_id, slug, title, updated_at) "
        "VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (petition_id) DO UPDATE SET slug = EXCLUDED.slug, "
        "title = EXCLUDED.title, updated_at = EXCLUDED.updated_at "
        "WHERE sharing.petitions.updated_at <= EXCLUDED.updated_at",
        petition_id,
        slug,
        title,
        at,
    )


async def petition_by_slug(pool: asyncpg.Pool, slug: str) -> tuple[UUID, str] | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT petition_id, slug FROM sharing.petitions WHERE slug = $1 "
            "ORDER BY updated_at DESC LIMIT 1",
            slug,
        )
    return (row["petition_id"], row["slug"]) if row else None


# --- share links and referrals ---------------------------------------------


@dataclass(frozen=True)
class ShareLink:
    share_code: str
    signature_id: UUID
    petition_id: UUID
    slug: str


async def find_share_link(conn: asyncpg.Connection, share_code: str) -> ShareLink | None:
    row = await conn.fetchrow(
        "SELECT l.share_code, l.signature_id, l.petition_id, p.slug "
        "FROM sharing.share_links l JOIN sharing.petitions p USING (petition_id) "
        "WHERE l.share_code = $1",
        share_code,
    )
    if row is None:
        return None
    return ShareLink(row["share_code"], row["signature_id"], row["petition_id"], row["slug"])


async def latest_click_channel(
    conn: asyncpg.Connection, share_code: str, before: datetime, window: timedelta
) -> str | None:
    channel = await conn.fetchval(
        "SELECT channel FROM sharing.clicks WHERE share_code = $1 "
        "AND clicked_at <= $2 AND clicked_at > $2 - $3::interval "
        "ORDER BY clicked_at DESC LIMIT 1",
        share_code,
        before,
        window,
    )
    return str(channel) if channel is not None else None


async def add_referral(
    conn: asyncpg.Connection,
    *,
    signature_id: UUID,
    referrer: ShareLink,
    channel: str,
    status: Status,
    created_at: datetime,
) -> bool:
    """False when this signature already has a referral (a redelivery or a replay)."""
    inserted = await conn.fetchval(
        "INSERT INTO sharing.referrals (signature_id, share_code, referrer_signature_id, "
        "petition_id, channel, status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) "
        "ON CONFLICT (signature_id) DO NOTHING RETURNING true",
        signature_id,
        referrer.share_code,
        referrer.signature_id,
        referrer.petition_id,
        channel,
        status,
        created_at,
    )
    return inserted is True


@dataclass(frozen=True)
class Referral:
    share_code: str
    referrer_signature_id: UUID
    petition_id: UUID


async def confirm_signature(conn: asyncpg.Connection, signature_id: UUID) -> Referral | None:
    """Count a confirmed signature; returns its referral if that now counts too."""
    await conn.execute(
        "UPDATE sharing.share_links SET status = 'counted' "
        "WHERE signature_id = $1 AND status = 'pending'",
        signature_id,
    )
    row = await conn.fetchrow(
        "UPDATE sharing.referrals SET status = 'counted' "
        "WHERE signature_id = $1 AND status = 'pending' "
        "RETURNING share_code, referrer_signature_id, petition_id",
        signature_id,
    )
    if row is None:
        return None
    return Referral(row["share_code"], row["referrer_signature_id"], row["petition_id"])


async def forget_name(conn: asyncpg.Connection, signature_id: UUID) -> None:
    await conn.execute(
        "UPDATE sharing.share_links SET first_name = NULL WHERE signature_id = $1", signature_id
    )


async def void_signature(conn: asyncpg.Connection, signature_id: UUID) -> int:
    """A withdrawn or invalidated signature: its referral stops counting, its name goes."""
    await conn.execute(
        "UPDATE sharing.share_links SET status = 'void', first_name = NULL WHERE signature_id = $1",
        signature_id,
    )
    status = await conn.execute(
        "UPDATE sharing.referrals SET status = 'void' WHERE signature_id = $1 AND status <> 'void'",
        signature_id,
    )
    return _rowcount(status)


# --- stats -----------------------------------------------------------------


@dataclass(frozen=True)
class PetitionTallies:
    clicks_by_channel: dict[str, int]
    signatures_by_channel: dict[str, int]
    signers: int
    by_source: dict[str, int]
    referrers: list[ReferrerTally]


async def petition_tallies(
    pool: asyncpg.Pool, petition_id: UUID, referrer_limit: int
) -> PetitionTallies:
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        clicks = await conn.fetch(
            "SELECT channel, count(*) AS n FROM sharing.clicks "
            "WHERE petition_id = $1 GROUP BY channel",
            petition_id,
        )
        signatures = await conn.fetch(
            "SELECT channel, count(*) AS n FROM sharing.referrals "
            "WHERE petition_id = $1 AND status = 'counted' GROUP BY channel",
            petition_id,
        )
        signers = await conn.fetchval(
            "SELECT count(*) FROM sharing.share_links WHERE petition_id = $1 "
            "AND status = 'counted'",
            petition_id,
        )
        sources = await conn.fetch(
            "SELECT source, count(*) AS n FROM sharing.share_links "
            "WHERE petition_id = $1 AND status = 'counted' AND source IS NOT NULL "
            # Source codes come from URLs: anyone can invent them, so keep the chart bounded.
            "GROUP BY source ORDER BY n DESC, source LIMIT 50",
            petition_id,
        )
        # Only confirmed signers rank; their names are for the organisers' view only.
        referrers = await conn.fetch(
            "SELECT l.share_code, l.first_name, coalesce(c.n, 0) AS clicks, "
            "  coalesce(r.n, 0) AS signatures "
            "FROM sharing.share_links l "
            "LEFT JOIN (SELECT share_code, count(*) AS n FROM sharing.clicks "
            "           WHERE petition_id = $1 GROUP BY share_code) c USING (share_code) "
            "LEFT JOIN (SELECT share_code, count(*) AS n FROM sharing.referrals "
            "           WHERE petition_id = $1 AND status = 'counted' GROUP BY share_code) r "
            "     USING (share_code) "
            "WHERE l.petition_id = $1 AND l.status = 'counted' "
            "  AND (c.n > 0 OR r.n > 0) "
            "ORDER BY signatures DESC, clicks DESC, l.created_at LIMIT $2",
            petition_id,
            referrer_limit,
        )
    return PetitionTallies(
        clicks_by_channel={r["channel"]: int(r["n"]) for r in clicks},
        signatures_by_channel={r["channel"]: int(r["n"]) for r in signatures},
        signers=int(signers),
        by_source={r["source"]: int(r["n"]) for r in sources},
        referrers=[
            ReferrerTally(r["share_code"], r["first_name"], int(r["clicks"]), int(r["signatures"]))
            for r in referrers
        ],
    )


@dataclass(frozen=True)
class LeaderboardRow:
    slug: str
    title: str
    signatures_via_referrals: int
    clicks: int
    signers: int


async def leaderboard(pool: asyncpg.Pool, limit: int) -> list[LeaderboardRow]:
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT p.slug, p.title, r.n AS referred, "
            "  (SELECT count(*) FROM sharing.clicks c WHERE c.petition_id = p.petition_id) "
            "    AS clicks, "
            "  (SELECT count(*) FROM sharing.share_links l "
            "   WHERE l.petition_id = p.petition_id AND l.status = 'counted') AS signers "
            "FROM (SELECT petition_id, count(*) AS n FROM sharing.referrals "
            "      WHERE status = 'counted' GROUP BY petition_id "
            "      ORDER BY n DESC LIMIT $1) r "
            "JOIN sharing.petitions p USING (petition_id) "
            "ORDER BY r.n DESC, p.slug",
            limit,
        )
    return [
        LeaderboardRow(
            r["slug"], r["title"], int(r["referred"]), int(r["clicks"]), int(r["signers"])
        )
        for r in rows
    ]
