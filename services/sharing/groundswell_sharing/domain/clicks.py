"""Which clicks on a share link count, and how long a not-yet-known link is waited for.

A click counts when a person (not a link-preview robot) follows a link, their network has
not clicked that link yet today, and their network (and, for IPv6, their /48 site) has
not used up its hourly budget of counted clicks across all links. The redirect never
depends on any of this: only the counting does.

Why the counts hold (the adapter keeps these):
- Once per (link, network, day): the clicks table is unique on (share_code,
  visitor_hash, clicked_on) and the visitor hash is a function of (salt, day, network)
  only, so no header a client controls can make a second row.
- At most `per_network_hour` counted clicks in any rolling hour per network (and
  `per_site_hour` per IPv6 site): the count of a bucket's clicks in the last hour and the
  insert run in one transaction holding a lock on that bucket, so two concurrent clicks
  from one bucket cannot both see the last free slot. The window may cross midnight, so
  both days' hashes are counted.
- A click on a link sharing has not heard of yet is kept as pending under the same two
  rules and moved into the clicks table (same unique key) when the link's
  `SignatureCreated` arrives, so it counts once, however the retries and the event
  interleave.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from groundswell_runtime.client_address import client_network, site_network

from groundswell_sharing.domain.visitors import visitor_hash

WINDOW = timedelta(hours=1)
# A pending click whose link never turns up is forgotten after this long.
PENDING_TTL = timedelta(days=1)


class Outcome(enum.StrEnum):
    COUNTED = "counted"
    PENDING = "pending"  # kept until the link's SignatureCreated arrives
    REPEAT = "repeat"  # this network already clicked this link today
    LIMITED = "limited"  # over the network's (or site's) hourly budget
    ROBOT = "robot"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class ClickBudget:
    per_network_hour: int
    per_site_hour: int


@dataclass(frozen=True)
class Visitor:
    """A caller as sharing keeps it: day-scoped hashes, never the address.

    `network` (today's hash) is the dedupe key; the `window_*` tuples hold today's and
    yesterday's hashes, which the hourly budget counts. `site` is None for IPv4.
    """

    network: str
    site: str | None
    window_networks: tuple[str, ...]
    window_sites: tuple[str, ...]

    @property
    def lock_key(self) -> str:
        # The widest bucket: a site's clicks are serialised together with its networks'.
        return self.site or self.network


def visitor(salt: bytes, address: str | None, at: datetime) -> Visitor:
    network = client_network(address) if address else None
    site = site_network(address) if address else None
    days = (at.date(), (at - WINDOW).date())
    networks = tuple(dict.fromkeys(visitor_hash(salt, d, "network", network) for d in days))
    sites = tuple(dict.fromkeys(visitor_hash(salt, d, "site", site) for d in days)) if site else ()
    return Visitor(
        network=networks[0],
        site=sites[0] if sites else None,
        window_networks=networks,
        window_sites=sites,
    )


def decide(
    *, seen_today: bool, network_clicks: int, site_clicks: int, budget: ClickBudget
) -> Outcome:
    """COUNTED, REPEAT or LIMITED for a person's click (the caller maps COUNTED to PENDING
    for a link not known yet). A repeat is checked first: it costs no budget."""
    if seen_today:
        return Outcome.REPEAT
    if network_clicks >= budget.per_network_hour or site_clicks >= budget.per_site_hour:
        return Outcome.LIMITED
    return Outcome.COUNTED


def wait_delay(attempt: int) -> int:
    """Seconds before retry `attempt + 1` of a link not known yet: 1, 1, 2, 2, 3, 3, ... 5."""
    return min(1 + attempt // 2, 5)


def total_wait(attempts: int) -> int:
    """How long a link is waited for, in seconds, before it is called unknown."""
    return sum(wait_delay(a) for a in range(attempts))
