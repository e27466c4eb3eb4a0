"""Mailer integration fixtures: the real app (in-process, lifespan run) against the
session's PostgreSQL, broker and SMTP sink, and helpers to publish and observe."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from aiokafka import AIOKafkaProducer
from aiosmtpd.controller import Controller
from groundswell_contracts.events import (
    AnyEvent,
    BaseEvent,
    encode,
    parse_event,
    topic_for,
)
from groundswell_contracts.testing import Signed, signed
from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.entrypoints.dispatcher import Dispatcher
from groundswell_mailer.entrypoints.http import create_app
from groundswell_runtime.db import migrate
from groundswell_runtime.kafka import make_consumer, make_producer
from groundswell_runtime.surge_yield import SurgeYield
from groundswell_stack.infra import Infra
from groundswell_stack.processes import free_port

from ...conftest import TEST_PARTITIONS, scratch_database

PUBLIC_BASE_URL = "http://signing.test"
SHARE_BASE_URL = "http://share.test"
MAILER_PUBLIC_URL = "http://mailer.test"


@dataclass
class RunningMailer:
    client: httpx.AsyncClient
    db: asyncpg.Pool
    settings: MailerSettings


@asynccontextmanager
async def running_mailer(
    infra: Infra, smtp_host: str, smtp_port: int, **overrides: Any
) -> AsyncIterator[RunningMailer]:
    async with scratch_database(infra, "mailer") as database_url:
        settings = MailerSettings(
            DATABASE_URL=database_url,
            KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap,
            KAFKA_TOPIC_PARTITIONS=TEST_PARTITIONS,
            SMTP_HOST=smtp_host,
            SMTP_PORT=smtp_port,
            PUBLIC_BASE_URL=PUBLIC_BASE_URL,
            SHARE_BASE_URL=SHARE_BASE_URL,
            MAILER_FROM="Groundswell <no-reply@groundswell.test>",
            public_url=MAILER_PUBLIC_URL,
            poll_interval_seconds=0.2,
            smtp_timeout_seconds=5,
            # A group of its own per app: Tansu takes ~11 s to re-form a group that a
            # previous member just left, a fresh group ~3 s.
            consumer_group=f"mailer-test-{uuid.uuid4().hex[:8]}",
            **overrides,
        )
        app = create_app(settings)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            db = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
            try:
                async with httpx.AsyncClient(
                    transport=transport, base_url=MAILER_PUBLIC_URL
                ) as client:
                    yield RunningMailer(client, db, settings)
            finally:
                await db.close()


@pytest.fixture(scope="session")
async def producer(infra: Infra, topics: None) -> AsyncIterator[AIOKafkaProducer]:
    kafka = make_producer(infra.kafka_bootstrap, linger_ms=0)
    await kafka.start()
    try:
        yield kafka
    finally:
        await kafka.stop()


Publish = Callable[[BaseEvent | Signed], Awaitable[None]]


@pytest.fixture
def publish(producer: AIOKafkaProducer) -> Publish:
    """Publish an event as the signing service's outbox relay does: topic and key by type."""

    async def send(event: BaseEvent | Signed) -> None:
        # A signature goes out as signing's outbox sends it: its data key first.
        for one in event.events if isinstance(event, Signed) else [event]:
            await producer.send_and_wait(topic_for(one).value, encode(one), key=one.key.encode())

    return send


def new_signature(**overrides: Any) -> Signed:
    """A SignatureCreated with a unique petition, signer and address."""
    unique = uuid.uuid4().hex[:10]
    fields: dict[str, Any] = {
        "petition_id": uuid.uuid4(),
        "signature_id": uuid.uuid4(),
        "petition_slug": f"save-the-park-{unique}",
        "petition_title": "Save the <Park> & pond",
        "status": "signed",
        "email": f"signer-{unique}@example.test",
        "name": "Zoë O'Brien",
        "contact_consent": True,
        "country": "GB",
        "share_code": f"sc{unique}",
        "withdraw_token": f"wd-{unique}",
    }
    fields.update(overrides)
    return signed(**fields)


