"""Per-network signing limits as fixed-window counters that count every attempt.

Each attempt adds one hit to a counter per window (a burst and a sustained window per
petition, a window across all petitions, and for IPv6 a wider one per /48 site). An
attempt is let through only when, for every window, it is within the first `limit`
hits of that window.

Why this is exact under concurrency: the hits are added with one atomic upsert per
counter row (`hits = hits + n ... RETURNING hits`), and PostgreSQL serialises
concurrent upserts of a row, so the totals a batch reads back are the totals after its
own hits and all hits committed or locked before it. A batch that added `n` hits to a
counter and read back `total` owns the ordinals `total - n + 1 .. total` of that window
and hands them out in arrival order (group commit's one statement,
`repository.WRITE_SIGNATURES`; `RateCounters` here is the same rule attempt by attempt,
and a test holds the two to each other on random batches). No two attempts anywhere get
the same ordinal, so no more than `limit` attempts are ever admitted per window, however
many processes and batches run at once: 20 parallel requests get no more through than
20 sequential ones.

A network's first attempt in its window writes one row, not three. In a surge nearly
every attempt comes from a network that makes no other, and its three new counter rows
were a third of the statement's time in PostgreSQL (issue 7, docs/performance.md). So
the network's own counter (the window across petitions) also keeps which petition its
window's first attempt was on, and when; that attempt is not added to its per-petition
counters, and a later attempt on the same petition within the same per-petition window
counts it as one more. Still exact: ordinal 1 of a network window is handed out once,
so every attempt is counted once, as a remembered first or in a per-petition counter.
It needs each per-petition window to lie within one network window, so their lengths
must divide the network window's (as they do by default); when they do not (`nested`),
every attempt is counted in every window, as before.

Why every attempt counts: if only stored signatures counted, a duplicate (someone who
already signed) would not count, and the limit would tell a stranger whether an address
has signed. Counting attempts makes a duplicate and a first signature cost the same.

Fixed windows can let through up to twice `limit` across a window boundary; that is
the price of one row per window instead of one row per attempt.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

from groundswell_runtime.client_address import client_network, site_network


class Window(NamedTuple):
    # A named tuple: `nested` is looked up by the policy's windows on every request,
    # and a dataclass's generated __hash__ is Python code.
    name: str
    limit: int
    seconds: int
    per_petition: bool
    site_wide: bool = False  # counted per IPv6 /48 instead of per client network


# What a hit's counter is: the network's own window across petitions (which remembers
# its window's first attempt), a per-petition window, or one counted as it comes (the
# IPv6 site's window; and the network's, when the per-petition windows do not nest in it).
NETWORK = "network"
PETITION = "petition"
PLAIN = "plain"


class Hit(NamedTuple):
    """One attempt's hit on one window's counter. A named tuple, not a dataclass: made
    three or four times for every signing request, and a frozen dataclass costs several
    times as much to make. Its fields are in the order of the group-commit statement's
    record (`signing.counter_hit`, after the attempt's ordinal)."""

    key: str
    window_start: int  # seconds since the epoch, a multiple of the window's length
    window_end: int
    limit: int
    kind: str  # NETWORK, PETITION or PLAIN
    at: int  # the attempt's second (a NETWORK counter keeps its first attempt's)

    @property
    def counter(self) -> tuple[str, int]:
        return (self.key, self.window_start)


@functools.lru_cache(maxsize=16)
def nested(windows: tuple[Window, ...]) -> bool:
    """Whether each per-petition window's length divides the network window's, so that
    each lies within one network window: only then can the network window remember its
    first attempt for them. Otherwise every attempt is counted in every window."""
    networks = [w for w in windows if not w.per_petition and not w.site_wide]
    return all(n.seconds % w.seconds == 0 for n in networks for w in windows if w.per_petition)


def hits_for(
    windows: Sequence[Window], petition_id: uuid.UUID, address: str | None, now: float
) -> list[Hit]:
    """The counters one attempt adds to; none when the caller's address is unknown."""
    if address is None:
        return []
    network = client_network(address)
    site = site_network(address)
    petition = str(petition_id)
    second = int(now)
    network_kind = NETWORK if nested(tuple(windows)) else PLAIN
    hits = []
    for window in windows:
        if window.site_wide:
            if site is None:
                continue  # IPv4: the client network is already the whole address
            who, kind = site, PLAIN
        else:
            who, kind = network, PETITION if window.per_petition else network_kind
        scope = petition if window.per_petition else "*"
        start = second // window.seconds * window.seconds
        hits.append(
            Hit(
                f"{window.name}:{scope}:{who}",
                start,
                start + window.seconds,
                window.limit,
                kind,
                second,
            )
        )
    return hits


@dataclass
class RateCounters:
    """The rule in memory, attempt after attempt: what `repository.WRITE_SIGNATURES` does
    with the counters table for a batch (a test holds the statement to it)."""

    hits: dict[tuple[str, int], int] = field(default_factory=dict)
    # A network counter's first attempt: the per-petition counters it was not added to.
    firsts: dict[tuple[str, int], frozenset[tuple[str, int]]] = field(default_factory=dict)

    def admit(self, attempts: Sequence[Sequence[Hit]], now: float) -> list[int | None]:
        """For each attempt, in arrival order: None if it is within every limit, else the
        seconds until the window that refused it ends (for Retry-After)."""
        verdicts: list[int | None] = []
        for hits in attempts:
            first: frozenset[tuple[str, int]] = frozenset()
            is_first = False
            for hit in hits:
                if hit.kind == NETWORK:
                    is_first = self._add(hit.counter) == 1
                    if is_first:
                        self.firsts[hit.counter] = frozenset(
                            h.counter for h in hits if h.kind == PETITION
                        )
                    first = self.firsts.get(hit.counter, frozenset())
            wait = 0
            for hit in hits:
                if hit.kind == NETWORK:
                    ordinal = self.hits[hit.counter]
                elif hit.kind == PETITION and is_first:
                    ordinal = 1  # the remembered first: its window holds nothing before it
                elif hit.kind == PETITION:
                    ordinal = self._add(hit.counter) + (hit.counter in first)
                else:
                    ordinal = self._add(hit.counter)
                if ordinal > hit.limit:
                    wait = max(wait, max(1, int(hit.window_end - now + 0.999)))
            verdicts.append(wait or None)
        return verdicts

    def _add(self, counter: tuple[str, int]) -> int:
        self.hits[counter] = self.hits.get(counter, 0) + 1
        return self.hits[counter]
