"""Data keys for sealed contact details, events waiting for their key, and erasure.

Keys and the events sealed under them come on two topics, read independently, so either
may arrive first. Both paths take the same per-key advisory lock (transaction-scoped)
before looking for the other half: whichever commits second sees the first, so an event
never waits for a key that is already stored, and a key never misses a waiting event.
The consumer's key lookups, waiting rows and key stores, a batch at a time, are in
intake.py; the locks, confirmations, withdrawals and shredding are here.
"""

from __future__ import annotations

from collections.abc import Iterable
from uuid import UUID

import asyncpg

from groundswell_mailer.adapters import supporters


class Shredded:
    """The key was destroyed: what was sealed under it is gone for good."""


SHREDDED = Shredded()


async def lock(conn: asyncpg.Connection, key_id: UUID) -> None:
    await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1::uuid::text, 7))", key_id)


async def lock_all(conn: asyncpg.Connection, key_ids: Iterable[UUID]) -> None:
    """A batch's keys, all at once and in lock order. Batches of different partitions
    (`signatures` and `signer-keys` are applied in parallel) otherwise take the same
    keys in different orders and deadlock; the per-event `lock` calls that follow are
    re-entrant in the same transaction."""
    ids = sorted(set(key_ids))
    if ids:
        await conn.execute(
            "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT "
            "hashtextextended(k::text, 7) AS h FROM unnest($1::uuid[]) AS k ORDER BY h) AS o",
            ids,
        )


async def confirm_waiting(conn: asyncpg.Connection, signature_id: UUID) -> None:
    await conn.execute(
        "UPDATE mailer.sealed_waiting SET confirmed = true WHERE key_id = $1", signature_id
    )


async def drop_waiting(conn: asyncpg.Connection, key_id: UUID) -> None:
    await conn.execute("DELETE FROM mailer.sealed_waiting WHERE key_id = $1", key_id)


_LOCK_ADDRESSES = (
    "SELECT pg_advisory_xact_lock(h) FROM (SELECT DISTINCT "
    "hashtextextended('mailer-address:' || a, 7) AS h FROM ("
    "  SELECT address_key AS a FROM mailer.emails WHERE signature_id = $1"
    "  UNION SELECT address_key FROM mailer.supporters WHERE signature_id = $1"
    ") AS held ORDER BY h) AS o"
)


async def shred(conn: asyncpg.Connection, key_id: UUID) -> int:
    """Forget the key and everything held for what was sealed under it: waiting events,
    emails (sent or not, with their address and content), already-signed notices, and
    the recipient row of an address nothing else of ours refers to (no other email, no
    other supporter row). Returns emails deleted."""
    await conn.execute(
        "INSERT INTO mailer.data_keys (key_id, data_key, shredded_at) VALUES ($1, NULL, now()) "
        "ON CONFLICT (key_id) DO UPDATE SET data_key = NULL, shredded_at = now()",
        key_id,
    )
    # Two keys of one address shredded at once (an erasure shreds the signature's key and
    # its request's together; partitions are applied concurrently) would each still see
    # the other's email below and both keep the recipient row, for good: the addresses
    # are locked first, so the second waits and then sees what the first deleted.
    await conn.execute(_LOCK_ADDRESSES, key_id)
    await drop_waiting(conn, key_id)
    await conn.execute("DELETE FROM mailer.duplicate_notices WHERE signature_id = $1", key_id)
    await supporters.forget_signature(conn, key_id)  # the supporter row mailings are sent from
    # One statement's parts share a snapshot: the NOT EXISTS still sees the emails being
    # deleted, hence the explicit `signature_id <> $1`.
    deleted = await conn.fetchval(
        "WITH gone AS (DELETE FROM mailer.emails WHERE signature_id = $1 RETURNING address_key), "
        "orphans AS (DELETE FROM mailer.recipients r "
        "  WHERE r.address_key IN (SELECT address_key FROM gone) "
        "  AND NOT EXISTS (SELECT 1 FROM mailer.emails e "
        "                  WHERE e.address_key = r.address_key AND e.signature_id <> $1) "
        # A mailbox with another live signature keeps its row (its unsubscribe, its token).
        "  AND NOT EXISTS (SELECT 1 FROM mailer.supporters s WHERE s.address_key = r.address_key) "
        "  RETURNING 1) "
        "SELECT count(*) FROM gone",
        key_id,
    )
    return int(deleted)