@pytest.fixture
def signature() -> Callable[..., Signed]:
    return new_signature


async def eventually(
    check: Callable[[], Awaitable[Any]], *, timeout: float = 20.0, interval: float = 0.1
) -> Any:
    """Poll until `check` returns something truthy; fail with its last value otherwise."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s (last value: {value!r})")
        await asyncio.sleep(interval)


def mail_to(mail_dir: Path, recipient: str) -> list[EmailMessage]:
    """Messages in the shared sink for one (test-unique) address, oldest first.

    Like `smtp_sink.read_messages`, but only files mentioning the address are parsed:
    the sink is shared by the whole session and may hold many messages.
    """
    wanted = recipient.lower()
    messages = []
    for path in sorted(mail_dir.glob("*.eml")):
        raw = path.read_bytes()
        if wanted.encode() not in raw.lower():
            continue
        message = message_from_bytes(raw, policy=policy.default)
        if wanted in str(message["To"] or "").lower():
            messages.append(message)
    return messages


async def topic_records(bootstrap: str, topic: str, timeout: float = 15.0) -> list[Any]:
    """Every record on a topic so far (no group: nothing is committed)."""
    consumer = make_consumer(bootstrap, None, topic)
    await consumer.start()
    records: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=200)
            for partition_records in batch.values():
                records.extend(partition_records)
            partitions = consumer.assignment()
            # The high-water mark from Fetch is exact on Tansu (ListOffsets is not).
            caught_up = bool(partitions)
            for tp in partitions:
                highwater = consumer.highwater(tp)
                if highwater is None or await consumer.position(tp) < highwater:
                    caught_up = False
            if (not batch and caught_up) or time.monotonic() > deadline:
                return records
    finally:
        await consumer.stop()


async def topic_events(bootstrap: str, topic: str) -> list[AnyEvent]:
    return [parse_event(r.value or b"") for r in await topic_records(bootstrap, topic)]


class Kit:
    """The helpers above, for test modules (conftest cannot be imported under importlib)."""

    eventually = staticmethod(eventually)
    mail_to = staticmethod(mail_to)
    signature = staticmethod(new_signature)
    topic_events = staticmethod(topic_events)
    topic_records = staticmethod(topic_records)

    def __init__(self, infra: Infra, publish: Publish, producer: AIOKafkaProducer) -> None:
        self.infra = infra
        self.publish = publish
        self.producer = producer


@pytest.fixture
def kit(infra: Infra, publish: Publish, producer: AIOKafkaProducer) -> Kit:
    return Kit(infra, publish, producer)


@pytest.fixture(scope="session")
def start_mailer() -> Callable[..., Any]:
    return running_mailer


@pytest.fixture(scope="module")
async def mailer(infra: Infra, topics: None) -> AsyncIterator[RunningMailer]:
    """The mailer sending to the session's SMTP sink, shared by one module's tests."""
    if infra.mail_dir is None:
        pytest.skip("needs the local SMTP sink (SMTP_HOST points elsewhere)")
    async with running_mailer(infra, infra.smtp_host, infra.smtp_port) as running:
        yield running


# --- the send queue on its own: a migrated database, queued emails, a dispatcher ---


@dataclass
class QueueDb:
    """A scratch mailer database with its schema, and a pool of the test's own."""

    url: str
    db: asyncpg.Pool

    async def add_emails(self, count: int, prefix: str) -> list[str]:
        """Queue `count` thank-yous to `<prefix>-<i>@example.test`; returns the addresses."""
        addresses = [f"{prefix}-{i}@example.test" for i in range(count)]
        signatures = [uuid.uuid4() for _ in addresses]
        petition = uuid.uuid4()
        contents = [
            json.dumps(
                {
                    "first_name": "Zoë",
                    "petition_title": "Save the <Park> & pond",
                    "petition_slug": "save-the-park",
                    "share_code": f"sc-{prefix}-{i}",
                    "withdraw_token": f"wd-{prefix}-{i}",
                }
            )
            for i in range(count)
        ]
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute(
                "INSERT INTO mailer.recipients (address_key, unsubscribe_token, "
                "last_signature_id, last_petition_id) "
                "SELECT k, 'tok' || md5(k), s, $3 FROM unnest($1::text[], $2::uuid[]) AS t(k, s)",
                addresses,
                signatures,
                petition,
            )
            await conn.execute(
                "INSERT INTO mailer.emails (signature_id, kind, petition_id, address_key, "
                "recipient, content, message_id, status) "
                "SELECT s, 'thank_you', $4, k, k, c::jsonb, '<' || md5(k) || '@groundswell.test>', "
                "'queued' FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(s, k, c)",
                signatures,
                addresses,
                contents,
                petition,
            )
            await conn.execute("NOTIFY mailer_emails")
        return addresses

    async def statuses(self) -> dict[str, int]:
        rows = await self.db.fetch("SELECT status, count(*) AS n FROM mailer.emails GROUP BY 1")
        return {row["status"]: row["n"] for row in rows}

    async def all_sent(self, count: int) -> bool:
        try:
            return (await self.statuses()).get("sent", 0) == count
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError):
            return False  # the test cut the database's connections; ask again


