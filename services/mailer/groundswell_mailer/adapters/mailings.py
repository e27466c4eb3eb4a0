"""Supporters, mailings, the pacer, preferences and milestone notes in PostgreSQL.

Supporters are learned from SignatureCreated (one row per signature, so shredding a
signature's key deletes exactly its row: `forget_signature`, called by keys.shred).
A mailing's copies are rows of `mailer.emails` (kind "mailing", sequence = the
mailing's id), sent by the dispatcher like every other email, with its claims, leases
and recorded outcomes; a unique index keeps one copy per mailbox. They are inserted
waiting (`next_attempt_at = 'infinity'`) and the pacer releases them at the configured
rate, so a crash pauses the release and a restart goes on from where it stopped.

Who may get a mailing (the rule in domain/mailings.py) is one SQL expression here,
used when the copies are made; a preference change suppresses the copies still
queued for that mailbox in its own transaction, so it holds before the next send.
"""

from __future__ import annotations

import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import asyncpg

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.domain.delivery import EmailStatus
from groundswell_mailer.domain.messages import EmailContent

MILESTONE_NAMESPACE = uuid.UUID("5d0b6f55-0a55-4c2e-9d0f-2d6c7f4b1e11")


def milestone_key(petition_id: UUID) -> UUID:
    """The `signature_id` of a petition's milestone notes (names no signer)."""
    return uuid.uuid5(MILESTONE_NAMESPACE, str(petition_id))


# --- supporters ------------------------------------------------------------------


