"""Supporters and their mailing preferences in PostgreSQL.

Supporters are learned from SignatureCreated (one row per signature, so shredding a
signature's key deletes exactly its row: `forget_signature`, called by keys.shred).
A preference change suppresses the copies still queued for that mailbox in its own
transaction, so it holds before the next send.

Apart from the mailings (mailings.py) because other writers keep it: the signature
events and the preferences page, not the organisers.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import asyncpg

from groundswell_mailer.domain.intake import Supporter


def petitions_upsert(first: int) -> str:
    """The INSERT of petitions from three arrays, `$first` onwards (`petition_arguments`).

    Only a new petition or a changed title is written: an upsert of an unchanged row
    still locks it, and every batch names the same few petitions."""
    ids, slugs, titles = (f"${first + i}" for i in range(3))
    return (
        "INSERT INTO mailer.petitions (petition_id, slug, title) "
        f"SELECT t.* FROM unnest({ids}::uuid[], {slugs}::text[], {titles}::text[]) "
        "AS t(petition_id, slug, title) "
        "WHERE NOT EXISTS (SELECT 1 FROM mailer.petitions p WHERE p.petition_id = t.petition_id "
        "  AND p.slug = t.slug AND p.title = t.title) "
        "ON CONFLICT (petition_id) DO UPDATE SET slug = EXCLUDED.slug, title = EXCLUDED.title "
        "WHERE (mailer.petitions.slug, mailer.petitions.title) "
        "IS DISTINCT FROM (EXCLUDED.slug, EXCLUDED.title)"
    )


def petition_arguments(petitions: Mapping[UUID, tuple[str, str]]) -> list[list[Any]]:
    """petition_id -> (slug, title), as the arrays of `petitions_upsert`, in id order
    (rows that concurrent batches share are written in one order: no deadlock)."""
    ordered = sorted(petitions.items())
    return [
        [petition_id for petition_id, _ in ordered],
        [names[0] for _, names in ordered],
        [names[1] for _, names in ordered],
    ]


def supporters_insert(first: int) -> str:
    """The INSERT of supporters from eight arrays, `$first` onwards (`supporter_arguments`).

    A new signature of a mailbox takes on the preferences that mailbox already set; a
    signature recorded again only gains its confirmation."""
    arrays = ", ".join(
        f"${first + i}::{kind}[]"
        for i, kind in enumerate(("uuid", "uuid", "text", "text", "text", "text", "bool", "bool"))
    )
    return (
        "INSERT INTO mailer.supporters (signature_id, petition_id, address_key, recipient, "
        "first_name, postcode_area, contact_consent, confirmed, wants_updates, wants_news, "
        "unsubscribed_at) "
        "SELECT t.*, p.wants_updates, p.wants_news, p.unsubscribed_at "
        f"FROM unnest({arrays}) AS t(signature_id, petition_id, address_key, "
        "  recipient, first_name, postcode_area, contact_consent, confirmed) "
        "CROSS JOIN LATERAL (SELECT "
        "  (array_agg(s.wants_updates ORDER BY s.created_at DESC))[1] AS wants_updates, "
        "  (array_agg(s.wants_news ORDER BY s.created_at DESC))[1] AS wants_news, "
        "  max(s.unsubscribed_at) AS unsubscribed_at "
        "  FROM mailer.supporters s WHERE s.address_key = t.address_key) AS p "
        "ON CONFLICT (signature_id) DO UPDATE SET "
        "confirmed = mailer.supporters.confirmed OR EXCLUDED.confirmed"
    )


def supporter_arguments(supporters: Sequence[Supporter]) -> list[list[Any]]:
    """The arrays of `supporters_insert`."""
    return [
        [s.signature_id for s in supporters],
        [s.petition_id for s in supporters],
        [s.address_key for s in supporters],
        [s.recipient for s in supporters],
        [s.first_name for s in supporters],
        [s.postcode_area for s in supporters],
        [s.contact_consent for s in supporters],
        [s.confirmed for s in supporters],
    ]


_RECORD_SUPPORTERS = f"WITH petitions AS ({petitions_upsert(1)}) {supporters_insert(4)}"


async def record_supporter(
    conn: asyncpg.Connection,
    petitions: Mapping[UUID, tuple[str, str]],
    supporters: Sequence[Supporter],
) -> None:
    """Remember signers as possible mailing recipients, with their petitions
    (petition_id -> (slug, title)), in one statement. The consumer writes the same rows
    with the same SQL inside its batch statement (adapters/intake.py)."""
    if not (petitions or supporters):
        return
    await conn.execute(
        _RECORD_SUPPORTERS, *petition_arguments(petitions), *supporter_arguments(supporters)
    )


async def note_state(conn: asyncpg.Connection, signature_id: UUID, *, withdrawn: bool) -> None:
    column = "withdrawn_at" if withdrawn else "confirmed_at"
    await conn.execute(
        f"INSERT INTO mailer.supporter_states (signature_id, {column}) VALUES ($1, now()) "
        f"ON CONFLICT (signature_id) DO UPDATE SET {column} = "
        f"coalesce(mailer.supporter_states.{column}, now())",
        signature_id,
    )


async def forget_signature(conn: asyncpg.Connection, signature_id: UUID) -> None:
    """Erasure or retention: the supporter row and state of this signature go. An
    unsubscribe of the mailbox is copied onto its other signatures first, since the
    `recipients` row may go with this signature's emails."""
    await conn.execute(
        "UPDATE mailer.supporters s SET unsubscribed_at = r.unsubscribed_at "
        "FROM mailer.supporters gone, mailer.recipients r "
        "WHERE gone.signature_id = $1 AND s.address_key = gone.address_key "
        "AND s.signature_id <> $1 AND r.address_key = gone.address_key "
        "AND r.unsubscribed_at IS NOT NULL AND s.unsubscribed_at IS NULL",
        signature_id,
    )
    await conn.execute("DELETE FROM mailer.supporters WHERE signature_id = $1", signature_id)
    await conn.execute("DELETE FROM mailer.supporter_states WHERE signature_id = $1", signature_id)


