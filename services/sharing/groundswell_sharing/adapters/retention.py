"""Sharing's retention (`groundswell-sharing retention`): old clicks and pending clicks.

A click holds no address (a keyed hash of the day and the network, domain/visitors.py),
but a year of them per network is still a trail; after `click_retention` they go, and
the share stats count only the clicks kept. Pending clicks (on a code whose
SignatureCreated had not arrived yet) are already forgotten after a day by the click
path itself, but only when another unknown code is clicked: this covers a quiet day.
Share links and referrals are what the stats are made of; erasure (SignatureErased)
takes the names off them, retention leaves them.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import asyncpg
from groundswell_runtime.retention import delete_in_batches

# Oldest first by primary key, so each batch stops after `$2` matches.
_CLICKS = """
DELETE FROM sharing.clicks WHERE id IN (
    SELECT id FROM sharing.clicks WHERE clicked_at < $1 ORDER BY id LIMIT $2)
"""

# Served by pending_clicks_age.
_PENDING_CLICKS = """
DELETE FROM sharing.pending_clicks WHERE (share_code, visitor_hash, clicked_on) IN (
    SELECT share_code, visitor_hash, clicked_on FROM sharing.pending_clicks
    WHERE clicked_at < $1 ORDER BY clicked_at LIMIT $2)
"""


async def prune(
    pool: asyncpg.Pool,
    *,
    now: datetime,
    click_retention: timedelta,
    pending_click_retention: timedelta,
    batch_size: int = 1_000,
) -> dict[str, int]:
    """Returns rows deleted per table. Each batch is its own transaction."""
    return {
        "clicks_deleted": await delete_in_batches(
            pool, _CLICKS, now - click_retention, batch_size=batch_size
        ),
        "pending_clicks_deleted": await delete_in_batches(
            pool, _PENDING_CLICKS, now - pending_click_retention, batch_size=batch_size
        ),
    }