async def record_supporter(
    conn: asyncpg.Connection,
    *,
    signature_id: UUID,
    petition_id: UUID,
    petition_slug: str,
    petition_title: str,
    address_key: str,
    recipient: str,
    first_name: str,
    postcode_area: str | None,
    contact_consent: bool,
    confirmed: bool,
) -> None:
    """Remember a signer as a possible mailing recipient; a new signature of a mailbox
    takes on the preferences that mailbox already set."""
    await conn.execute(
        "INSERT INTO mailer.petitions (petition_id, slug, title) VALUES ($1, $2, $3) "
        "ON CONFLICT (petition_id) DO UPDATE SET slug = EXCLUDED.slug, title = EXCLUDED.title "
        "WHERE (mailer.petitions.slug, mailer.petitions.title) "
        "IS DISTINCT FROM (EXCLUDED.slug, EXCLUDED.title)",
        petition_id,
        petition_slug,
        petition_title,
    )
    await conn.execute(
        "INSERT INTO mailer.supporters (signature_id, petition_id, address_key, recipient, "
        "first_name, postcode_area, contact_consent, confirmed, wants_updates, wants_news, "
        "unsubscribed_at) "
        "SELECT $1, $2, $3, $4, $5, $6, $7, $8, "
        "(array_agg(wants_updates ORDER BY created_at DESC))[1], "
        "(array_agg(wants_news ORDER BY created_at DESC))[1], max(unsubscribed_at) "
        "FROM mailer.supporters WHERE address_key = $3 "
        "ON CONFLICT (signature_id) DO UPDATE SET "
        "confirmed = mailer.supporters.confirmed OR EXCLUDED.confirmed",
        signature_id,
        petition_id,
        address_key,
        recipient,
        first_name,
        postcode_area.upper() if postcode_area else None,
        contact_consent,
        confirmed,
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


# --- who gets a mailing ------------------------------------------------------------

# One row per mailbox matching the audience's filters, with `allowed`: the mailing rule.
# $1 category, $2 petitions signed (any of), $3 petitions not signed, $4 areas.
_PEOPLE = """
WITH rows AS (
  SELECT s.*, (s.confirmed OR st.confirmed_at IS NOT NULL)
              AND st.withdrawn_at IS NULL AS live
  FROM mailer.supporters s LEFT JOIN mailer.supporter_states st USING (signature_id)
), people AS (
  SELECT address_key,
    bool_or(live AND contact_consent) AS consent,
    bool_and(CASE WHEN $1 = 'news' THEN wants_news ELSE wants_updates END) AS wants,
    bool_or(unsubscribed_at IS NOT NULL) AS unsubscribed,
    bool_or(live AND petition_id = ANY($2::uuid[])) AS signed_wanted,
    bool_or(petition_id = ANY($3::uuid[])) AS signed_excluded,
    bool_or(live AND postcode_area = ANY($4::text[])) AS in_area,
    bool_or(live) AS any_live,
    (array_agg(signature_id ORDER BY live DESC, created_at DESC))[1] AS signature_id,
    (array_agg(petition_id ORDER BY live DESC, created_at DESC))[1] AS petition_id,
    (array_agg(recipient ORDER BY live DESC, created_at DESC))[1] AS recipient,
    (array_agg(first_name ORDER BY live DESC, created_at DESC))[1] AS first_name
  FROM rows GROUP BY address_key
)
SELECT p.*, r.address_key IS NOT NULL AS has_recipient,
  (r.unsubscribed_at IS NULL AND NOT p.unsubscribed AND coalesce(p.wants, p.consent))
    AS allowed
FROM people p LEFT JOIN mailer.recipients r USING (address_key)
WHERE p.any_live AND NOT p.signed_excluded
  AND (cardinality($2::uuid[]) = 0 OR p.signed_wanted)
  AND (cardinality($4::text[]) = 0 OR p.in_area)
"""


@dataclass(frozen=True)
class Audience:
    signed: list[UUID]
    not_signed: list[UUID]
    areas: list[str]

    def args(self, category: str) -> tuple[Any, ...]:
        return (category, self.signed, self.not_signed, [a.upper() for a in self.areas])


async def audience_size(
    conn: asyncpg.Connection, category: str, audience: Audience
) -> tuple[int, int]:
    """(would get it, match the filters but said no or never said yes)."""
    row = await conn.fetchrow(
        f"SELECT count(*) FILTER (WHERE allowed) AS yes, count(*) FILTER (WHERE NOT allowed) "
        f"AS no FROM ({_PEOPLE}) AS a",
        *audience.args(category),
    )
    assert row is not None
    return int(row["yes"]), int(row["no"])


async def create_mailing(conn: asyncpg.Connection, fields: dict[str, Any]) -> int:
    mailing_id = int(await conn.fetchval("SELECT nextval('mailer.mailings_id_seq')"))
    await conn.execute(
        "INSERT INTO mailer.mailings (id, subject, body_markdown, category, cta_petition_id, "
        "cta_label, first_name_fallback, source, audience) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9::jsonb)",
        mailing_id,
        fields["subject"],
        fields["body_markdown"],
        fields["category"],
        fields["cta_petition_id"],
        fields["cta_label"],
        fields["first_name_fallback"],
        fields["source"] or f"mailing-{mailing_id}",
        json.dumps(fields["audience"]),
    )
    return mailing_id


_MAILING = (
    "SELECT m.*, p.slug AS petition_slug, p.title AS petition_title "
    "FROM mailer.mailings m JOIN mailer.petitions p ON p.petition_id = m.cta_petition_id "
)


async def mailing(conn: asyncpg.Connection, mailing_id: int) -> asyncpg.Record | None:
    return await conn.fetchrow(_MAILING + "WHERE m.id = $1", mailing_id)


async def mailings(conn: asyncpg.Connection) -> list[asyncpg.Record]:
    return list(await conn.fetch(_MAILING + "ORDER BY m.id DESC LIMIT 200"))


def audience_of(row: asyncpg.Record) -> Audience:
    data = json.loads(row["audience"])
    return Audience(
        signed=[UUID(i) for i in data.get("signed_ids", [])],
        not_signed=[UUID(i) for i in data.get("not_signed_ids", [])],
        areas=list(data.get("areas", [])),
    )


async def start_sending(
    conn: asyncpg.Connection, mailing_id: int, message_domain: str
) -> tuple[int, int] | None:
    """Make the mailing's copies (waiting for the pacer); None unless it was a draft.

    In one transaction: the status change guards against a second send, and the unique
    index against two copies to one mailbox.
    """
    row = await conn.fetchrow(
        "UPDATE mailer.mailings SET status = 'sending', started_at = now() "
        "WHERE id = $1 AND status = 'draft' RETURNING id",
        mailing_id,
    )
    if row is None:
        return None
    found = await mailing(conn, mailing_id)
    assert found is not None
    args = audience_of(found).args(found["category"])
    # A mailbox whose recipients row went with another signature's emails gets a new one.
    missing = await conn.fetch(
        f"SELECT address_key, signature_id, petition_id FROM ({_PEOPLE}) AS a "
        "WHERE allowed AND NOT has_recipient",
        *args,
    )
    if missing:
        await conn.executemany(
            "INSERT INTO mailer.recipients (address_key, unsubscribe_token, "
            "last_signature_id, last_petition_id) VALUES ($1, $2, $3, $4) "
            "ON CONFLICT (address_key) DO NOTHING",
            [
                (r["address_key"], secrets.token_urlsafe(24), r["signature_id"], r["petition_id"])
                for r in missing
            ],
        )
    status = await conn.execute(
        "INSERT INTO mailer.emails (signature_id, kind, sequence, petition_id, address_key, "
        "recipient, content, message_id, status, next_attempt_at) "
        "SELECT signature_id, 'mailing', $5, petition_id, address_key, recipient, "
        "jsonb_build_object('first_name', first_name, 'petition_title', $6::text, "
        "'petition_slug', $7::text, 'share_code', ''), "
        "'<' || gen_random_uuid() || '@' || $8::text || '>', 'queued', 'infinity' "
        f"FROM ({_PEOPLE}) AS a WHERE allowed ON CONFLICT DO NOTHING",
        *args,
        mailing_id,
        found["petition_title"],
        found["petition_slug"],
        message_domain,
    )
    queued = int(status.split()[-1])
    skipped = int(
        await conn.fetchval(f"SELECT count(*) FROM ({_PEOPLE}) AS a WHERE NOT allowed", *args)
    )
    await conn.execute(
        "UPDATE mailer.mailings SET recipients = $2, skipped = $3 WHERE id = $1",
        mailing_id,
        queued,
        skipped,
    )
    return queued, skipped


async def cancel(conn: asyncpg.Connection, mailing_id: int) -> int | None:
    """Stop a mailing: copies not yet claimed are cancelled. None when finished."""
    row = await conn.fetchrow(
        "UPDATE mailer.mailings SET status = 'cancelled', finished_at = now() "
        "WHERE id = $1 AND status IN ('draft', 'sending') RETURNING id",
        mailing_id,
    )
    if row is None:
        return None
    status = await conn.execute(
        "UPDATE mailer.emails SET status = 'cancelled', finished_at = now(), "
        "content = '{}'::jsonb, recipient = NULL "
        "WHERE kind = 'mailing' AND sequence = $1 AND status = 'queued'",
        mailing_id,
    )
    return int(status.split()[-1])


# --- the pacer ---------------------------------------------------------------------


async def release(pool: asyncpg.Pool, rate: float, burst_seconds: float = 1.0) -> int:
    """Release waiting copies at `rate` per second, with unused allowance kept for at
    most `burst_seconds`. Shared by every mailer process through one locked row."""
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "SELECT released_at, now() AS now FROM mailer.mailing_pacer WHERE id = 1 FOR UPDATE"
        )
        assert row is not None
        now: datetime = row["now"]
        since = max((now - row["released_at"]).total_seconds(), 0.0)
        since = min(since, burst_seconds)
        allowance = int(since * rate)
        if allowance < 1:
            return 0
        status = await conn.execute(
            "UPDATE mailer.emails SET next_attempt_at = now() WHERE id IN ("
            "  SELECT id FROM mailer.emails WHERE kind = 'mailing' AND status = 'queued'"
            "  AND next_attempt_at = 'infinity' ORDER BY sequence, id LIMIT $1"
            "  FOR UPDATE SKIP LOCKED)",
            allowance,
        )
        released = int(status.split()[-1])
        # Used: the allowance spent moves on by released/rate; nothing left waiting:
        # start afresh from now (idle time is not banked beyond `burst_seconds`).
        if released < allowance:
            await conn.execute("UPDATE mailer.mailing_pacer SET released_at = now() WHERE id = 1")
        else:
            await conn.execute(
                "UPDATE mailer.mailing_pacer SET released_at = "
                "$1::timestamptz - $2 * interval '1 second' WHERE id = 1",
                now,
                since - released / rate,
            )
        if released:
            await repo.notify_emails_due(conn)
    return released