async def petition_ids(conn: asyncpg.Connection, slugs: list[str]) -> dict[str, UUID]:
    rows = await conn.fetch(
        "SELECT slug, petition_id FROM mailer.petitions WHERE slug = ANY($1::text[])", slugs
    )
    return {row["slug"]: row["petition_id"] for row in rows}


@dataclass(frozen=True)
class Preferences:
    address_key: str
    updates: bool
    news: bool
    unsubscribed: bool
    known_supporter: bool  # the mailbox has a signature we can write to about mailings
    signature_id: UUID
    petition_id: UUID


async def preferences(conn: asyncpg.Connection, token: str) -> Preferences | None:
    row = await conn.fetchrow(
        "SELECT r.address_key, r.last_signature_id, r.last_petition_id, "
        "r.unsubscribed_at IS NOT NULL OR coalesce(bool_or(s.unsubscribed_at IS NOT NULL), "
        "false) AS unsubscribed, "
        "coalesce(bool_and(s.wants_updates), bool_or(s.contact_consent), false) AS updates, "
        "coalesce(bool_and(s.wants_news), bool_or(s.contact_consent), false) AS news, "
        "count(s.signature_id) > 0 AS known "
        "FROM mailer.recipients r LEFT JOIN mailer.supporters s USING (address_key) "
        "WHERE r.unsubscribe_token = $1 GROUP BY r.address_key",
        token,
    )
    if row is None:
        return None
    unsubscribed = bool(row["unsubscribed"])
    return Preferences(
        address_key=row["address_key"],
        updates=bool(row["updates"]) and not unsubscribed,
        news=bool(row["news"]) and not unsubscribed,
        unsubscribed=unsubscribed,
        known_supporter=bool(row["known"]),
        signature_id=row["last_signature_id"],
        petition_id=row["last_petition_id"],
    )


async def set_preferences(
    conn: asyncpg.Connection, address_key: str, *, updates: bool, news: bool, unsubscribed: bool
) -> int:
    """Apply a mailbox's choice (in the caller's transaction, with its event) and
    suppress the copies of mailings it no longer wants that are still queued. Returns
    how many were suppressed."""
    await conn.execute(
        "UPDATE mailer.supporters SET wants_updates = $2, wants_news = $3, "
        "unsubscribed_at = CASE WHEN $4 THEN coalesce(unsubscribed_at, now()) END "
        "WHERE address_key = $1",
        address_key,
        updates,
        news,
        unsubscribed,
    )
    await conn.execute(
        "UPDATE mailer.recipients SET unsubscribed_at = "
        "CASE WHEN $2 THEN coalesce(unsubscribed_at, now()) END WHERE address_key = $1",
        address_key,
        unsubscribed,
    )
    refused = [c for c, wanted in (("updates", updates), ("news", news)) if not wanted]
    status = await conn.execute(
        "UPDATE mailer.emails e SET status = 'suppressed', finished_at = now(), "
        "content = '{}'::jsonb, recipient = NULL FROM mailer.mailings m "
        "WHERE e.kind = 'mailing' AND e.sequence = m.id AND e.address_key = $1 "
        "AND e.status = 'queued' AND ($2 OR m.category = ANY($3::text[]))",
        address_key,
        unsubscribed,
        refused,
    )
    return int(status.split()[-1])
