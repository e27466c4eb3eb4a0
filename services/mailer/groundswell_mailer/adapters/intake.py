"""The consumer's writes, one statement per batch instead of several per event.

Run inside the consumer's transaction, after the batch's per-key advisory locks
(adapters/keys.py): the rules of which key and waiting event see each other are the
ones described there, applied to many keys at once. Rows that several batches can
touch concurrently (recipients, petitions) are written in key order, so two
transactions never wait on each other's rows in opposite orders; the other rows are
per signature or per key, which the advisory locks already serialise.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Sequence
from datetime import timedelta
from uuid import UUID

import asyncpg

from groundswell_mailer.adapters import keys, supporters
from groundswell_mailer.adapters.repository import EMAILS_CHANNEL, SCHEMA
from groundswell_mailer.domain.intake import NewEmail, Notice, Rows


def new_unsubscribe_token() -> str:
    return secrets.token_urlsafe(24)


async def claim_and_find_keys(
    conn: asyncpg.Connection, events: Sequence[tuple[UUID, UUID | None]]
) -> dict[UUID, bytes | keys.Shredded | None]:
    """Claim events (event_id, key_id) as handled and look up each one's key.

    Returns, for each event claimed now (a redelivered one is absent): its key,
    keys.SHREDDED once destroyed, None when it has not arrived yet. The lookup is part of the
    same statement; it runs after the batch's key locks, so it sees every key committed
    by a transaction that held one of them."""
    rows = await conn.fetch(
        "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::uuid[]) AS t(event_id, key_id)), "
        f'claimed AS (INSERT INTO "{SCHEMA}".processed_events (event_id) '
        "  SELECT event_id FROM input ON CONFLICT DO NOTHING RETURNING event_id) "
        "SELECT c.event_id, k.key_id IS NOT NULL AS known, k.data_key "
        "FROM claimed c JOIN input i USING (event_id) "
        "LEFT JOIN mailer.data_keys k ON k.key_id = i.key_id",
        [event_id for event_id, _ in events],
        [key_id for _, key_id in events],
    )
    return {r["event_id"]: (r["data_key"] or keys.SHREDDED) if r["known"] else None for r in rows}


async def wait_for_keys(
    conn: asyncpg.Connection, waiting: Sequence[tuple[UUID, UUID, str]]
) -> None:
    """Keep events (event_id, key_id, event JSON) until their key comes. `received_at`
    is the clock at each row, so the events of one key are taken in arrival order."""
    if not waiting:
        return
    await conn.execute(
        "INSERT INTO mailer.sealed_waiting (event_id, key_id, event, received_at) "
        "SELECT e, k, j, clock_timestamp() "
        "FROM unnest($1::uuid[], $2::uuid[], $3::text[]) WITH ORDINALITY AS t(e, k, j, n) "
        "ORDER BY n ON CONFLICT (event_id) DO NOTHING",
        [w[0] for w in waiting],
        [w[1] for w in waiting],
        [w[2] for w in waiting],
    )


async def store_keys_and_take_waiting(
    conn: asyncpg.Connection, new_keys: Sequence[tuple[UUID, bytes]]
) -> list[tuple[UUID, str, bool, bytes]]:
    """Store keys (a key handed over again changes nothing; a shredded one stays so) and
    take the events that waited for them: (key_id, event JSON, confirmed, the stored key),
    oldest first. Nothing is taken for a shredded key (its waiting events went with it).

    One statement: its parts share a snapshot, so a key stored by this statement comes
    from `stored` and one stored before from the table, never both."""
    if not new_keys:
        return []
    rows = await conn.fetch(
        "WITH input AS (SELECT * FROM unnest($1::uuid[], $2::bytea[]) AS t(key_id, data_key)), "
        "stored AS (INSERT INTO mailer.data_keys (key_id, data_key) "
        "  SELECT key_id, data_key FROM input ON CONFLICT (key_id) DO NOTHING "
        "  RETURNING key_id, data_key), "
        "usable AS (SELECT key_id, data_key FROM stored UNION ALL "
        "  SELECT k.key_id, k.data_key FROM mailer.data_keys k JOIN input USING (key_id) "
        "  WHERE k.data_key IS NOT NULL), "
        "taken AS (DELETE FROM mailer.sealed_waiting w USING usable u "
        "  WHERE w.key_id = u.key_id "
        "  RETURNING w.key_id, w.event, w.confirmed, w.received_at, u.data_key) "
        "SELECT key_id, event, confirmed, data_key FROM taken ORDER BY received_at",
        [key_id for key_id, _ in new_keys],
        [key for _, key in new_keys],
    )
    return [(r["key_id"], r["event"], bool(r["confirmed"]), r["data_key"]) for r in rows]


async def admit_notices(
    conn: asyncpg.Connection, notices: Sequence[Notice], window: timedelta
) -> tuple[list[NewEmail], list[UUID]]:
    """Already-signed notices the per-signature cap lets through, with their sequence
    numbers; and the signatures whose notice is capped. One statement, so two deliveries
    racing cannot both pass the cap. The notices must name distinct signatures."""
    if not notices:
        return [], []
    rows = await conn.fetch(
        "INSERT INTO mailer.duplicate_notices (signature_id, last_notice_at, notices) "
        "SELECT s, at, 1 FROM unnest($1::uuid[], $2::timestamptz[]) AS t(s, at) "
        "ON CONFLICT (signature_id) DO UPDATE SET "
        "last_notice_at = EXCLUDED.last_notice_at, "
        "notices = mailer.duplicate_notices.notices + 1 "
        "WHERE EXCLUDED.last_notice_at >= mailer.duplicate_notices.last_notice_at + $3::interval "
        "RETURNING signature_id, notices",
        [n.signature_id for n in notices],
        [n.occurred_at for n in notices],
        window,
    )
    sequence = {r["signature_id"]: int(r["notices"]) for r in rows}
    admitted = [
        _with_sequence(n.email, sequence[n.signature_id])
        for n in notices
        if n.signature_id in sequence
    ]
    capped = [n.signature_id for n in notices if n.signature_id not in sequence]
    return admitted, capped


def _with_sequence(email: NewEmail, sequence: int) -> NewEmail:
    return NewEmail(
        signature_id=email.signature_id,
        kind=email.kind,
        petition_id=email.petition_id,
        address_key=email.address_key,
        recipient=email.recipient,
        content=email.content,
        message_id=email.message_id,
        status=email.status,
        correlation_id=email.correlation_id,
        sequence=sequence,
    )


# One statement for the rows of a run of events: recipients, petitions, supporters
# (their SQL is supporters.py's, shared with `record_supporter`), emails, and the
# sender's wake-up. The emails reference their recipients: foreign keys
# are checked at the end of the statement, when the recipients' rows exist.
_RECORD = (
    "WITH recipients AS ("
    "  INSERT INTO mailer.recipients "
    "  (address_key, unsubscribe_token, last_signature_id, last_petition_id) "
    "  SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::uuid[]) "
    "  ON CONFLICT (address_key) DO UPDATE SET "
    "  last_signature_id = EXCLUDED.last_signature_id, "
    "  last_petition_id = EXCLUDED.last_petition_id"
    f"), petitions AS ({supporters.petitions_upsert(5)}"
    f"), supporters AS ({supporters.supporters_insert(8)}"
    "), emails AS ("
    "  INSERT INTO mailer.emails (signature_id, kind, sequence, petition_id, address_key, "
    "  recipient, content, message_id, status, correlation_id) "
    "  SELECT s, k, q, p, a, r, c::jsonb, m, st, ci "
    "  FROM unnest($16::uuid[], $17::text[], $18::int[], $19::uuid[], $20::text[], $21::text[], "
    "    $22::text[], $23::text[], $24::text[], $25::text[]) WITH ORDINALITY "
    "    AS t(s, k, q, p, a, r, c, m, st, ci, n) "
    "  ORDER BY n "
    "  ON CONFLICT (signature_id, kind, sequence) DO NOTHING RETURNING status"
    ") "
    f"SELECT pg_notify('{EMAILS_CHANNEL}', '') "
    "FROM (SELECT 1 FROM emails WHERE status = 'queued' LIMIT 1) AS due"
)


async def record(conn: asyncpg.Connection, rows: Rows, emails: Sequence[NewEmail]) -> None:
    """Write a run's rows (`emails`: the run's, with admitted notices) in one statement;
    NOTIFY the sender when any of them is due now."""
    if not (rows.recipients or rows.supporters or emails):
        return
    recipients = sorted(rows.recipients.items())
    await conn.execute(
        _RECORD,
        [address for address, _ in recipients],
        [new_unsubscribe_token() for _ in recipients],
        [ids[0] for _, ids in recipients],
        [ids[1] for _, ids in recipients],
        *supporters.petition_arguments(rows.petitions),
        *supporters.supporter_arguments(rows.supporters),
        [e.signature_id for e in emails],
        [e.kind for e in emails],
        [e.sequence for e in emails],
        [e.petition_id for e in emails],
        [e.address_key for e in emails],
        [e.recipient for e in emails],
        [json.dumps(e.content.to_json()) for e in emails],
        [e.message_id for e in emails],
        [e.status.value for e in emails],
        [e.correlation_id for e in emails],
    )