def queue_settings(database_url: str, smtp_port: int, **overrides: Any) -> MailerSettings:
    fields: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": smtp_port,
        "PUBLIC_BASE_URL": PUBLIC_BASE_URL,
        "SHARE_BASE_URL": SHARE_BASE_URL,
        "MAILER_FROM": "Groundswell <no-reply@groundswell.test>",
        "public_url": MAILER_PUBLIC_URL,
        "poll_interval_seconds": 0.2,
        "smtp_timeout_seconds": 5,
        "send_lease_seconds": 2.0,
        "lease_renew_seconds": 0.5,
    }
    fields.update(overrides)
    return MailerSettings(**fields)


@pytest.fixture
async def queue_db(infra: Infra) -> AsyncIterator[QueueDb]:
    async with scratch_database(infra, "mailq") as database_url:
        await migrate(database_url, repo.SCHEMA, repo.migrations())
        db = await asyncpg.create_pool(database_url, min_size=1, max_size=2)
        try:
            yield QueueDb(database_url, db)
        finally:
            db.terminate()


@asynccontextmanager
async def running_dispatcher(
    database_url: str,
    settings: MailerSettings,
    claimant: str | None = None,
    surge: SurgeYield | None = None,
) -> AsyncIterator[tuple[Dispatcher, asyncio.Task[None]]]:
    """A dispatcher on a pool of its own; its task may be cancelled inside to crash it."""
    pool = await asyncpg.create_pool(database_url, min_size=1, max_size=6)
    dispatcher = Dispatcher(pool, settings, claimant=claimant, surge=surge)
    task = asyncio.create_task(dispatcher.run())
    try:
        yield dispatcher, task
    finally:
        dispatcher.request_stop()
        await asyncio.wait({task}, timeout=10)
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        pool.terminate()


class CountingSmtp:
    """A real SMTP server (aiosmtpd) that counts sessions and deliveries per address,
    optionally taking `delay` seconds over each DATA (a slow relay)."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.sessions = 0
        self.delivered: collections.Counter[str] = collections.Counter()
        self.port = free_port()
        self._controller: Controller | None = None

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()  # closes every open connection too
            self._controller = None

    def restart(self) -> None:
        """As a relay restarting: every connection is dropped, then it listens again."""
        self.stop()
        self.start()

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        session.host_name = hostname
        return responses

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay:
            await asyncio.sleep(self.delay)
        for address in envelope.rcpt_tos:
            self.delivered[address] += 1
        return "250 Message accepted"


@pytest.fixture
def counting_smtp() -> Iterator[tuple[CountingSmtp, int]]:
    server = CountingSmtp()
    server.start()
    try:
        yield server, server.port
    finally:
        server.stop()


class QueueKit:
    """Helpers for the send-queue tests (conftest cannot be imported under importlib)."""

    eventually = staticmethod(eventually)
    settings = staticmethod(queue_settings)
    running_dispatcher = staticmethod(running_dispatcher)


@pytest.fixture
def qkit() -> QueueKit:
    return QueueKit()
