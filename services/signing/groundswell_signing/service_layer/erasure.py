"""Erasing a signer's personal data: one rule for erasure requests and for retention.

A signature row keeps what the count and the campaign's statistics need (petition,
area, country, source, referral, status and times) and loses everything that names a
person: name, address, full postcode, IP address, token hashes, consent to contact,
and its data key. Losing the key is what reaches the copies this service cannot
rewrite: the contact details on the `signatures` topic, in dead-letter topics and in
backups were sealed under it (groundswell_contracts.sealed), so they are unreadable
from the moment the row commits. The events tell the others:

- `DataKeyShredded` (on `signer-keys`, same record key as the key it supersedes): the
  mailer deletes its copy of the key and every email, recipient and notice it holds
  for the signature; compaction then drops the key from the topic.
- `SignatureErased` (on `signatures`, after the signature's other events in its
  partition): sharing forgets the leaderboard name; the counter keeps counting.
- `SignatureWithdrawn` first, when the campaign's policy is that an erased signature no
  longer counts (`counted=False`).

All of it in the caller's transaction with the outbox rows, so it happens entirely or
not at all, and twice is the same as once (rows already erased are skipped).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
from groundswell_contracts.events import BaseEvent
from groundswell_runtime.outbox import enqueue

from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.domain.events import (
    data_key_shredded,
    signature_erased,
    signature_withdrawn,
)

_ERASE = """
UPDATE signing.signatures SET
    name = NULL,
    email = NULL,
    email_canonical = 'erased:' || id::text,
    email_domain = '',
    postcode = NULL,
    ip = NULL,
    contact_consent = false,
    leaderboard_consent = false,
    data_key = NULL,
    confirmation_token_hash = NULL,
    replay_token_hash = NULL,
    -- NOT NULL UNIQUE: a hash of nothing anyone holds, so no link can ever match.
    withdraw_token_hash = sha256(convert_to('erased:' || id::text, 'UTF8')),
    erased_at = $2,
    -- Withdrawn now when the policy says erased signatures stop counting, and always
    -- when still awaiting confirmation: its token is gone, it could never count.
    withdrawn_at = CASE
        WHEN withdrawn_at IS NULL AND invalidated_at IS NULL
             AND (NOT $3 OR (initial_status = 'pending' AND confirmed_at IS NULL)) THEN $2
        ELSE withdrawn_at END
WHERE id = ANY($1::uuid[]) AND erased_at IS NULL
RETURNING id, petition_id, withdrawn_at = $2 AS withdrawn_now
"""


async def erase_signatures(
    conn: asyncpg.Connection, signature_ids: Sequence[uuid.UUID], *, counted: bool, now: datetime
) -> int:
    """Erase these signatures' personal data (inside the caller's transaction); returns how
    many were erased now. `counted`: whether they keep counting, anonymised."""
    if not signature_ids:
        return 0
    rows = await conn.fetch(_ERASE, list(signature_ids), now, counted)
    events: list[BaseEvent] = []
    for row in rows:
        if row["withdrawn_now"]:
            events.append(signature_withdrawn(row["id"], row["petition_id"], now))
        still_counted = counted and not row["withdrawn_now"]
        events.append(signature_erased(row["id"], row["petition_id"], still_counted, now))
        events.append(data_key_shredded(row["id"], now))
    await enqueue(conn, SCHEMA, *events)
    return len(rows)


async def signatures_of(conn: asyncpg.Connection, email_canonical: str) -> list[uuid.UUID]:
    """Every signature an address has made, on every petition. Through the petitions, so
    the (petition, address) unique index serves it: no index on the address alone, which
    every signature of a surge would pay for."""
    rows = await conn.fetch(
        "SELECT s.id FROM signing.petitions p JOIN signing.signatures s "
        "ON s.petition_id = p.id AND s.email_canonical = $1 WHERE s.erased_at IS NULL",
        email_canonical,
    )
    return [r["id"] for r in rows]
