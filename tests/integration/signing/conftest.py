"""A signing service in-process (real PostgreSQL, real broker) with an HTTP client."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from groundswell_signing.config import SigningSettings
from groundswell_signing.entrypoints.http.app import create_app

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
        rows = await self.pool.fetch(
            "SELECT event_type, payload, correlation_id FROM signing.outbox ORDER BY id"
        )
        return [
            json.loads(r["payload"]) | {"_correlation_id": r["correlation_id"]}
            for r in rows
            if event_type is None or r["event_type"] == event_type
        ]


SettingsFactory = Callable[..., SigningSettings]


@pytest.fixture
def signing_settings(infra: Any, fresh_database: str) -> SettingsFactory:
    def make(**overrides: Any) -> SigningSettings:
        values: dict[str, Any] = {
            "ADMIN_TOKEN": ADMIN_TOKEN,
            "database_url": fresh_database,
            "kafka_bootstrap_servers": infra.kafka_bootstrap,
            "kafka_topic_partitions": 4,
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
        transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://signing.test") as client:
            yield SigningHarness(client, app.state.pool, settings)


@pytest.fixture
async def signing(topics: None, signing_settings: SettingsFactory) -> AsyncIterator[SigningHarness]:
    async for harness in start_harness(signing_settings()):
        yield harness
