"""The mailer's schema: recipients, emails and the already-signed cap.

What the dispatcher does with the emails (claims, leases, outcomes) is in `queue.py`.

Functions taking a connection run inside the caller's transaction (so the outbox
row and the change commit together); functions taking a pool open their own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from uuid import UUID

import asyncpg
from groundswell_contracts.events import EmailKind
from groundswell_runtime.consumer import PROCESSED_EVENTS_DDL
from groundswell_runtime.db import Migration, migrations_from_package
from groundswell_runtime.outbox import outbox_migration

from groundswell_mailer.domain.delivery import EmailStatus
from groundswell_mailer.domain.messages import EmailContent

SCHEMA = "mailer"
# NOTIFYed when an email becomes due, so the sender does not wait for its next poll.
EMAILS_CHANNEL = "mailer_emails"


def _rowcount(command_status: object) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 3".
    return int(str(command_status).split()[-1])


def migrations() -> list[Migration]:
    return [
        outbox_migration(),
        Migration("000_processed_events.sql", PROCESSED_EVENTS_DDL),
        *migrations_from_package("groundswell_mailer.adapters"),
    ]


@dataclass(frozen=True)
class Recipient:
    unsubscribe_token: str
    unsubscribed: bool


async def ensure_recipient(
    conn: asyncpg.Connection,
    address_key: str,
    signature_id: UUID,
    petition_id: UUID,
    new_token: str,
) -> Recipient:
    """The recipient's row, created with `new_token` the first time the address is seen."""
    row = await conn.fetchrow(
        "INSERT INTO mailer.recipients "
        "(address_key, unsubscribe_token, last_signature_id, last_petition_id) "
        "VALUES ($1, $2, $3, $4) "
        "ON CONFLICT (address_key) DO UPDATE SET "
        "last_signature_id = EXCLUDED.last_signature_id, "
        "last_petition_id = EXCLUDED.last_petition_id "
        "RETURNING unsubscribe_token, unsubscribed_at IS NOT NULL AS unsubscribed",
        address_key,
        new_token,
        signature_id,
        petition_id,
    )
    assert row is not None
    return Recipient(row["unsubscribe_token"], row["unsubscribed"])


async def add_email(
    conn: asyncpg.Connection,
    *,
    signature_id: UUID,
    kind: EmailKind,
    petition_id: UUID,
    address_key: str,
    recipient: str,
    content: EmailContent,
    message_id: str,
    status: EmailStatus,
    correlation_id: str | None,
    sequence: int = 1,
) -> bool:
    """Record an email to send; False when that (signature, kind, sequence) exists already."""
    inserted = await conn.fetchval(
        "INSERT INTO mailer.emails (signature_id, kind, sequence, petition_id, address_key, "
        "recipient, content, message_id, status, correlation_id) "
        "VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8, $9, $10) "
        "ON CONFLICT (signature_id, kind, sequence) DO NOTHING RETURNING true",
        signature_id,
        kind,
        sequence,
        petition_id,
        address_key,
        recipient,
        json.dumps(content.to_json()),
        message_id,
        status.value,
        correlation_id,
    )
    return inserted is True


async def release_held_thank_you(conn: asyncpg.Connection, signature_id: UUID) -> bool:
    status = await conn.execute(
        "UPDATE mailer.emails SET status = 'queued', next_attempt_at = now() "
        "WHERE signature_id = $1 AND kind = 'thank_you' AND status = 'held'",
        signature_id,
    )
    return _rowcount(status) > 0


async def cancel_unsent(conn: asyncpg.Connection, signature_id: UUID) -> int:
    """Drop what has not gone out yet for a withdrawn or invalidated signature."""
    status = await conn.execute(
        "UPDATE mailer.emails SET status = 'cancelled', finished_at = now(), "
        "content = '{}'::jsonb, recipient = NULL "
        "WHERE signature_id = $1 AND status IN ('held', 'queued')",
        signature_id,
    )
    return _rowcount(status)


async def next_duplicate_notice(
    conn: asyncpg.Connection, signature_id: UUID, at: datetime, window: timedelta
) -> int | None:
    """The sequence number of a new already-signed notice, or None while capped.

    One statement, so two deliveries racing cannot both pass the cap.
    """
    sequence = await conn.fetchval(
        "INSERT INTO mailer.duplicate_notices (signature_id, last_notice_at, notices) "
        "VALUES ($1, $2, 1) "
        "ON CONFLICT (signature_id) DO UPDATE SET "
        "last_notice_at = EXCLUDED.last_notice_at, "
        "notices = mailer.duplicate_notices.notices + 1 "
        "WHERE EXCLUDED.last_notice_at >= mailer.duplicate_notices.last_notice_at + $3::interval "
        "RETURNING notices",
        signature_id,
        at,
        window,
    )
    return int(sequence) if sequence is not None else None


async def notify_emails_due(conn: asyncpg.Connection) -> None:
    await conn.execute(f"NOTIFY {EMAILS_CHANNEL}")


@dataclass(frozen=True)
class Unsubscription:
    newly: bool
    signature_id: UUID
    petition_id: UUID


async def unsubscribe(conn: asyncpg.Connection, token: str) -> Unsubscription | None:
    """Unsubscribe the token's recipient; None for an unknown token."""
    row = await conn.fetchrow(
        "WITH target AS ("
        "  SELECT address_key, unsubscribed_at FROM mailer.recipients"
        "  WHERE unsubscribe_token = $1 FOR UPDATE"
        "), changed AS ("
        "  UPDATE mailer.recipients r SET unsubscribed_at = now() FROM target"
        "  WHERE r.address_key = target.address_key AND target.unsubscribed_at IS NULL"
        "  RETURNING r.address_key"
        ") "
        "SELECT r.last_signature_id, r.last_petition_id, "
        "EXISTS (SELECT 1 FROM changed) AS newly "
        "FROM mailer.recipients r JOIN target USING (address_key)",
        token,
    )
    if row is None:
        return None
    return Unsubscription(row["newly"], row["last_signature_id"], row["last_petition_id"])


async def purge_unconfirmed(pool: asyncpg.Pool, older_than: timedelta) -> int:
    """Forget held thank-yous (and the address in them) of signatures never confirmed."""
    async with pool.acquire() as conn:
        status = await conn.execute(
            "UPDATE mailer.emails SET status = 'cancelled', finished_at = now(), "
            "content = '{}'::jsonb, recipient = NULL "
            "WHERE status = 'held' AND created_at < now() - $1::interval",
            older_than,
        )
    return _rowcount(status)
