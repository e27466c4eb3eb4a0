"""Self-service erasure and access: verified by a link emailed to the address.

The flow mirrors confirmation. `request` records the request with the hash of a one-time
token and a data key of its own, and queues `PrivacyRequested` with the address and token
sealed under that key (so the topic holds nothing readable once the request is done);
the mailer sends the link. Opening the link shows a button (`pending`); pressing it acts
(`erase` or `access`), once: the request forgets the address, the token and its key, and
`DataKeyShredded` makes the mailer forget the verification email.

The answer to a request is the same whether or not the address has signed anything, so
the form cannot be used to learn who signed; at most `PER_ADDRESS_PER_DAY` links go to one
address a day, so it cannot be used to flood a mailbox either.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import asyncpg
from groundswell_contracts.events import PrivacyRequested, PrivacyRequestKind
from groundswell_contracts.sealed import Contact, associated_data, new_data_key, seal
from groundswell_runtime.outbox import enqueue

from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.domain.events import data_key_issued, data_key_shredded, event_id
from groundswell_signing.domain.tokens import hash_token, new_token
from groundswell_signing.service_layer.erasure import erase_signatures, signatures_of

LINK_LIFETIME = timedelta(hours=24)
PER_ADDRESS_PER_DAY = 3


@dataclass(frozen=True)
class OpenRequest:
    kind: PrivacyRequestKind
    expires_at: datetime


async def request(
    pool: asyncpg.Pool,
    kind: PrivacyRequestKind,
    email: str,
    email_canonical: str,
    now: datetime,
    *,
    source: str = "web",
) -> bool:
    """Queue the verification email; False when the address had its share for today
    (the caller answers the same either way)."""
    request_id = uuid.uuid4()
    token = new_token()
    key = new_data_key()
    expires_at = now + LINK_LIFETIME
    async with pool.acquire() as conn, conn.transaction():
        # Serialises requests for one address, so the daily cap cannot be raced past.
        await conn.execute(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 11))", email_canonical
        )
        recent = await conn.fetchval(
            "SELECT count(*) FROM signing.privacy_requests "
            "WHERE email_canonical = $1 AND created_at > $2",
            email_canonical,
            now - timedelta(days=1),
        )
        if recent >= PER_ADDRESS_PER_DAY:
            return False
        await conn.execute(
            "INSERT INTO signing.privacy_requests "
            "(id, kind, email_canonical, token_hash, data_key, source, created_at, expires_at) "
            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            request_id,
            kind,
            email_canonical,
            hash_token(token),
            key,
            source,
            now,
            expires_at,
        )
        requested_id = event_id(request_id, "requested")
        await enqueue(
            conn,
            SCHEMA,
            data_key_issued(request_id, key, now),
            PrivacyRequested(
                event_id=requested_id,
                occurred_at=now,
                request_id=request_id,
                kind=kind,
                contact=seal(
                    Contact(email=email, verification_token=token),
                    key,
                    request_id,
                    associated_data("PrivacyRequested", requested_id),
                ),
                expires_at=expires_at,
            ),
        )
    return True


async def pending(pool: asyncpg.Pool, token: str, now: datetime) -> OpenRequest | None:
    async with pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT kind, expires_at FROM signing.privacy_requests "
            "WHERE token_hash = $1 AND completed_at IS NULL AND expires_at > $2",
            hash_token(token),
            now,
        )
    return None if row is None else OpenRequest(row["kind"], row["expires_at"])


async def _complete(
    conn: asyncpg.Connection, token: str, kind: PrivacyRequestKind, now: datetime
) -> asyncpg.Record | None:
    """Use the request up: it forgets the address, the token and its key."""
    row: asyncpg.Record | None = await conn.fetchrow(
        "WITH open AS (SELECT id, email_canonical FROM signing.privacy_requests "
        "  WHERE token_hash = $1 AND kind = $2 AND completed_at IS NULL AND expires_at > $3 "
        "  FOR UPDATE) "
        "UPDATE signing.privacy_requests r SET completed_at = $3, email_canonical = NULL, "
        "token_hash = NULL, data_key = NULL FROM open WHERE r.id = open.id "
        "RETURNING r.id, open.email_canonical",
        hash_token(token),
        kind,
        now,
    )
    if row is not None:
        await enqueue(conn, SCHEMA, data_key_shredded(row["id"], now))
    return row


async def erase(pool: asyncpg.Pool, token: str, now: datetime, *, counted: bool) -> int | None:
    """Erase the address's signatures on every petition; None if the link is not valid."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _complete(conn, token, "erasure", now)
        if row is None:
            return None
        ids = await signatures_of(conn, row["email_canonical"])
        erased = await erase_signatures(conn, ids, counted=counted, now=now)
        await conn.execute(
            "UPDATE signing.privacy_requests SET erased_signatures = $2 WHERE id = $1",
            row["id"],
            erased,
        )
    return erased


async def access(pool: asyncpg.Pool, token: str, now: datetime) -> dict[str, Any] | None:
    """Everything signing holds about the address, as a JSON-ready document; None if the
    link is not valid. The link works once: the report is the answer to that press."""
    async with pool.acquire() as conn, conn.transaction():
        row = await _complete(conn, token, "access", now)
        if row is None:
            return None
        signatures = await conn.fetch(
            "SELECT p.slug, p.title, s.name, s.email, s.postcode, s.postcode_area, s.country, "
            "s.contact_consent, s.consent_wording_version, s.consent_at, "
            "s.leaderboard_consent, s.source, s.ref, s.ref_channel, s.share_code, "
            "host(s.ip) AS ip, s.created_at, s.confirmed_at, s.withdrawn_at, s.invalidated_at "
            "FROM signing.petitions p JOIN signing.signatures s "
            "ON s.petition_id = p.id AND s.email_canonical = $1 WHERE s.erased_at IS NULL "
            "ORDER BY s.created_at",
            row["email_canonical"],
        )
    return {
        "generated_at": now.isoformat(),
        "signatures": [_jsonable(dict(s)) for s in signatures],
        "elsewhere": ELSEWHERE,
    }


# What the other services hold, by kind (they are reached by events, not queried here).
ELSEWHERE = {
    "mailer": "The emails we sent you about these signatures (address, first name, links) "
    "until each is sent, then only that it was sent, for 90 days; whether you unsubscribed.",
    "sharing": "Your first name, only if you agreed to the organisers' leaderboard; how many "
    "people opened your share link (no one's address).",
    "counter": "Nothing that names you: counts by area, country and source.",
}


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in row.items()}
