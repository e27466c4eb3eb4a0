"""Per-network signing limits as fixed-window counters that count every attempt.

Each attempt adds one hit to a counter per window (a burst and a sustained window per
petition, a window across all petitions, and for IPv6 a wider one per /48 site). An
attempt is let through only when, for every window, it is within the first `limit`
hits of that window.

Why this is exact under concurrency: the hits are added with one atomic upsert per
counter row (`hits = hits + n ... RETURNING hits`), and PostgreSQL serialises
concurrent upserts of a row, so the totals a batch reads back are the totals after its
own hits and all hits committed or locked before it. A batch that added `n` hits to a
counter and read back `total` owns the ordinals `total - n + 1 .. total` of that window;
`admit` hands them out in arrival order (group commit does the same inside its one
statement, `repository.WRITE_SIGNATURES`; a test holds the statement to `admit` on
random batches). No two attempts anywhere get the same ordinal,
so no more than `limit` attempts are ever admitted per window, however many processes
and batches run at once: 20 parallel requests get no more through than 20 sequential ones.

Why every attempt counts: if only stored signatures counted, a duplicate (someone who
already signed) would not count, and the limit would tell a stranger whether an address
has signed. Counting attempts makes a duplicate and a first signature cost the same.

Fixed windows can let through up to twice `limit` across a window boundary; that is
the price of one row per window instead of one row per attempt.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from groundswell_runtime.client_address import client_network, site_network


@dataclass(frozen=True)
class Window:
    name: str
    limit: int
    seconds: int
    per_petition: bool
    site_wide: bool = False  # counted per IPv6 /48 instead of per client network


@dataclass(frozen=True)
class Hit:
    """One attempt's hit on one window's counter."""

    key: str
    window_start: int  # seconds since the epoch, a multiple of the window's length
    limit: int
    window_end: int

    @property
    def counter(self) -> tuple[str, int]:
        return (self.key, self.window_start)


def hits_for(
    windows: Sequence[Window], petition_id: uuid.UUID, address: str | None, now: float
) -> list[Hit]:
    """The counters one attempt adds to; none when the caller's address is unknown."""
    if address is None:
        return []
    network = client_network(address)
    site = site_network(address)
    hits = []
    for window in windows:
        if window.site_wide and site is None:
            continue  # IPv4: the client network is already the whole address
        scope = str(petition_id) if window.per_petition else "*"
        who = site if window.site_wide else network
        start = int(now) // window.seconds * window.seconds
        hits.append(
            Hit(f"{window.name}:{scope}:{who}", start, window.limit, start + window.seconds)
        )
    return hits


def added_hits(attempts: Sequence[Sequence[Hit]]) -> dict[tuple[str, int], int]:
    """How many hits a batch adds to each counter."""
    return dict(Counter(hit.counter for hits in attempts for hit in hits))


def admit(
    attempts: Sequence[Sequence[Hit]],
    totals: dict[tuple[str, int], int],
    now: float,
) -> list[int | None]:
    """For each attempt, in arrival order: None if it is within every limit, else the
    seconds until the window that refused it ends (for Retry-After).

    `totals` holds each counter's value after the batch's own hits were added.
    """
    added = added_hits(attempts)
    next_ordinal = {counter: totals[counter] - n + 1 for counter, n in added.items()}
    verdicts: list[int | None] = []
    for hits in attempts:
        wait = 0
        for hit in hits:
            ordinal = next_ordinal[hit.counter]
            next_ordinal[hit.counter] = ordinal + 1
            if ordinal > hit.limit:
                wait = max(wait, max(1, int(hit.window_end - now + 0.999)))
        verdicts.append(wait or None)
    return verdicts
