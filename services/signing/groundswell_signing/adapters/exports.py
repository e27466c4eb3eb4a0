"""Admin exports of personal data: the supporters query and the audit log.

Every export is recorded in `signing.audit_log` (migration 006): who (a fingerprint of
the admin token), when, what, which petition and how many rows; never a row's content.
"""

from __future__ import annotations

import uuid

import asyncpg

# Supporters the campaign may email: they ticked contact consent, their address was
# confirmed (a pending signature's address may be someone else's, typed by anyone),
# and they have not withdrawn, been invalidated or erased. An erased row has lost its
# consent too; the test on erased_at says so without relying on it.
_SUPPORTERS_WHERE = """
FROM signing.signatures
WHERE petition_id = $1 AND contact_consent AND erased_at IS NULL
  AND withdrawn_at IS NULL AND invalidated_at IS NULL
  AND initial_status <> 'fraudulent'
  AND (initial_status = 'signed' OR confirmed_at IS NOT NULL)
"""

SUPPORTERS_COLUMNS = ("email", "name", "consent_wording_version", "consent_at")


async def count_supporters(conn: asyncpg.Connection, petition_id: uuid.UUID) -> int:
    return int(await conn.fetchval("SELECT count(*) " + _SUPPORTERS_WHERE, petition_id))


def supporters_cursor(
    conn: asyncpg.Connection, petition_id: uuid.UUID
) -> asyncpg.cursor.CursorFactory:
    """A server-side cursor over the supporters (use inside a transaction): rows are
    fetched a page at a time, never the whole petition at once."""
    return conn.cursor(
        "SELECT email, name, consent_wording_version, consent_at "
        + _SUPPORTERS_WHERE
        + "ORDER BY created_at, id",
        petition_id,
    )


async def record_export(
    conn: asyncpg.Connection | asyncpg.Pool,
    *,
    who: str,
    action: str,
    petition_slug: str | None,
    rows: int,
) -> None:
    await conn.execute(
        "INSERT INTO signing.audit_log (who, action, petition_slug, row_count) "
        "VALUES ($1, $2, $3, $4)",
        who,
        action,
        petition_slug,
        rows,
    )
