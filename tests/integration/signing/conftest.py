"""A signing service in-process (real PostgreSQL, real broker) with an HTTP client."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
import uvicorn
from groundswell_contracts.sealed import SealedContact, associated_data, unseal
from groundswell_runtime import serving
from groundswell_signing.config import SigningSettings
from groundswell_signing.entrypoints.http.app import create_app

from ...conftest import TEST_PARTITIONS

ADMIN_TOKEN = "test-admin-token-0123456789abcdefghij"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


@dataclass
class SigningHarness:
    client: httpx.AsyncClient
    pool: asyncpg.Pool
    settings: SigningSettings

    async def create_petition(self, **overrides: Any) -> dict[str, Any]:
        body = {
            "slug": f"p-{uuid.uuid4().hex[:10]}",
            "title": "Let local public health teams run contact tracing",
            "target": "The Secretary of State for Health",
            "body": "Local teams know their communities.\n\nFund them, not contractors.",
            "requires_confirmation": False,
        } | overrides
        response = await self.client.post("/api/admin/petitions", json=body, headers=ADMIN)
        assert response.status_code == 201, response.text
        return dict(response.json())

    async def sign(self, slug: str, **overrides: Any) -> httpx.Response:
        body = {
            "name": "Ada Lovelace",
            "email": f"ada-{uuid.uuid4().hex[:8]}@example.org",
            "postcode": "OX1 2JD",
            "country": "GB",
            "contact_consent": True,
        } | overrides
        return await self.client.post(f"/api/petitions/{slug}/signatures", json=body)

    async def outbox_events(self, event_type: str | None = None) -> list[dict[str, Any]]:
        """Every event the service has queued (the relay deletes rows once published, so
        they are read from the copy `start_harness` keeps), with any sealed contact opened
        as the mailer would open it: its fields join the document."""
        rows = await self.pool.fetch(
            "SELECT event_type, payload, correlation_id FROM signing.outbox_seen ORDER BY id"
        )
        events = []
        for r in rows:
            if event_type is not None and r["event_type"] != event_type:
                continue
            document = json.loads(r["payload"]) | {"_correlation_id": r["correlation_id"]}
            events.append(await self._opened(document))
        return events

    async def _opened(self, document: dict[str, Any]) -> dict[str, Any]:
        sealed = document.get("contact")
        if not sealed:
            return document
        contact = SealedContact.model_validate(sealed)
        key = await self.pool.fetchval(
            "SELECT data_key FROM signing.signatures WHERE id = $1 UNION ALL "
            "SELECT data_key FROM signing.privacy_requests WHERE id = $1",
            contact.key_id,
        )
        if key is None:  # erased since
            return document
        aad = associated_data(document["event_type"], uuid.UUID(document["event_id"]))
        return document | unseal(contact, key, aad).model_dump()


SettingsFactory = Callable[..., SigningSettings]


@pytest.fixture
def signing_settings(infra: Any, fresh_database: str) -> SettingsFactory:
    def make(**overrides: Any) -> SigningSettings:
        values: dict[str, Any] = {
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "database_url": fresh_database,
            "kafka_bootstrap_servers": infra.kafka_bootstrap,
            "kafka_topic_partitions": TEST_PARTITIONS,
            # Tests sign many times from one address; the rate-limit tests lower these.
            "rate_burst_count": 10_000,
            "rate_sustained_count": 10_000,
            "rate_global_count": 10_000,
        } | overrides
        return SigningSettings(**values)

    return make


async def start_harness(settings: SigningSettings) -> AsyncIterator[SigningHarness]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        await _keep_outbox_copy(app.state.service.pool)
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://signing.test") as client:
            yield SigningHarness(client, app.state.service.pool, settings)


@contextlib.asynccontextmanager
async def on_a_free_port(app: Any, **overrides: Any) -> AsyncIterator[int]:
    """`app` on a free port of this loop, as `serving.serve` runs it (`overrides` win);
    yields the port."""
    config = serving.server_config(app, host="127.0.0.1", port=0, lifespan="off", **overrides)
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.02)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task


async def _keep_outbox_copy(pool: Any) -> None:
    """Tests read what was queued after the relay has published (and deleted) it: a
    trigger keeps a copy of every outbox row in this test database."""
    async with pool.acquire() as conn:
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS signing.outbox_seen (LIKE signing.outbox); "
            "CREATE OR REPLACE FUNCTION signing.keep_outbox_copy() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "INSERT INTO signing.outbox_seen SELECT NEW.*; RETURN NEW; END $$; "
            "CREATE OR REPLACE TRIGGER keep_outbox_copy AFTER INSERT ON signing.outbox "
            "FOR EACH ROW EXECUTE FUNCTION signing.keep_outbox_copy();"
        )


@pytest.fixture
async def signing(topics: None, signing_settings: SettingsFactory) -> AsyncIterator[SigningHarness]:
    async for harness in start_harness(signing_settings()):
        yield harness
