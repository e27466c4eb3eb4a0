"""Group commit's one statement (`repository.write_signatures`) against a real PostgreSQL:
it admits exactly as the rule in `domain/rate_limits.RateCounters` says, and it is planned
without nested loops on the writer's connections."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest
from groundswell_runtime.outbox import notify_channel
from groundswell_signing.adapters.repository import (
    SCHEMA,
    WRITE_SIGNATURES,
    WRITER_SETTINGS,
    SignatureBatch,
    write_signatures,
)
from groundswell_signing.domain.rate_limits import RateCounters, Window, hits_for, nested

from .conftest import SigningHarness

NOW = datetime.now(UTC)
EPOCH = NOW.timestamp()
START = int(EPOCH) // 3600 * 3600
# Production's four kinds of window, with limits small enough to be reached.
WINDOWS = (
    Window("burst", 2, 60, per_petition=True),
    Window("sustained", 4, 300, per_petition=True),
    Window("global", 7, 600, per_petition=False),
    Window("site", 12, 600, per_petition=False, site_wide=True),
)


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


# The same with a burst window that does not divide the network window: nothing is
# remembered, every attempt counts in every window.
UNNESTED = (Window("burst", 2, 90, per_petition=True), *WINDOWS[1:])


@pytest.mark.parametrize("windows", [WINDOWS, UNNESTED], ids=["nested", "unnested"])
async def test_the_statement_admits_exactly_as_the_rule_does(
    signing: SigningHarness, windows: tuple[Window, ...]
) -> None:
    """Random batches from a few networks (IPv4, and IPv6 /64s sharing a /48) on two
    petitions, over twenty minutes: each network window's first attempt remembered,
    later ones counted per petition, windows ending and starting."""
    assert nested(windows) == (windows is WINDOWS)
    petitions = [
        uuid.UUID((await signing.create_petition(requires_confirmation=False))["id"])
        for _ in range(2)
    ]
    rng = random.Random(20261204)
    unique = uuid.uuid4().bytes  # addresses no other test has counted
    addresses = [f"10.{unique[0]}.{unique[1]}.{n}" for n in range(3)] + [
        f"2001:db8:{unique[2]:x}{unique[3]:02x}:{n}::1" for n in range(3)
    ]
    counters = RateCounters()
    admitted = refused = 0
    for batch in range(40):
        attempts = []
        for _ in range(rng.randint(1, 12)):
            second = START + batch * 30 + rng.randint(0, 40)
            petition = rng.choice(petitions)
            hits = hits_for(windows, petition, rng.choice(addresses), second + 0.5)
            attempts.append((petition, hits))
        expected = counters.admit([hits for _, hits in attempts], EPOCH)
        async with signing.pool.acquire() as conn:
            rows = [row(petition) for petition, _ in attempts]
            batch_ = SignatureBatch(rows, [hits for _, hits in attempts], NOW, False, [])
            written = await write_signatures(conn, batch_)
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
        "SELECT count(*) FROM signing.signatures WHERE petition_id = ANY($1::uuid[])", petitions
    )
    assert stored == admitted
    # The table holds exactly the rule's counters: a network window's first attempt was
    # remembered by the network counter, not added to per-petition ones.
    networks = {key.split(":", 2)[2] for key, _ in counters.hits}
    table = await signing.pool.fetch(
        "SELECT key, window_start, hits FROM signing.rate_counters WHERE key LIKE ANY($1)",
        [f"%:{network}" for network in networks],
    )
    assert {(r["key"], r["window_start"]): r["hits"] for r in table} == counters.hits


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