async def progress(conn: asyncpg.Connection, mailing_id: int) -> dict[str, int]:
    rows = await conn.fetch(
        "SELECT CASE "
        "  WHEN status = 'queued' AND next_attempt_at = 'infinity' THEN 'waiting' "
        "  WHEN status = 'failed' AND last_error ~ '^5[0-9][0-9] (sender|recipient|data):' "
        "    THEN 'bounced' "
        "  WHEN status = 'cancelled' THEN 'suppressed' "
        "  ELSE status END AS state, count(*) AS n "
        "FROM mailer.emails WHERE kind = 'mailing' AND sequence = $1 GROUP BY 1",
        mailing_id,
    )
    return {row["state"]: int(row["n"]) for row in rows}


async def finish_done(conn: asyncpg.Connection) -> list[int]:
    """Mark mailings with nothing left to send as sent, keeping their final figures."""
    rows = await conn.fetch(
        "SELECT id FROM mailer.mailings m WHERE status = 'sending' AND NOT EXISTS ("
        "  SELECT 1 FROM mailer.emails e WHERE e.kind = 'mailing' AND e.sequence = m.id"
        "  AND e.status IN ('queued', 'sending'))"
    )
    done = []
    for row in rows:
        counts = await progress(conn, row["id"])
        await conn.execute(
            "UPDATE mailer.mailings SET status = 'sent', finished_at = now(), "
            "final_counts = $2::jsonb WHERE id = $1 AND status = 'sending'",
            row["id"],
            json.dumps(counts),
        )
        done.append(row["id"])
    return done


