"""The facts the checks judge: PostgreSQL's rows, the count API against the tally, and
every dead letter on the broker. Read once per check round, after the stack is quiet."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition


@dataclass
class Facts:
    signatures: list[asyncpg.Record]
    share_links: dict[str, asyncpg.Record]  # by share code
    referrals: dict[Any, asyncpg.Record]  # by signature id
    bounce_emails: list[asyncpg.Record]
    counts: dict[str, tuple[dict[str, Any], dict[str, Any]]]  # slug -> (count API, tally)
    dead_letters: list[tuple[str, bytes]] = field(default_factory=list)


async def collect(
    database_url: str,
    counter: str,
    signing: str,
    admin_token: str,
    slugs: Sequence[str],
    bounces: Sequence[str],
    bootstrap: str | None,
) -> Facts:
    conn = await asyncpg.connect(database_url, timeout=10)
    try:
        signatures = await conn.fetch(
            "SELECT s.id, p.slug, lower(s.email) AS email, s.initial_status, s.share_code, "
            "s.ref, s.petition_id, s.confirmed_at IS NOT NULL AS confirmed, "
            "s.withdrawn_at IS NOT NULL OR s.invalidated_at IS NOT NULL AS void "
            "FROM signing.signatures s JOIN signing.petitions p ON p.id = s.petition_id "
            "WHERE p.slug = ANY($1)",
            list(slugs),
        )
        links = await conn.fetch("SELECT share_code, signature_id, status FROM sharing.share_links")
        referrals = await conn.fetch(
            "SELECT signature_id, share_code, status FROM sharing.referrals"
        )
        bounce_emails = await conn.fetch(
            "SELECT lower(s.email) AS email, e.kind, e.status, e.attempts FROM mailer.emails e "
            "JOIN signing.signatures s ON s.id = e.signature_id WHERE lower(s.email) = ANY($1)",
            [b.lower() for b in bounces],
        )
    finally:
        await conn.close()
    counts = {}
    async with httpx.AsyncClient(timeout=10) as client:
        for slug in slugs:
            count = await client.get(f"{counter}/api/petitions/{slug}/count")
            tally = await client.get(
                f"{signing}/api/admin/petitions/{slug}/tally",
                headers={"Authorization": f"Bearer {admin_token}"},
            )
            counts[slug] = (
                count.json() if count.status_code == 200 else {"status": count.status_code},
                tally.json(),
            )
    return Facts(
        list(signatures),
        {r["share_code"]: r for r in links},
        {r["signature_id"]: r for r in referrals},
        list(bounce_emails),
        counts,
        await read_dead_letters(bootstrap) if bootstrap else [],
    )


async def read_dead_letters(bootstrap: str, limit: float = 30) -> list[tuple[str, bytes]]:
    """Every record of every `<consumer>.dlq` topic, read outside any group."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=100,
    )
    await consumer.start()
    found: list[tuple[str, bytes]] = []
    try:
        topics = [t for t in await consumer.topics() if t.endswith(".dlq")]
        partitions = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        if not partitions:
            return found
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            for tp, records in batches.items():
                found.extend((tp.topic, r.value or b"") for r in records)
            # The high-water mark from Fetch, not ListOffsets (the local broker's is low).
            done = True
            for tp in partitions:
                high = consumer.highwater(tp)
                if high is None or await consumer.position(tp) < high:
                    done = False
            if done:
                return found
        raise TimeoutError("dead-letter topics not read to their end in time")
    finally:
        await consumer.stop()


async def settle(coro_factory: Any, attempts: int = 3) -> Any:
    """Run a read that can meet a restarting server a few times before giving up."""
    for attempt in range(attempts):
        try:
            return await coro_factory()
        except (OSError, asyncpg.PostgresError, httpx.HTTPError, TimeoutError):
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(2)
    return None
