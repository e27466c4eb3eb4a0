"""Campaign mailings in PostgreSQL: organisers' drafts, sending and cancelling.

A mailing's copies are rows of `mailer.emails` (kind "mailing", sequence = the
mailing's id), sent by the dispatcher like every other email, with its claims, leases
and recorded outcomes; a unique index keeps one copy per mailbox. They are inserted
waiting (`next_attempt_at = 'infinity'`) and the pacer (pacer.py) releases them at the
configured rate.

The rest of campaign mail sits beside this module, one responsibility each: supporters
and their preferences (supporters.py), who gets a mailing (audience.py), the pacer
(pacer.py), milestone notes (milestones.py).
"""

from __future__ import annotations

import json
import secrets
from typing import Any

import asyncpg

from groundswell_mailer.adapters.audience import PEOPLE, audience_of

# Supporters and preferences live in supporters.py. These names stay importable from here
# for callers outside campaign mail (entrypoints/handlers.py and preferences.py,
# adapters/keys.py) until they import supporters.py themselves.
from groundswell_mailer.adapters.supporters import Preferences as Preferences
from groundswell_mailer.adapters.supporters import forget_signature as forget_signature
from groundswell_mailer.adapters.supporters import note_state as note_state
from groundswell_mailer.adapters.supporters import preferences as preferences
from groundswell_mailer.adapters.supporters import record_supporter as record_supporter
from groundswell_mailer.adapters.supporters import set_preferences as set_preferences


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
        f"SELECT address_key, signature_id, petition_id FROM ({PEOPLE}) AS a "
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
        f"FROM ({PEOPLE}) AS a WHERE allowed ON CONFLICT DO NOTHING",
        *args,
        mailing_id,
        found["petition_title"],
        found["petition_slug"],
        message_domain,
    )
    queued = int(status.split()[-1])
    skipped = int(
        await conn.fetchval(f"SELECT count(*) FROM ({PEOPLE}) AS a WHERE NOT allowed", *args)
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
