"""The retention job against real PostgreSQL (and a real broker for the relay), with a
frozen clock: every run is given `NOW`, and the rows' ages are set relative to it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from groundswell_runtime.db import create_pool
from groundswell_runtime.outbox import OutboxRelay
from groundswell_signing.adapters import repository
from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.config import SigningSettings
from groundswell_signing.service_layer.retention import RetentionPolicy, run_retention

from .conftest import ADMIN_TOKEN, SettingsFactory, start_harness

NOW = datetime(2027, 3, 1, 12, 0, tzinfo=UTC)
POLICY = RetentionPolicy()  # the defaults: 183 days after close, 30 days unconfirmed
NOTHING = {
    "petitions_anonymised": 0,
    "signatures_anonymised": 0,
    "unconfirmed_erased": 0,
    "unconfirmed_deleted": 0,
    "unconfirmed_awaiting_publication": 0,
    "privacy_requests_deleted": 0,
    "rate_counters_deleted": 0,
}


async def _sign_up(settings: SigningSettings) -> dict[str, Any]:
    """Petitions and signatures made through the real service; returns their ids. The
    service (and its outbox relay) stops before retention runs, so the events retention
    queues stay in the outbox to be read."""
    made: dict[str, Any] = {}
    async for signing in start_harness(settings):
        long_closed = await signing.create_petition()
        recently_closed = await signing.create_petition()
        confirming = await signing.create_petition(requires_confirmation=True)
        for petition, people in ((long_closed, 3), (recently_closed, 2), (confirming, 3)):
            for _ in range(people):
                assert (await signing.sign(petition["slug"])).status_code == 202
        made = {
            "long_closed": uuid.UUID(long_closed["id"]),
            "recently_closed": uuid.UUID(recently_closed["id"]),
            "confirming": uuid.UUID(confirming["id"]),
            "confirming_slug": confirming["slug"],
        }
    return made


async def _ids(pool: asyncpg.Pool, petition_id: uuid.UUID) -> list[uuid.UUID]:
    rows = await pool.fetch(
        "SELECT id FROM signing.signatures WHERE petition_id = $1 ORDER BY created_at, id",
        petition_id,
    )
    return [r["id"] for r in rows]


async def _outbox(pool: asyncpg.Pool, after_id: int) -> list[tuple[str, dict[str, Any]]]:
    rows = await pool.fetch(
        "SELECT event_type, payload FROM signing.outbox WHERE id > $1 ORDER BY id", after_id
    )
    return [(r["event_type"], json.loads(r["payload"])) for r in rows]


@pytest.fixture
async def world(
    topics: None, signing_settings: SettingsFactory
) -> AsyncIterator[tuple[asyncpg.Pool, dict[str, Any], SigningSettings]]:
    settings = signing_settings()
    made = await _sign_up(settings)
    pool = await create_pool(settings.database_url, max_size=4)
    # The clock: one petition closed 7 months before NOW, one 5 months; on the petition
    # that asks for confirmation, one signature 31 days old, one 29 (both unconfirmed,
    # links long expired) and one 31 days old but confirmed.
    await pool.execute(
        "UPDATE signing.petitions SET status = 'closed', updated_at = $2 WHERE id = $1",
        made["long_closed"],
        NOW - timedelta(days=213),
    )
    await pool.execute(
        "UPDATE signing.petitions SET status = 'closed', updated_at = $2, closes_at = $3 "
        "WHERE id = $1",
        made["recently_closed"],
        NOW - timedelta(days=152),
        NOW - timedelta(days=160),
    )
    old, young, confirmed = await _ids(pool, made["confirming"])
    for signature_id, age in ((old, 31), (young, 29), (confirmed, 31)):
        created = NOW - timedelta(days=age)
        await pool.execute(
            "UPDATE signing.signatures SET created_at = $2, consent_at = $2, "
            "confirmation_expires_at = $2::timestamptz + interval '72 hours' WHERE id = $1",
            signature_id,
            created,
        )
    await pool.execute(
        "UPDATE signing.signatures SET confirmed_at = created_at + interval '1 hour', "
        "confirmation_token_hash = NULL WHERE id = $1",
        confirmed,
    )
    made |= {"old": old, "young": young, "confirmed": confirmed}
    # Signing's own rate-limit windows (real time, long ended by NOW) are not this
    # test's subject; the test of that rule makes its own.
    await pool.execute("DELETE FROM signing.rate_counters")
    try:
        yield pool, made, settings
    finally:
        await pool.close()


async def _publish_everything(pool: asyncpg.Pool, bootstrap: str) -> None:
    """What the running service's relay does: publish the outbox to the broker (and so
    empty it). The real relay, run until nothing is left."""
    relay = OutboxRelay(pool, SCHEMA, bootstrap)
    try:
        while await relay.publish_batch():
            pass
    finally:
        await relay.stop()


async def test_retention_anonymises_closed_deletes_unconfirmed_and_is_idempotent(
    world: tuple[asyncpg.Pool, dict[str, Any], SigningSettings], infra: Any
) -> None:
    pool, made, _ = world
    mark = int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM signing.outbox"))
    long_closed = await _ids(pool, made["long_closed"])
    recently_closed_before = await pool.fetch(
        "SELECT * FROM signing.signatures WHERE petition_id = $1 ORDER BY id",
        made["recently_closed"],
    )
    async with pool.acquire() as conn:
        assert await repository.tally(conn, made["confirming"]) == {"signatures": 1, "pending": 2}

    first = await run_retention(pool, POLICY, NOW)

    assert first.counts() == NOTHING | {
        "petitions_anonymised": 1,
        "signatures_anonymised": 3,
        "unconfirmed_erased": 1,
        "unconfirmed_awaiting_publication": 1,
    }
    # Closed 7 months ago: nothing that names anyone is left, the keys are shredded,
    # and the signatures still count.
    rows = await pool.fetch(
        "SELECT * FROM signing.signatures WHERE petition_id = $1", made["long_closed"]
    )
    assert len(rows) == 3
    for row in rows:
        assert row["name"] is None and row["email"] is None
        assert row["postcode"] is None and row["ip"] is None
        assert row["data_key"] is None and row["contact_consent"] is False
        assert row["confirmation_token_hash"] is None
        assert row["email_canonical"] == f"erased:{row['id']}"
        assert row["erased_at"] == NOW and row["withdrawn_at"] is None
    events = await _outbox(pool, mark)
    shredded = {uuid.UUID(e["key_id"]) for t, e in events if t == "DataKeyShredded"}
    erased = {uuid.UUID(e["signature_id"]): e for t, e in events if t == "SignatureErased"}
    assert set(long_closed) <= shredded and set(long_closed) <= set(erased)
    assert all(erased[s]["counted"] is True for s in long_closed)
    # Closed 5 months ago: untouched.
    recently_closed_after = await pool.fetch(
        "SELECT * FROM signing.signatures WHERE petition_id = $1 ORDER BY id",
        made["recently_closed"],
    )
    assert recently_closed_after == recently_closed_before
    assert all(r["name"] and r["data_key"] for r in recently_closed_after)
    # Unconfirmed for 31 days: erased and withdrawn now, so every count drops it...
    old = await pool.fetchrow("SELECT * FROM signing.signatures WHERE id = $1", made["old"])
    assert old["email"] is None and old["data_key"] is None and old["withdrawn_at"] == NOW
    withdrawn = [e for t, e in events if t == "SignatureWithdrawn"]
    assert [uuid.UUID(e["signature_id"]) for e in withdrawn] == [made["old"]]
    assert made["old"] in shredded and erased[made["old"]]["counted"] is False
    async with pool.acquire() as conn:
        assert await repository.tally(conn, made["confirming"]) == {"signatures": 1, "pending": 1}
    # ...and deleted once those events are published (the relay empties the outbox).
    await _publish_everything(pool, infra.kafka_bootstrap)
    second = await run_retention(pool, POLICY, NOW)
    assert second.counts() == NOTHING | {"unconfirmed_deleted": 1}
    remaining = set(await _ids(pool, made["confirming"]))
    assert remaining == {made["young"], made["confirmed"]}
    # 29 days old, and the confirmed one: untouched.
    for signature_id in (made["young"], made["confirmed"]):
        row = await pool.fetchrow("SELECT * FROM signing.signatures WHERE id = $1", signature_id)
        assert row["email"] and row["data_key"] and row["erased_at"] is None
    async with pool.acquire() as conn:
        assert await repository.tally(conn, made["confirming"]) == {"signatures": 1, "pending": 1}

    # A third run finds nothing to do and queues nothing.
    mark = int(await pool.fetchval("SELECT coalesce(max(id), 0) FROM signing.outbox"))
    third = await run_retention(pool, POLICY, NOW)
    assert third.counts() == NOTHING
    assert await _outbox(pool, mark) == []


async def test_retention_prunes_privacy_requests_and_ended_rate_windows(
    world: tuple[asyncpg.Pool, dict[str, Any], SigningSettings],
) -> None:
    pool, _, _ = world
    requests = {
        "done_long_ago": (NOW - timedelta(days=40), NOW - timedelta(days=31)),
        "done_recently": (NOW - timedelta(days=40), NOW - timedelta(days=29)),
        "expired_long_ago": (NOW - timedelta(days=31), None),
        "open": (NOW + timedelta(days=1), None),
    }
    ids = {}
    for name, (expires_at, completed_at) in requests.items():
        ids[name] = uuid.uuid4()
        await pool.execute(
            "INSERT INTO signing.privacy_requests (id, kind, email_canonical, source, "
            "created_at, expires_at, completed_at) VALUES ($1, 'erasure', NULL, 'web', "
            "$2, $2, $3)",
            ids[name],
            expires_at,
            completed_at,
        )
    now_s = int(NOW.timestamp())
    await pool.executemany(
        "INSERT INTO signing.rate_counters (key, window_start, window_end, hits) "
        "VALUES ($1, $2, $3, 1)",
        [("ended", now_s - 600, now_s - 300), ("current", now_s - 60, now_s + 240)],
    )
    # A batch of 1 row per transaction: the loop must still get through all of them.
    result = await run_retention(pool, RetentionPolicy(batch_size=1), NOW)
    assert result.privacy_requests_deleted == 2 and result.rate_counters_deleted == 1
    left = {r["id"] for r in await pool.fetch("SELECT id FROM signing.privacy_requests")}
    assert left == {ids["done_recently"], ids["open"]}
    assert [r["key"] for r in await pool.fetch("SELECT key FROM signing.rate_counters")] == [
        "current"
    ]


def test_the_command_reports_prometheus_text_and_counts_only(
    world: tuple[asyncpg.Pool, dict[str, Any], SigningSettings], tmp_path: Path
) -> None:
    """`groundswell-signing retention` as cron runs it: a process of its own, today's clock."""
    _, _, settings = world
    metrics = tmp_path / "textfile" / "groundswell-signing-retention.prom"
    script = Path(sys.executable).parent / "groundswell-signing"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")} | {
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
    }
    done = subprocess.run(
        [str(script), "retention", "--metrics-file", str(metrics)],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    text = metrics.read_text()
    assert 'groundswell_retention_rows{action="signatures_anonymised",service="signing"}' in text
    assert 'groundswell_retention_last_run_timestamp_seconds{service="signing"}' in text
    assert text in done.stdout
    lines = [json.loads(x) for x in done.stdout.splitlines() if x.startswith("{")]
    [line] = [x for x in lines if x["event"] == "retention_run"]
    assert line["service"] == "signing"
    # Counts only: no address, name or signature id in the line.
    assert "@" not in done.stdout and "example.org" not in done.stdout
    assert line["unconfirmed_deleted"] == 0
