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


_OPEN_AND_COUNT = """
WITH open AS (
    SELECT id FROM signing.petitions
    WHERE id = ANY($1::uuid[]) AND status = 'open' AND (closes_at IS NULL OR closes_at > $2)
), added AS (
    SELECT h.key, h.window_start, max(h.window_end) AS window_end, count(*)::int AS hits
    FROM unnest($3::text[], $4::bigint[], $5::bigint[], $6::uuid[])
        AS h(key, window_start, window_end, petition_id)
    WHERE h.petition_id IN (SELECT id FROM open)
    GROUP BY h.key, h.window_start
    ORDER BY h.key, h.window_start
), counted AS (
    INSERT INTO signing.rate_counters AS c (key, window_start, window_end, hits)
    SELECT key, window_start, window_end, hits FROM added
    ORDER BY key, window_start
    ON CONFLICT (key, window_start) DO UPDATE SET hits = c.hits + EXCLUDED.hits
    RETURNING key, window_start, hits
)
SELECT NULL::uuid AS open_id, key, window_start, hits FROM counted
UNION ALL
SELECT id, NULL, NULL, NULL FROM open
"""


async def open_and_count(
    conn: asyncpg.Connection,
    petition_ids: list[uuid.UUID],
    now: datetime,
    hits: list[tuple[uuid.UUID, str, int, int]],
) -> tuple[set[uuid.UUID], dict[tuple[str, int], int]]:
    """For group commit, in one round trip: which petitions take signatures at `now` as
    committed (the cache may lag), and each rate counter's total after adding the `hits`
    (petition, key, window start, window end) of those petitions' attempts only, one
    atomic upsert per counter (domain/rate_limits.py). Counter rows are locked in key
    order, so concurrent batches cannot deadlock on them."""
    rows = await conn.fetch(
        _OPEN_AND_COUNT,
        petition_ids,
        now,
        [key for _, key, _, _ in hits],
        [start for _, _, start, _ in hits],
        [end for _, _, _, end in hits],
        [petition for petition, _, _, _ in hits],
    )
    open_ids = {r["open_id"] for r in rows if r["open_id"] is not None}
    totals = {(r["key"], r["window_start"]): r["hits"] for r in rows if r["open_id"] is None}
    return open_ids, totals


async def prune_rate_counters(conn: asyncpg.Connection, now: int) -> None:
    await conn.execute("DELETE FROM signing.rate_counters WHERE window_end < $1", now)


SIGNATURE_COLUMNS: dict[str, str] = {
    "id": "uuid",
    "petition_id": "uuid",
    "name": "text",
    "email": "text",
    "email_canonical": "text",
    "email_domain": "text",
    "postcode": "text",
    "postcode_area": "text",
    "country": "text",
    "contact_consent": "boolean",
    "consent_wording_version": "text",
    "consent_at": "timestamptz",
    "source": "text",
    "ref": "text",
    "ref_channel": "text",
    "share_code": "text",
    "initial_status": "text",
    "confirmation_token_hash": "bytea",
    "confirmation_expires_at": "timestamptz",
    "withdraw_token_hash": "bytea",
    "ip": "inet",
    "created_at": "timestamptz",
    "data_key": "bytea",
    "leaderboard_consent": "boolean",
}
_INSERT_SIGNATURES = (
    f"INSERT INTO signing.signatures ({', '.join(SIGNATURE_COLUMNS)}) "
    "SELECT * FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, kind in enumerate(SIGNATURE_COLUMNS.values(), 1))
    + ") ON CONFLICT ON CONSTRAINT one_signature_per_person DO NOTHING RETURNING id"
)


async def insert_signatures(conn: asyncpg.Connection, rows: list[dict[str, Any]]) -> set[uuid.UUID]:
    """Insert many signatures in one statement; the ids of those inserted. A row left out
    is a person who has already signed (the unique constraint decided, also against rows
    earlier in the same statement). Rows go in (petition, canonical email) order, so
    concurrent batches take the unique index's locks in one order and cannot deadlock."""
    if not rows:
        return set()
    ordered = sorted(rows, key=lambda r: (r["petition_id"], r["email_canonical"]))
    columns = [[row[column] for row in ordered] for column in SIGNATURE_COLUMNS]
    inserted = await conn.fetch(_INSERT_SIGNATURES, *columns)
    return {r["id"] for r in inserted}


async def signatures_by_people(
    conn: asyncpg.Connection, people: list[tuple[uuid.UUID, str]]
) -> dict[tuple[uuid.UUID, str], asyncpg.Record]:
    """The stored signature of each (petition, canonical email)."""
    if not people:
        return {}
    rows = await conn.fetch(
        "SELECT s.id, s.petition_id, s.email_canonical, s.share_code, s.data_key "
        "FROM signing.signatures s "
        "JOIN unnest($1::uuid[], $2::text[]) AS p(petition_id, email_canonical) "
        "USING (petition_id, email_canonical)",
        [p for p, _ in people],
        [e for _, e in people],
    )
    return {(r["petition_id"], r["email_canonical"]): r for r in rows}


async def confirm_by_token(
    conn: asyncpg.Connection, token_hash: bytes, now: datetime
) -> asyncpg.Record | None:
    # Clearing the hash makes the token single-use. A closed petition takes no more
    # confirmations: its count was final when it closed.
    return await conn.fetchrow(
        "UPDATE signing.signatures s SET confirmed_at = $2, confirmation_token_hash = NULL, "
        "replay_token_hash = NULL "
        "FROM signing.petitions p "
        "WHERE (s.confirmation_token_hash = $1 OR s.replay_token_hash = $1) "
        "AND s.confirmation_expires_at > $2 "
        "AND s.withdrawn_at IS NULL AND s.invalidated_at IS NULL AND p.id = s.petition_id "
        "AND p.status = 'open' AND (p.closes_at IS NULL OR p.closes_at > $2) "
        "RETURNING s.id, s.petition_id, s.share_code, p.slug, p.title",
        token_hash,
        now,
    )


async def pending_by_token(conn: asyncpg.Connection, token_hash: bytes, now: datetime) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT true FROM signing.signatures "
            "WHERE (confirmation_token_hash = $1 OR replay_token_hash = $1) "
            "AND confirmation_expires_at > $2 AND withdrawn_at IS NULL AND invalidated_at IS NULL",
            token_hash,
            now,
        )
    )


async def withdraw_by_token(
    conn: asyncpg.Connection, token_hash: bytes, now: datetime
) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "UPDATE signing.signatures s SET withdrawn_at = $2, confirmation_token_hash = NULL, "
        "replay_token_hash = NULL "
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


async def set_replay_tokens(
    conn: asyncpg.Connection, token_hashes: list[tuple[uuid.UUID, bytes]]
) -> None:
    await conn.executemany(
        "UPDATE signing.signatures SET replay_token_hash = $2 WHERE id = $1", token_hashes
    )


async def history_rows(conn: asyncpg.Connection, petition_id: uuid.UUID) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT s.*, p.slug, p.title FROM signing.signatures s JOIN signing.petitions p "
        "ON p.id = s.petition_id WHERE s.petition_id = $1 ORDER BY s.created_at, s.id",
        petition_id,
    )
    return rows
