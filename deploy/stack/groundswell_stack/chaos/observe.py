"""What the chaos run looks at between faults: whether a probe went all the way through,
and whether anything is still on its way (outboxes, emails, consumer lag, counts)."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import asyncpg
import httpx
from aiokafka.errors import KafkaError
from groundswell_ops.cluster import Cluster
from groundswell_ops.errors import OpsError

from groundswell_stack.chaos.load import MailLog
from groundswell_stack.chaos.stack import SERVICES, ChaosStack

# What each consumer group reads: quiet means each has committed up to the end. Not the
# counter: faust commits a batch only when the next one is asked for, so an idle
# counter's commit trails by up to a batch; its quiet is "count = PostgreSQL".
GROUP_TOPICS = {
    "mailer": ("signatures",),
    "sharing": ("petitions", "signatures"),
}


class Observer:
    def __init__(self, stack: ChaosStack, mail: MailLog, slugs: list[str], probe_slug: str) -> None:
        self.stack = stack
        self.mail = mail
        self.slugs = slugs
        self.probe_slug = probe_slug

    async def through(self, address: str) -> bool:
        try:
            async with httpx.AsyncClient(timeout=3) as client:
                for service in SERVICES:
                    if (await client.get(f"{self.stack.url(service)}/readyz")).status_code != 200:
                        return False
                count = await client.get(
                    f"{self.stack.url('counter')}/api/petitions/{self.probe_slug}/count"
                )
                tally = await client.get(
                    f"{self.stack.url('signing')}/api/admin/petitions/{self.probe_slug}/tally",
                    headers={"Authorization": f"Bearer {self.stack.admin_token}"},
                )
            if count.status_code != 200 or tally.status_code != 200:
                return False
            if count.json()["signatures"] != tally.json()["signatures"]:
                return False
            self.mail.read()
            if not self.mail.delivered_to(address, "thank_you"):
                return False
            conn = await asyncpg.connect(self.stack.database_url, timeout=3)
            try:
                return bool(
                    await conn.fetchval(
                        "SELECT count(*) FROM sharing.share_links l JOIN signing.signatures s "
                        "ON s.share_code = l.share_code WHERE lower(s.email) = $1",
                        address.lower(),
                    )
                )
            finally:
                await conn.close()
        except (OSError, httpx.HTTPError, asyncpg.PostgresError, TimeoutError, ValueError):
            return False

    async def state(self) -> tuple[Any, ...] | None:
        try:
            conn = await asyncpg.connect(self.stack.database_url, timeout=3)
            try:
                outboxes = [
                    await conn.fetchval(
                        f"SELECT count(*) FROM {schema}.outbox WHERE published_at IS NULL"
                    )
                    for schema in ("signing", "mailer", "sharing")
                ]
                emails = await conn.fetchval(
                    "SELECT count(*) FROM mailer.emails WHERE status IN ('queued', 'sending')"
                )
                signers = await conn.fetchval(
                    "SELECT count(*) FROM signing.signatures WHERE initial_status <> 'fraudulent'"
                )
                links = await conn.fetchval("SELECT count(*) FROM sharing.share_links")
            finally:
                await conn.close()
            figures = []
            async with httpx.AsyncClient(timeout=3) as client:
                for slug in [*self.slugs, self.probe_slug]:
                    count = (
                        await client.get(f"{self.stack.url('counter')}/api/petitions/{slug}/count")
                    ).json()
                    tally = (
                        await client.get(
                            f"{self.stack.url('signing')}/api/admin/petitions/{slug}/tally",
                            headers={"Authorization": f"Bearer {self.stack.admin_token}"},
                        )
                    ).json()
                    figures.append(
                        (
                            count.get("signatures"),
                            count.get("pending"),
                            tally["signatures"],
                            tally["pending"],
                        )
                    )
            lag = await self.lag()
            self.mail.read()
            return (
                lag,
                tuple(outboxes),
                emails,
                signers,
                links,
                tuple(figures),
                len(self.mail.delivered),
            )
        except (
            OSError,
            httpx.HTTPError,
            asyncpg.PostgresError,
            TimeoutError,
            ValueError,
            KeyError,
            OpsError,
            KafkaError,
        ):
            return None

    async def lag(self) -> int:
        """Records not yet committed by the consumer groups, summed."""
        async with Cluster(self.stack.bootstrap) as cluster:
            topics = sorted({t for ts in GROUP_TOPICS.values() for t in ts})
            layouts = await cluster.layout(topics)
            partitions = [tp for layout in layouts.values() for tp in layout.partitions]
            ends = await cluster.end_offsets(partitions)
            lag = 0
            for group, wanted in GROUP_TOPICS.items():
                mine = [tp for tp in partitions if tp[0] in wanted]
                committed = await cluster.committed(group, mine)
                lag += sum(ends[tp] - max(committed[tp], 0) for tp in mine)
            return lag

    async def wait_for_database(self, limit: float) -> None:
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            try:
                conn = await asyncpg.connect(self.stack.database_url, timeout=2)
                await conn.close()
                return
            except (OSError, asyncpg.PostgresError, TimeoutError):
                await asyncio.sleep(0.2)
        raise TimeoutError("PostgreSQL did not come back")


def settled(state: tuple[Any, ...]) -> bool:
    lag, outboxes, emails, signers, links, figures, _ = state
    return (
        lag == 0
        and not any(outboxes)
        and emails == 0
        and signers == links
        and all(c == t and p == tp for c, p, t, tp in figures)
    )
