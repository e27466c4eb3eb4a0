"""The mailer's HTTP app: one-click unsubscribe (RFC 8058) plus the ops endpoints.

The app's lifespan also runs the mailer's background work: the `signatures`
consumer, the send loop and the outbox relay.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from groundswell_contracts.events import Unsubscribed
from groundswell_contracts.topics import Consumer, Topic
from groundswell_runtime.background import ConsumerLoop, cancel_and_wait, supervise
from groundswell_runtime.consumer import InTransaction
from groundswell_runtime.correlation import install_request_id_middleware
from groundswell_runtime.db import close_pool, create_pool, database_reachable, migrate
from groundswell_runtime.kafka import broker_reachable, ensure_topics
from groundswell_runtime.ops import install_ops
from groundswell_runtime.outbox import OutboxRelay, enqueue
from groundswell_runtime.unavailable import install_database_unavailable_handler

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.entrypoints import pages
from groundswell_mailer.entrypoints.dispatcher import Dispatcher
from groundswell_mailer.entrypoints.handlers import SignatureHandler
from groundswell_mailer.entrypoints.mailings import CampaignHandler, run_pacer
from groundswell_mailer.entrypoints.mailings import admin_router as mailings_admin_router
from groundswell_mailer.entrypoints.preferences import preferences_router

log = structlog.get_logger()

# Tokens are `secrets.token_urlsafe(24)`; anything else is answered without a query.
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{16,64}$")

DESCRIPTION = """
Sends the confirmation, thank-you and "you have already signed" emails for
signatures (from the `signatures` topic), each at most once, and honours
one-click unsubscribes (RFC 8058) at once. Outcomes go to `email-events`.
"""


class MailerRuntime:
    """What the lifespan starts and stops; the routes and readiness checks read it."""

    def __init__(self, settings: MailerSettings) -> None:
        self.settings = settings
        self.pool: asyncpg.Pool | None = None
        self.consumer: ConsumerLoop | None = None
        self.dispatcher: Dispatcher | None = None
        self.relay: OutboxRelay | None = None
        self.campaign_consumer: ConsumerLoop | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def require_pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("the mailer is not started")
        return self.pool

    async def start(self) -> None:
        settings = self.settings
        await migrate(settings.database_url, repo.SCHEMA, repo.migrations())
        self.pool = await create_pool(settings.database_url, min_size=2, max_size=10)
        await ensure_topics(
            settings.kafka_bootstrap_servers,
            settings.kafka_topic_partitions,
            settings.kafka_replication_factor,
        )
        self.relay = OutboxRelay(self.pool, repo.SCHEMA, settings.kafka_bootstrap_servers)
        self.dispatcher = Dispatcher(self.pool, settings)
        handler = SignatureHandler(settings)
        self.consumer = ConsumerLoop(
            Consumer.MAILER.value,
            settings.consumer_group,
            # Data keys on their own topic, which only the mailer reads.
            [Topic.SIGNATURES.value, Topic.SIGNER_KEYS.value, Topic.PRIVACY.value],
            settings.kafka_bootstrap_servers,
            InTransaction(self.pool, handler, prepare=handler.lock_batch),
        )
        # Milestone notes (entrypoints/mailings.py): a group of its own on `milestones`,
        # which nothing else of the mailer reads; dead letters go to `mailer.dlq`.
        self.campaign_consumer = ConsumerLoop(
            Consumer.MAILER.value,
            f"{settings.consumer_group}-campaign",
            [Topic.MILESTONES.value],
            settings.kafka_bootstrap_servers,
            InTransaction(self.pool, CampaignHandler(settings)),
        )
        pool = self.pool
        self._tasks = {
            "campaign": asyncio.create_task(supervise("campaign", self.campaign_consumer.run)),
            "pacer": asyncio.create_task(supervise("pacer", lambda: run_pacer(pool, settings))),
            "outbox": asyncio.create_task(supervise("outbox", self.relay.run)),
            "dispatcher": asyncio.create_task(supervise("dispatcher", self.dispatcher.run)),
            "consumer": asyncio.create_task(supervise("consumer", self.consumer.run)),
        }
        log.info("mailer_started")

    async def stop(self) -> None:
        # Stop taking new work first, let emails in flight finish, then flush events.
        await cancel_and_wait(self._tasks.get("consumer"))
        await cancel_and_wait(self._tasks.get("campaign"))
        await cancel_and_wait(self._tasks.get("pacer"))
        if self.dispatcher is not None:
            self.dispatcher.request_stop()
            dispatcher = self._tasks.get("dispatcher")
            if dispatcher is not None:
                await asyncio.wait({dispatcher}, timeout=self.settings.smtp_timeout_seconds + 5)
                await cancel_and_wait(dispatcher)
        await cancel_and_wait(self._tasks.get("outbox"))
        if self.relay is not None:
            await self.relay.stop()
        if self.pool is not None:
            await close_pool(self.pool)
        log.info("mailer_stopped")

    async def database_ready(self) -> bool:
        return self.pool is not None and await database_reachable(self.pool)

    async def broker_ready(self) -> bool:
        return await broker_reachable(self.settings.kafka_bootstrap_servers)

    async def consumer_ready(self) -> bool:
        return self.consumer is not None and self.consumer.consuming


def unsubscribe_router(runtime: MailerRuntime) -> APIRouter:
    router = APIRouter(tags=["unsubscribe"])

    @router.get(
        "/unsubscribe/{token}",
        response_class=HTMLResponse,
        summary="Unsubscribe page",
        description="A page with a button that POSTs the unsubscribe; a GET changes nothing "
        "(link scanners fetch every URL in an email). Unknown tokens get a 404 page.",
        responses={404: {"description": "Unknown token"}},
    )
    async def unsubscribe_page(token: str) -> HTMLResponse:
        if not _TOKEN.match(token):
            return pages.unknown_link()
        async with runtime.require_pool().acquire() as conn:
            state = await conn.fetchval(
                "SELECT unsubscribed_at IS NOT NULL FROM mailer.recipients "
                "WHERE unsubscribe_token = $1",
                token,
            )
        if state is None:
            return pages.unknown_link()
        if state:
            return pages.already_unsubscribed()
        return pages.unsubscribe_form(f"/unsubscribe/{token}")

    @router.post(
        "/unsubscribe/{token}",
        response_class=HTMLResponse,
        summary="One-click unsubscribe (RFC 8058)",
        description="Takes effect at once: no further thank-you or already-signed emails go "
        "to the address (confirmations of new signatures still do, since a signature counts "
        "only once confirmed). Idempotent: repeating it answers 200 and changes nothing. "
        "Mailbox providers send the body `List-Unsubscribe=One-Click`; any body is accepted. "
        "Emits `Unsubscribed` on `email-events` the first time.",
        responses={404: {"description": "Unknown token"}},
    )
    async def unsubscribe(token: str) -> HTMLResponse:
        if not _TOKEN.match(token):
            return pages.unknown_link()
        async with runtime.require_pool().acquire() as conn, conn.transaction():
            result = await repo.unsubscribe(conn, token)
            if result is not None and result.newly:
                await enqueue(
                    conn,
                    repo.SCHEMA,
                    Unsubscribed(petition_id=result.petition_id, signature_id=result.signature_id),
                )
        if result is None:
            return pages.unknown_link()
        if result.newly:
            log.info("recipient_unsubscribed")
        return pages.unsubscribed()

    return router


def create_app(settings: MailerSettings | None = None) -> FastAPI:
    runtime = MailerRuntime(settings or MailerSettings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="Groundswell mailer",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
    )
    app.state.runtime = runtime
    install_request_id_middleware(app)
    install_ops(
        app,
        {
            "database": runtime.database_ready,
            "broker": runtime.broker_ready,
            "consumer": runtime.consumer_ready,
        },
    )
    install_database_unavailable_handler(app)
    app.include_router(unsubscribe_router(runtime))
    app.include_router(preferences_router(runtime.require_pool))
    app.include_router(mailings_admin_router(runtime.settings, runtime.require_pool))
    return app
