"""Group commit's one statement (`repository.write_signatures`) against a real PostgreSQL:
it admits exactly as the rule in `domain/rate_limits.admit` says, and it is planned
without nested loops on the writer's connections."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from groundswell_runtime.outbox import notify_channel
from groundswell_signing.adapters.repository import (
    SCHEMA,
    WRITE_SIGNATURES,
    WRITER_SETTINGS,
    SignatureBatch,
    write_signatures,
)
from groundswell_signing.domain.rate_limits import Hit, added_hits, admit

from .conftest import SigningHarness

NOW = datetime.now(UTC)
EPOCH = NOW.timestamp()
START = int(EPOCH) // 3600 * 3600
LIMITS = {"burst": 3, "hour": 10, "site": 25}  # one limit per window, as in production


def row(petition_id: uuid.UUID) -> dict[str, Any]:
    n = uuid.uuid4()
    return {
        "id": n,
        "petition_id": petition_id,
        "name": "Ada",
        "email": f"{n.hex}@example.org",
        "email_canonical": f"{n.hex}@example.org",
        "email_domain": "example.org",
        "postcode": None,
        "postcode_area": None,
        "country": "GB",
        "contact_consent": False,
        "consent_wording_version": "v1",
        "consent_at": NOW,
        "source": None,
        "ref": None,
        "ref_channel": None,
        "share_code": n.hex[:12],
        "initial_status": "signed",
        "confirmation_token_hash": None,
        "confirmation_expires_at": None,
        "withdraw_token_hash": n.bytes,
        "ip": "198.51.100.7",
        "created_at": NOW,
        "data_key": None,
        "leaderboard_consent": False,
    }


async def test_the_statement_admits_exactly_as_the_rule_does(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    petition_id = uuid.UUID(petition["id"])
    rng = random.Random(20261202)
    totals: dict[tuple[str, int], int] = {}
    admitted = refused = 0
    for _ in range(25):
        hits = [
            [
                Hit(f"{window}:test", START, LIMITS[window], START + 3600)
                for window in rng.sample(sorted(LIMITS), rng.randint(0, 3))
            ]
            for _ in range(rng.randint(1, 12))
        ]
        for counter, n in added_hits(hits).items():
            totals[counter] = totals.get(counter, 0) + n
        expected = admit(hits, totals, EPOCH)
        async with signing.pool.acquire() as conn:
            batch = SignatureBatch([row(petition_id) for _ in hits], hits, NOW, False, [])
            written = await write_signatures(conn, batch)
        waits = [
            None if w.over_limit_until is None else max(1, int(w.over_limit_until - EPOCH + 0.999))
            for w in written
        ]
        assert waits == expected
        assert [w.inserted for w in written] == [wait is None for wait in expected]
        assert all(w.open for w in written)
        admitted += expected.count(None)
        refused += len(expected) - expected.count(None)
    assert admitted and refused  # both verdicts were exercised
    stored = await signing.pool.fetchval(
        "SELECT count(*) FROM signing.signatures WHERE petition_id = $1", petition_id
    )
    assert stored == admitted


async def test_the_writer_connections_plan_it_without_nested_loops(
    signing: SigningHarness,
) -> None:
    """The planner cannot count arrays and CTEs (it guesses a few rows each): in a generic
    plan it joined them by nested loops, 0.4-0.8 s for a batch of a few hundred."""
    parameters = len(SignatureBatch([], [], NOW, False, []).arguments())

    async def nested_loops_over_arrays(settings: dict[str, str]) -> list[str]:
        """The plan asyncpg's prepared statement gets after a few runs (a generic one):
        each nested loop whose inner side is a CTE or an array, run again per outer row."""
        async with signing.pool.acquire() as conn, conn.transaction():
            await conn.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            for name, value in settings.items():
                await conn.execute(f"SET LOCAL {name} = {value}")
            await conn.execute("PREPARE write_signatures AS " + WRITE_SIGNATURES)
            nulls = ", ".join(["NULL"] * parameters)  # a generic plan does not use them
            explained = await conn.fetchval(
                f"EXPLAIN (FORMAT JSON) EXECUTE write_signatures({nulls})"
            )
            await conn.execute("DEALLOCATE write_signatures")
        found = []
        nodes = [json.loads(explained)[0]["Plan"]]
        while nodes:
            node = nodes.pop()
            children = node.get("Plans", [])
            nodes.extend(children)
            if node["Node Type"] == "Nested Loop":
                inner = next(c for c in children if c["Parent Relationship"] == "Inner")
                if inner["Node Type"] in ("CTE Scan", "Function Scan"):
                    found.append(inner.get("CTE Name") or inner.get("Alias", "?"))
        return found

    assert await nested_loops_over_arrays({})  # what the settings are for
    assert await nested_loops_over_arrays(WRITER_SETTINGS) == []


async def test_the_relay_is_woken_after_a_batch_commits(signing: SigningHarness) -> None:
    """The statement itself sends no NOTIFY (it would make the commit wait for every other
    NOTIFYing commit in the cluster); the writer wakes the relay after the commit."""
    listener = await asyncpg.connect(signing.settings.database_url)
    heard = asyncio.Event()
    await listener.add_listener(notify_channel(SCHEMA), lambda *_: heard.set())
    try:
        petition = await signing.create_petition()
        await asyncio.sleep(0.3)
        heard.clear()  # the petition's own events
        response = await signing.sign(petition["slug"])
        assert response.status_code == 202, response.text
        await asyncio.wait_for(heard.wait(), timeout=2)
    finally:
        await listener.close()
    assert "pg_notify" not in WRITE_SIGNATURES
