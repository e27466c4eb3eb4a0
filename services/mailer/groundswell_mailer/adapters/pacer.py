"""The pacer's state and a mailing's progress, in PostgreSQL.

A mailing's copies are inserted waiting (`next_attempt_at = 'infinity'`); `release`
hands them to the dispatcher at the configured rate through one locked row
(`mailer.mailing_pacer`) shared by every mailer process, so a crash pauses the release
and a restart goes on from where it stopped. `progress` and `finish_done` read the
copies' outcomes. The loop that calls them is `run_pacer` in entrypoints/mailings.py.
"""

from __future__ import annotations

import json
from datetime import datetime

import asyncpg

from groundswell_mailer.adapters import repository as repo


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
