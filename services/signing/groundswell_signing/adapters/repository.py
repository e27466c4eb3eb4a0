"""SQL for petitions and signatures. Functions take a connection so callers own the transaction."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import asyncpg

from groundswell_signing.domain.petitions import SLUG, Petition

SCHEMA = "signing"

_PETITION_COLUMNS = (
    "id, slug, title, target, body, goal, requires_confirmation, organiser_email, closes_at, "
    "status, version, created_at, milestones, auto_raise_goal, cors_origins"
)


def _petition(row: asyncpg.Record) -> Petition:
    fields: dict[str, Any] = dict(row)
    return Petition(**fields)


async def get_petition(
    conn: asyncpg.Connection, slug: str, *, for_update: bool = False
) -> Petition | None:
    if not SLUG.match(slug):
        return None  # no such petition can exist; and PostgreSQL rejects some bytes (NUL)
    lock = " FOR UPDATE" if for_update else ""
    row = await conn.fetchrow(
        f"SELECT {_PETITION_COLUMNS} FROM signing.petitions WHERE slug = $1{lock}", slug
    )
    return _petition(row) if row else None


async def list_petitions(conn: asyncpg.Connection) -> list[Petition]:
    rows = await conn.fetch(
        f"SELECT {_PETITION_COLUMNS} FROM signing.petitions ORDER BY created_at"
    )
    return [_petition(r) for r in rows]


async def insert_petition(conn: asyncpg.Connection, fields: dict[str, Any]) -> Petition | None:
    """None when the slug is taken."""
    columns = ", ".join(fields)
    placeholders = ", ".join(f"${i}" for i in range(1, len(fields) + 1))
    row = await conn.fetchrow(
        f"INSERT INTO signing.petitions ({columns}) VALUES ({placeholders}) "
        f"ON CONFLICT (slug) DO NOTHING RETURNING {_PETITION_COLUMNS}",
        *fields.values(),
    )
    return _petition(row) if row else None


async def update_petition(
    conn: asyncpg.Connection, petition_id: uuid.UUID, changes: dict[str, Any]
) -> Petition:
    assignments = ", ".join(f"{column} = ${i}" for i, column in enumerate(changes, start=2))
    row = await conn.fetchrow(
        f"UPDATE signing.petitions SET {assignments}, version = version + 1, updated_at = now() "
        f"WHERE id = $1 RETURNING {_PETITION_COLUMNS}",
        petition_id,
        *changes.values(),
    )
    assert row is not None
    return _petition(row)


async def recent_signatures_from_ip(
    conn: asyncpg.Connection, ip: str, since: datetime, petition_id: uuid.UUID | None
) -> tuple[int, datetime | None]:
    """Signatures from an IP since a moment (on one petition, or all), and the oldest."""
    row = await conn.fetchrow(
        "SELECT count(*) AS n, min(created_at) AS oldest FROM signing.signatures "
        "WHERE ip = $1::inet AND created_at > $2 AND ($3::uuid IS NULL OR petition_id = $3)",
        ip,
        since,
        petition_id,
    )
    assert row is not None
    return int(row["n"]), row["oldest"]


async def insert_signature(conn: asyncpg.Connection, fields: dict[str, Any]) -> bool:
    """False when this person has already signed (the unique constraint decided)."""
    columns = ", ".join(fields)
    placeholders = ", ".join(f"${i}" for i in range(1, len(fields) + 1))
    inserted = await conn.fetchval(
        f"INSERT INTO signing.signatures ({columns}) VALUES ({placeholders}) "
        "ON CONFLICT ON CONSTRAINT one_signature_per_person DO NOTHING RETURNING true",
        *fields.values(),
    )
    return bool(inserted)


async def signature_by_person(
    conn: asyncpg.Connection, petition_id: uuid.UUID, email_canonical: str
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT id, share_code, initial_status, confirmed_at FROM signing.signatures "
        "WHERE petition_id = $1 AND email_canonical = $2",
        petition_id,
        email_canonical,
    )


async def confirm_by_token(
    conn: asyncpg.Connection, token_hash: bytes, now: datetime
) -> asyncpg.Record | None:
    # Clearing the hash makes the token single-use.
    return await conn.fetchrow(
        "UPDATE signing.signatures s SET confirmed_at = $2, confirmation_token_hash = NULL "
        "FROM signing.petitions p "
        "WHERE s.confirmation_token_hash = $1 AND s.confirmation_expires_at > $2 "
        "AND s.withdrawn_at IS NULL AND s.invalidated_at IS NULL AND p.id = s.petition_id "
        "RETURNING s.id, s.petition_id, s.share_code, p.slug, p.title",
        token_hash,
        now,
    )


async def pending_by_token(conn: asyncpg.Connection, token_hash: bytes, now: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM signing.signatures WHERE confirmation_token_hash = $1 "
            "AND confirmation_expires_at > $2 AND withdrawn_at IS NULL AND invalidated_at IS NULL",
            token_hash,
            now,
        )
    )


async def withdraw_by_token(
    conn: asyncpg.Connection, token_hash: bytes, now: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE signing.signatures s SET withdrawn_at = $2, confirmation_token_hash = NULL "
        "FROM signing.petitions p "
        "WHERE s.withdraw_token_hash = $1 AND s.withdrawn_at IS NULL AND p.id = s.petition_id "
        "RETURNING s.id, s.petition_id, p.slug, p.title",
        token_hash,
        now,
    )


async def withdrawable_by_token(
    conn: asyncpg.Connection, token_hash: bytes
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT p.slug, p.title FROM signing.signatures s JOIN signing.petitions p "
        "ON p.id = s.petition_id WHERE s.withdraw_token_hash = $1 AND s.withdrawn_at IS NULL",
        token_hash,
    )


async def invalidate(
    conn: asyncpg.Connection,
    petition_id: uuid.UUID,
    reason: str,
    *,
    ip_network: str | None,
    email_domain: str | None,
    postcode: str | None,
    since: datetime | None,
    until: datetime | None,
    now: datetime,
) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "UPDATE signing.signatures SET invalidated_at = $2, invalidation_reason = $3 "
        "WHERE petition_id = $1 AND invalidated_at IS NULL AND withdrawn_at IS NULL "
        "AND ($4::cidr IS NULL OR ip <<= $4::cidr) "
        "AND ($5::text IS NULL OR email_domain = lower($5)) "
        "AND ($6::text IS NULL OR replace(postcode, ' ', '') = replace(upper($6), ' ', '')) "
        "AND ($7::timestamptz IS NULL OR created_at >= $7) "
        "AND ($8::timestamptz IS NULL OR created_at < $8) "
        "RETURNING id",
        petition_id,
        now,
        reason,
        ip_network,
        email_domain,
        postcode,
        since,
        until,
    )
    return [r["id"] for r in rows]


async def export_rows(conn: asyncpg.Connection, petition_id: uuid.UUID) -> list[asyncpg.Record]:
    """Counted signatures only: what the target should receive."""
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT name, postcode, country, coalesce(confirmed_at, created_at) AS signed_at "
        "FROM signing.signatures WHERE petition_id = $1 AND withdrawn_at IS NULL "
        "AND invalidated_at IS NULL AND initial_status <> 'fraudulent' "
        "AND (initial_status = 'signed' OR confirmed_at IS NOT NULL) ORDER BY created_at",
        petition_id,
    )
    return rows


async def tally(conn: asyncpg.Connection, petition_id: uuid.UUID) -> dict[str, int]:
    """What the counter should show for a petition, computed from the source of truth."""
    row = await conn.fetchrow(
        "SELECT "
        "count(*) FILTER (WHERE live AND (initial_status = 'signed' OR confirmed_at IS NOT NULL)) "
        "  AS signatures, "
        "count(*) FILTER (WHERE live AND initial_status = 'pending' AND confirmed_at IS NULL) "
        "  AS pending "
        "FROM (SELECT *, withdrawn_at IS NULL AND invalidated_at IS NULL "
        "      AND initial_status <> 'fraudulent' AS live "
        "      FROM signing.signatures WHERE petition_id = $1) s",
        petition_id,
    )
    assert row is not None
    return {"signatures": int(row["signatures"]), "pending": int(row["pending"])}


async def history_rows(conn: asyncpg.Connection, petition_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT s.*, p.slug, p.title FROM signing.signatures s JOIN signing.petitions p "
        "ON p.id = s.petition_id WHERE s.petition_id = $1 ORDER BY s.created_at, s.id",
        petition_id,
    )
    return rows