async def active_mailings(conn: asyncpg.Connection) -> list[int]:
    rows = await conn.fetch(
        "SELECT id FROM mailer.mailings WHERE status = 'sending' "
        "OR finished_at > now() - interval '1 day'"
    )
    return [row["id"] for row in rows]


# --- preferences -------------------------------------------------------------------


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


# --- milestone notes ----------------------------------------------------------------


async def record_milestone(
    conn: asyncpg.Connection,
    *,
    petition_id: UUID,
    slug: str | None,
    threshold: int,
    notify_address: str,
    message_id: str,
    new_token: str,
) -> bool:
    """Queue the note for (petition, threshold) once, whatever event ids it comes under."""
    row = await conn.fetchrow(
        "SELECT slug, title FROM mailer.petitions WHERE petition_id = $1", petition_id
    )
    title = row["title"] if row else (slug or "A petition")
    petition_slug = row["slug"] if row else (slug or "")
    key = milestone_key(petition_id)
    address_key = notify_address.strip().lower()
    await repo.ensure_recipient(conn, address_key, key, petition_id, new_token)
    added = await repo.add_email(
        conn,
        signature_id=key,
        kind="milestone",
        sequence=threshold,
        petition_id=petition_id,
        address_key=address_key,
        recipient=notify_address.strip(),
        content=EmailContent(
            first_name="", petition_title=title, petition_slug=petition_slug, share_code=""
        ),
        message_id=message_id,
        status=EmailStatus.QUEUED,
        correlation_id=None,
    )
    if added:
        await repo.notify_emails_due(conn)
    return added
