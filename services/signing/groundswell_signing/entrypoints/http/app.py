"""The signing service's ASGI app: public API, petition pages, admin API, outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import structlog
from disposable_email_domains import blocklist as disposable_blocklist
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from groundswell_runtime.background import cancel_and_wait, supervise
from groundswell_runtime.correlation import install_request_id_middleware
from groundswell_runtime.db import (
    close_pool,
    create_pool,
    database_reachable,
    migrate,
    wait_for_database,
)
from groundswell_runtime.kafka import broker_reachable
from groundswell_runtime.logging import configure_logging
from groundswell_runtime.ops import install_ops
from groundswell_runtime.outbox import OutboxRelay

from groundswell_signing.adapters.repository import SCHEMA
from groundswell_signing.config import SigningSettings
from groundswell_signing.entrypoints.http import admin, api, pages, privacy, site, supporters
from groundswell_signing.entrypoints.http.admin_auth import AdminAuthThrottle
from groundswell_signing.entrypoints.http.errors import install_error_handlers
from groundswell_signing.entrypoints.http.fast_sign import FastSign
from groundswell_signing.entrypoints.http.limits import BodySizeLimit
from groundswell_signing.entrypoints.http.security import SecurityHeaders, UnexpectedErrors
from groundswell_signing.entrypoints.http.shedding import ShedWhenBusy
from groundswell_signing.entrypoints.relay import RelaySettings, new_relay
from groundswell_signing.migrations import MIGRATIONS
from groundswell_signing.service_layer.group_commit import SignatureWriter
from groundswell_signing.service_layer.petitions import CountCache, PetitionCache
from groundswell_signing.service_layer.signing import AbusePolicy

log = structlog.get_logger()

# 32 characters of secrets.token_urlsafe carry 192 bits; a short token can be guessed.
ADMIN_TOKEN_MIN_LENGTH = 32


class WeakAdminToken(SystemExit):
    """Start-up refuses a short ADMIN_TOKEN (SystemExit: a message, not a traceback)."""


def load_disposable_domains() -> frozenset[str]:
    """Throwaway-mail domains, from the community-maintained list (the
    `disposable-email-domains` package, ~10,000 domains, updated with each release);
    a campaign adds its own through SIGNING_BLOCKED_EMAIL_DOMAINS."""
    return frozenset(domain.lower() for domain in disposable_blocklist)


def check_admin_token(settings: SigningSettings) -> None:
    length = len(settings.admin_token.get_secret_value())
    if length < ADMIN_TOKEN_MIN_LENGTH:
        raise WeakAdminToken(
            f"groundswell-signing: ADMIN_TOKEN is {length} characters; it must be at least "
            f"{ADMIN_TOKEN_MIN_LENGTH}. Make one with: "
            "python3 -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )


def create_app(settings: SigningSettings) -> FastAPI:
    check_admin_token(settings)
    relay_mode = RelaySettings().mode

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await wait_for_database(settings.database_url)
        await migrate(settings.database_url, SCHEMA, MIGRATIONS)
        # Requests and batches share one pool. The relay runs here only in "in-process"
        # mode, on connections of its own; "separate" leaves it to `groundswell-signing
        # relay`, a process whose CPU share the request load cannot take (relay.py).
        pool = await create_pool(settings.database_url, max_size=10)
        relay_pool: asyncpg.Pool | None = None
        relay: OutboxRelay | None = None
        if relay_mode == "in-process":
            relay_pool = await create_pool(settings.database_url, min_size=2, max_size=2)
            relay = new_relay(relay_pool, settings)
        writer = SignatureWriter(
            pool,
            flag_over_limit=settings.rate_limit_action == "flag",
            writers=settings.writer_tasks,
            max_batch=settings.max_batch,
            max_queue=settings.max_queue,
            max_queue_age=settings.max_queue_age_ms / 1000,
        )
        app.state.pool = pool
        app.state.relay = relay
        app.state.writer = writer
        app.state.petitions = PetitionCache(pool)
        app.state.counts = CountCache(pool)
        tasks = [asyncio.create_task(supervise("signature-writer", writer.run), name="writer")]
        if relay is not None:
            tasks.append(
                asyncio.create_task(supervise("outbox-relay", relay.run), name="outbox-relay")
            )
        try:
            yield
        finally:
            for task in tasks:
                await cancel_and_wait(task)
            if relay is not None:
                await relay.stop()
            if relay_pool is not None:
                await close_pool(relay_pool)
            await close_pool(pool)

    app = FastAPI(
        title="Groundswell signing",
        description="Petitions and signatures: public signing API, petition pages, admin API.",
        version="0.1.0",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.policy = AbusePolicy(settings, load_disposable_domains())
    app.state.admin_throttle = AdminAuthThrottle(
        free_failures=settings.admin_auth_free_failures,
        window=settings.admin_auth_window_seconds,
        base_delay=settings.admin_auth_base_delay_seconds,
    )

    async def database_ready() -> bool:
        return await database_reachable(app.state.pool)

    async def broker_ready() -> bool:
        return await broker_reachable(settings.kafka_bootstrap_servers)

    async def relay_moving() -> bool:
        # A separate relay answers for itself on its own /readyz.
        relay: OutboxRelay | None = app.state.relay
        return relay is None or not relay.stalled()

    # Middlewares run outermost-last-added; FastSign is the innermost, just before the
    # router, so metrics, request ids and every limit apply to its requests too.
    app.add_middleware(FastSign)
    install_ops(
        app, {"database": database_ready, "broker": broker_ready, "outbox_relay": relay_moving}
    )
    install_request_id_middleware(app)
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outside the body limit (whose own exception it must not swallow): what no handler
    # claimed becomes a logged 500, with the request id still bound.
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(ShedWhenBusy, overloaded=lambda: app.state.writer.overloaded())
    app.add_middleware(SecurityHeaders)  # outermost: every answer, 413s and 500s included
    app.include_router(api.router)
    app.include_router(admin.router)
    app.include_router(supporters.router)
    app.include_router(privacy.router)
    app.include_router(privacy.public)
    app.include_router(pages.router)
    app.include_router(site.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory (`--factory`): each worker process builds its own app."""
    settings = SigningSettings()  # ADMIN_TOKEN and the rest come from the environment
    configure_logging("signing", settings.log_level)
    return create_app(settings)
