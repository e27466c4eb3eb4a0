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
on the outbox's key, in the round trip that reads the counter's lag below). While the
relay is moving (the oldest row changed within `STALLED_AFTER` seconds) it lets in a
*share* of new signatures (`Admission`): cut by a fifth at each reading that finds the
oldest row older than the limit, grown back a little at each reading under half of it.
Refusing everything while behind, as it first did, made the stack swing (measured at
1,000/s: the relay caught up as soon as signing stopped taking in, signing let
everything in again, the outbox aged past the limit within seconds, and only 375
signatures a second got in); the share instead settles near what the relay and the
consumers pass on, the rest being refused at once.

The outbox is only the first wait. Once signing ran ahead of the rest on the cores
(docs/performance.md, 2026-12-04), the relay kept the outbox short while the counter
fell 15-23 s behind at 4,000 signatures/s offered, and admission saw nothing wrong. So
the reading also holds the counter's lag after the relay (the age of the oldest
published signature it has not committed, groundswell_runtime.consumer_lag, written
into signing's database by the relay), and the share follows the sum: how long a
signature accepted now would wait to be counted.

A relay that is not moving at all means the broker (or the relay) is away: then signing
lets everything in, as it always has, since the outbox holds every signature durably
until the broker is back (docs/operations.md); shedding would turn a broker outage into
a signing outage. (The counter's lag still counts then: the relay reads it apart from
publishing, and reports none when the counter itself is not moving, for the same
reason.) If the database cannot be read it forgets what it saw rather than
shed on stale figures (the writer itself refuses while the database is away).
"""

from __future__ import annotations

import asyncio
import random
import time

import asyncpg

from groundswell_signing.adapters.repository import read_backlog

# The relay passes every second when idle and continuously under load: an oldest row that
# has not changed for this long means it is not publishing.
STALLED_AFTER = 5.0


# Per reading (4 a second): behind, the share falls by a fifth (to half in ~0.8 s);
# caught up, it grows back by 1/40 (from half to all in ~5 s). Some always get in, so the
# share can tell when the stack keeps up again.
DECREASE = 0.8
INCREASE = 0.025
MIN_SHARE = 0.05


class Admission:
    """The share of new signatures to let in, from successive readings of the backlog."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.share = 1.0

    def observe(self, age: float, since_moved: float, lag: float = 0.0) -> None:
        """`age`: the outbox's oldest row; `since_moved`: since the relay was last seen
        publishing; `lag`: how long the published signatures wait for the counter."""
        if self.limit <= 0:
            self.share = 1.0
            return
        if since_moved >= STALLED_AFTER:
            # The relay is not publishing at all: the outbox's age says nothing of load.
            if lag <= self.limit:
                self.share = 1.0
                return
            age = 0.0
        waiting = age + lag
        if waiting > self.limit:
            self.share = max(MIN_SHARE, self.share * DECREASE)
        elif waiting < self.limit / 2:
            self.share = min(1.0, self.share + INCREASE)

    def admits(self, draw: float) -> bool:
        """`draw`: uniform in [0, 1)."""
        return draw < self.share


class OutboxBacklog:
    def __init__(self, pool: asyncpg.Pool, *, limit: float, interval: float = 0.25) -> None:
        self._pool = pool
        self._interval = interval
        self.admission = Admission(limit)
        self.age = 0.0
        self.lag = 0.0
        self._oldest: int | None = None
        self._moved_at = -STALLED_AFTER  # not seen moving yet

    def behind(self) -> bool:
        """Refuse this signature (a random draw against the share let in)."""
        return not self.admission.admits(random.random())  # noqa: S311 (not a secret)

    async def run(self) -> None:
        """Runs until cancelled (under `supervise`, restarted after a failure)."""
        try:
            while True:
                async with self._pool.acquire() as conn:
                    oldest, age, lag = await read_backlog(conn)
                # Moving: the row that was oldest has left (been published). Rows arriving
                # in an empty outbox say nothing about the relay.
                if self._oldest is not None and oldest != self._oldest:
                    self._moved_at = time.monotonic()
                self._oldest = oldest
                self.age, self.lag = age, lag
                self.admission.observe(age, time.monotonic() - self._moved_at, lag)
                await asyncio.sleep(self._interval)
        finally:
            self.age = self.lag = 0.0
            self.admission.share = 1.0
