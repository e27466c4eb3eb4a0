"""Sharing integration fixtures: the real app (in-process, lifespan run) against the
session's PostgreSQL and broker, and helpers to publish and observe."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI
from groundswell_contracts.events import (
    AnyEvent,
    BaseEvent,
    encode,
    parse_event,
    topic_for,
)
from groundswell_contracts.testing import Signed, signed
from groundswell_runtime.kafka import make_consumer, make_producer
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.entrypoints.http import create_app
from groundswell_stack.infra import Infra

from ...conftest import TEST_PARTITIONS, scratch_database

PUBLIC_BASE_URL = "http://signing.test"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"
ADMIN_TOKEN = "test-admin-token"
# The reverse proxy the tests pretend to be (TEST-NET-1): only its X-Forwarded-For counts.
PROXY = "192.0.2.1"


@dataclass
class RunningSharing:
    client: httpx.AsyncClient
    db: asyncpg.Pool
    settings: SharingSettings
    app: FastAPI

    def client_at(self, address: str) -> httpx.AsyncClient:
        """A client whose socket peer is `address` (the default client is 127.0.0.1).

        Clicks are counted per network with an hourly budget, so a test that counts clicks
        uses addresses of its own."""
        return _client(self.app, address)

    @contextlib.asynccontextmanager
    async def instance(self, **overrides: Any) -> AsyncIterator[RunningSharing]:
        """Another sharing app (its own lifespan and consumer group) on the same database:
        a second replica, or the same service after a restart."""
        settings = self.settings.model_copy(
            update={"consumer_group": f"sharing-test-{uuid.uuid4().hex[:8]}"} | overrides
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app), _client(app, "127.0.0.1") as client:
            yield RunningSharing(client, self.db, settings, app)


def _client(app: FastAPI, address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app, client=(address, 40000)),
        base_url="http://share.test",
        headers={"user-agent": BROWSER},
    )


@pytest.fixture(scope="module")
async def sharing(infra: Infra, topics: None) -> AsyncIterator[RunningSharing]:
    """The sharing app on a database of its own, shared by one module's tests."""
    async with scratch_database(infra, "sharing") as database_url:
        async for running in _running_sharing(database_url, infra):
            yield running


async def _running_sharing(database_url: str, infra: Infra) -> AsyncIterator[RunningSharing]:
    settings = SharingSettings(
        DATABASE_URL=database_url,
        KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap,
        KAFKA_TOPIC_PARTITIONS=TEST_PARTITIONS,
        PUBLIC_BASE_URL=PUBLIC_BASE_URL,
        # No SHARING_VISITOR_SALT: the salt is derived from the admin token, as in `make up`.
        ADMIN_TOKEN=ADMIN_TOKEN,
        TRUSTED_PROXIES=PROXY,
        # A group of its own: Tansu takes ~11 s to re-form a group a member just left.
        consumer_group=f"sharing-test-{uuid.uuid4().hex[:8]}",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        db = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            async with _client(app, "127.0.0.1") as client:
                yield RunningSharing(client, db, settings, app)
        finally:
            await db.close()


@pytest.fixture(scope="session")
async def sharing_producer(infra: Infra, topics: None) -> AsyncIterator[AIOKafkaProducer]:
    kafka = make_producer(infra.kafka_bootstrap, linger_ms=0)
    await kafka.start()
    try:
        yield kafka
    finally:
        await kafka.stop()


def new_signature(*, leaderboard_consent: bool = False, **overrides: Any) -> Signed:
    """A signature as signing publishes it; its first name reaches sharing only with
    the signer's consent to the organisers' leaderboard."""
    unique = uuid.uuid4().hex[:10]
    fields: dict[str, Any] = {
        "petition_id": uuid.uuid4(),
        "signature_id": uuid.uuid4(),
        "petition_slug": f"clean-rivers-{unique}",
        "petition_title": "Clean rivers now",
        "status": "signed",
        "email": f"s-{unique}@example.test",
        "name": f"Ada{unique[:4]} Lovelace",
        "contact_consent": False,
        "country": "GB",
        "share_code": f"c{unique}",
        "withdraw_token": f"w-{unique}",
    }
    fields.update(overrides)
    if leaderboard_consent:
        fields["leaderboard_name"] = fields["name"].split()[0]
    return signed(**fields)


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


async def topic_events(bootstrap: str, topic: str, timeout: float = 15.0) -> list[AnyEvent]:
    """Every event on a topic so far (no group: nothing is committed)."""
    consumer = make_consumer(bootstrap, None, topic)
    await consumer.start()
    events: list[AnyEvent] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for records in batch.values():
                events.extend(parse_event(r.value or b"") for r in records)
            partitions = consumer.assignment()
            # The high-water mark from Fetch is exact on Tansu (ListOffsets is not).
            caught_up = bool(partitions)
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    caught_up = False
            if (not batch and caught_up) or time.monotonic() > deadline:
                return events
    finally:
        await consumer.stop()


class Kit:
    """Helpers for test modules (conftest cannot be imported under importlib)."""

    eventually = staticmethod(eventually)
    signature = staticmethod(new_signature)
    topic_events = staticmethod(topic_events)
    browser = BROWSER
    public_base_url = PUBLIC_BASE_URL
    admin_token = ADMIN_TOKEN
    proxy = PROXY

    def __init__(self, infra: Infra, producer: AIOKafkaProducer) -> None:
        self.infra = infra
        self._producer = producer

    async def publish(self, event: BaseEvent | Signed) -> None:
        for one in event.events if isinstance(event, Signed) else [event]:
            await self._producer.send_and_wait(
                topic_for(one).value, encode(one), key=one.key.encode()
            )


@pytest.fixture
def kit(infra: Infra, sharing_producer: AIOKafkaProducer) -> Kit:
    return Kit(infra, sharing_producer)


async def link_exists(sharing: Any, code: str) -> bool:
    found = await sharing.db.fetchval(
        "SELECT true FROM sharing.share_links WHERE share_code = $1", code
    )
    return found is True


async def signed_up(kit: Any, sharing: Any, **overrides: Any) -> Any:
    """A signature published and stored by sharing (its link exists)."""
    event = kit.signature(**overrides)
    await kit.publish(event)

    async def stored() -> bool:
        return await link_exists(sharing, event.share_code)

    await kit.eventually(stored)
    return event


async def shares(sharing: Any, slug: str) -> dict[str, Any]:
    response = await sharing.client.get(f"/api/petitions/{slug}/shares")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body
