"""Two keys of one address shredded at the same time (an erasure shreds the signature's
key and its request's key together, and the mailer applies partitions concurrently): the
recipient row must still go once nothing refers to it."""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
from groundswell_mailer.adapters import keys
from groundswell_mailer.adapters import repository as repo
from groundswell_runtime.db import migrate


async def test_the_address_is_forgotten_when_its_last_two_keys_go_at_once(
    fresh_database: str,
) -> None:
    await migrate(fresh_database, repo.SCHEMA, repo.migrations())
    address = f"twice-{uuid.uuid4().hex[:8]}@example.org"
    signature, request = uuid.uuid4(), uuid.uuid4()
    first = await asyncpg.connect(fresh_database)
    second = await asyncpg.connect(fresh_database)
    try:
        await first.execute(
            "INSERT INTO mailer.recipients (address_key, unsubscribe_token, last_signature_id,"
            " last_petition_id) VALUES ($1, $2, $3, $3)",
            address,
            uuid.uuid4().hex,
            signature,
        )
        for key, kind in ((signature, "thank_you"), (request, "privacy_verification")):
            await first.execute(
                "INSERT INTO mailer.emails (signature_id, kind, sequence, petition_id,"
                " address_key, content, message_id, status) VALUES ($1, $2, 1, $1, $3, '{}',"
                " $4, 'sent')",
                key,
                kind,
                address,
                f"<{uuid.uuid4().hex}@test>",
            )

        first_done = asyncio.Event()
        commit_first = asyncio.Event()

        async def shred_first() -> None:
            async with first.transaction():
                await keys.shred(first, signature)
                first_done.set()
                await commit_first.wait()  # still open while the second shreds

        async def shred_second() -> None:
            await first_done.wait()
            async with second.transaction():
                await keys.shred(second, request)

        one = asyncio.create_task(shred_first())
        two = asyncio.create_task(shred_second())
        await first_done.wait()
        await asyncio.sleep(0.3)  # the second has started: it must wait, not decide
        commit_first.set()
        await asyncio.gather(one, two)
        left = await first.fetchval(
            "SELECT count(*) FROM mailer.recipients WHERE address_key = $1", address
        )
        assert left == 0
    finally:
        await first.close()
        await second.close()
