"""Admission by the end of the pipe: refuse new signatures while the outbox is behind.

The writer sheds when its own queue is long or old (group_commit.py), which bounds how
long a request waits. It does not bound what comes after a 202: the relay publishing the
outbox, then the counter and the mailer. Measured (docs/performance.md, 1,000/s offered on
2 cores): once signing cost less per request it accepted 660/s, more than the relay, the
counter and the mailer could pass on with the CPU left; the outbox's oldest row reached
11 s and count freshness p99 12 s. A signature accepted while the outbox already holds
seconds of work only waits longer to be counted and thanked; refusing it at once (503
with Retry-After, nothing recorded) keeps what is accepted fresh, and the client comes
back when the backlog has drained.

`OutboxBacklog` reads the oldest unpublished row a few times a second (one index probe
on the outbox's key) and says `behind()` while it is older than the limit **and the relay
is moving** (the oldest row changed within `STALLED_AFTER` seconds). A relay that is not
moving at all means the broker (or the relay) is away: then signing keeps accepting, as
it always has, since the outbox holds every signature durably until the broker is back
(docs/operations.md); shedding would turn a broker outage into a signing outage. If the
database cannot be read it forgets what it saw rather than shed on stale figures (the
writer itself refuses while the database is away).
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from groundswell_signing.adapters.repository import SCHEMA

# The relay passes every second when idle and continuously under load: an oldest row that
# has not changed for this long means it is not publishing.
STALLED_AFTER = 5.0


def behind(age: float, since_moved: float, limit: float) -> bool:
    """Shed: the oldest unpublished row is older than `limit` while the relay is moving."""
    return limit > 0 and age > limit and since_moved < STALLED_AFTER


class OutboxBacklog:
    def __init__(self, pool: asyncpg.Pool, *, limit: float, interval: float = 0.25) -> None:
        self._pool = pool
        self._limit = limit
        self._interval = interval
        self.age = 0.0
        self._oldest: int | None = None
        self._moved_at = -STALLED_AFTER  # not seen moving yet

    def behind(self) -> bool:
        return behind(self.age, time.monotonic() - self._moved_at, self._limit)

    async def run(self) -> None:
        """Runs until cancelled (under `supervise`, restarted after a failure)."""
        try:
            while True:
                async with self._pool.acquire() as conn:
                    row = await conn.fetchrow(
                        "SELECT id, extract(epoch FROM clock_timestamp() - created_at)::float8 "
                        f'AS age FROM "{SCHEMA}".outbox ORDER BY id LIMIT 1'
                    )
                oldest = row["id"] if row else None
                # Moving: the row that was oldest has left (been published). Rows arriving
                # in an empty outbox say nothing about the relay.
                if self._oldest is not None and oldest != self._oldest:
                    self._moved_at = time.monotonic()
                self._oldest = oldest
                self.age = float(row["age"]) if row else 0.0
                await asyncio.sleep(self._interval)
        finally:
            self.age = 0.0
