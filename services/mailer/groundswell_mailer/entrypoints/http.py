"""The mailer's HTTP app: one-click unsubscribe (RFC 8058) plus the ops endpoints.

The app's lifespan also runs the mailer's background work (`MailerService`): the
`signatures` consumer, the milestones consumer, the sender, the campaign pacer and the
outbox relay.
"""

from __future__ import annotations

import re

import structlog
from fastapi import APIRouter, FastAPI
from fastapi.responses import HTMLResponse
from groundswell_contracts.events import Unsubscribed
from groundswell_contracts.topics import Consumer, Topic
from groundswell_runtime.background import ConsumerLoop
from groundswell_runtime.consumer import InTransaction
from groundswell_runtime.kafka import BULK_FETCH_MAX_WAIT_MS
from groundswell_runtime.outbox import OutboxRelay, enqueue
from groundswell_runtime.service import Service, service_app

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


class MailerService(Service):
    """The consumers, the sender, the campaign pacer and the outbox relay (the order in
    which they are added is the reverse of the order they stop: groundswell_runtime.service)."""

    name = "mailer"
    yields_in_surge = True  # mail may wait for a surge to pass (surge_yield.py)

    def __init__(self, settings: MailerSettings) -> None:
        super().__init__(settings, schema=repo.SCHEMA, migrations=repo.migrations())
        self.settings: MailerSettings = settings

    async def setup(self) -> None:
        settings, pool = self.settings, self.pool
        self.add_relay(OutboxRelay(pool, repo.SCHEMA, settings.kafka_bootstrap_servers))
        self.add_loop("pacer", lambda: run_pacer(pool, settings))
        self.dispatcher = dispatcher = Dispatcher(pool, settings, surge=self.surge_yield)
        # Emails in flight finish (or time out) before the relay flushes their outcomes.
        self.add_loop(
            "dispatcher",
            dispatcher.run,
            drain=dispatcher.request_stop,
            drain_seconds=settings.smtp_timeout_seconds + 5,
        )
        # Milestone notes (entrypoints/mailings.py): a group of its own on `milestones`,
        # which nothing else of the mailer reads; dead letters go to `mailer.dlq`.
        self.add_consumer(
            "campaign_consumer",
            ConsumerLoop(
                Consumer.MAILER.value,
                f"{settings.consumer_group}-campaign",
                [Topic.MILESTONES.value],
                settings.kafka_bootstrap_servers,
                InTransaction(pool, CampaignHandler(settings)),
                fetch_max_wait_ms=BULK_FETCH_MAX_WAIT_MS,
                surge=self.surge_yield,
            ),
        )
        self.add_consumer(
            "consumer",
            ConsumerLoop(
                Consumer.MAILER.value,
                settings.consumer_group,
                # Data keys on their own topic, which only the mailer reads.
                [Topic.SIGNATURES.value, Topic.SIGNER_KEYS.value, Topic.PRIVACY.value],
                settings.kafka_bootstrap_servers,
                InTransaction(pool, handle_batch=SignatureHandler(settings)),
                first=[Topic.SIGNER_KEYS.value],
                fetch_max_wait_ms=BULK_FETCH_MAX_WAIT_MS,
                surge=self.surge_yield,
            ),
        )

    def behind(self) -> bool:
        """Its intake keeps up in a surge; its sending is what falls behind."""
        return super().behind() or self.dispatcher.behind()


def unsubscribe_router(service: MailerService) -> APIRouter:
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
        async with service.pool.acquire() as conn:
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
        async with service.pool.acquire() as conn, conn.transaction():
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
    service = MailerService(settings or MailerSettings())
    app = service_app(service, title="Groundswell mailer", description=DESCRIPTION)
    app.include_router(unsubscribe_router(service))
    app.include_router(preferences_router(service.require_pool))
    app.include_router(mailings_admin_router(service.settings, service.require_pool))
    return app
