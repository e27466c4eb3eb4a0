"""Milestone notes to the organisation, in PostgreSQL.

A note is an email like any other (kind "milestone", sequence = the threshold) under a
`signature_id` derived from the petition (`milestone_key`), so it names no signer and is
queued once per (petition, threshold) whatever event ids it comes under.
"""

from __future__ import annotations

import uuid
from uuid import UUID

import asyncpg

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.domain.delivery import EmailStatus
from groundswell_mailer.domain.messages import EmailContent

MILESTONE_NAMESPACE = uuid.UUID("5d0b6f55-0a55-4c2e-9d0f-2d6c7f4b1e11")


def milestone_key(petition_id: UUID) -> UUID:
    """The `signature_id` of a petition's milestone notes (names no signer)."""
    return uuid.uuid5(MILESTONE_NAMESPACE, str(petition_id))


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
