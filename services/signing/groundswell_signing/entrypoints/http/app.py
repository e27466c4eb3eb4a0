"""The signing service's ASGI app: public API, petition pages, admin API, outbox relay."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import structlog
from disposable_email_domains import blocklist as disposable_blocklist
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from groundswell_runtime.db import TEMPORARY_DATABASE_ERRORS, close_pool, create_pool
from groundswell_runtime.logging import configure_logging
from groundswell_runtime.loop_lag import LoopLag
from groundswell_runtime.outbox import OutboxRelay, RelayWakeup
from groundswell_runtime.service import Service, service_app
from starlette.types import Scope

from groundswell_signing.adapters.repository import (
    SCHEMA,
    WRITER_SETTINGS,
    prune_rate_counters,
)
from groundswell_signing.config import SigningSettings
from groundswell_signing.entrypoints.http import admin, api, pages, privacy, site, supporters
from groundswell_signing.entrypoints.http.admin_auth import AdminAuthThrottle
from groundswell_signing.entrypoints.http.errors import install_error_handlers
from groundswell_signing.entrypoints.http.fast_sign import install_fast_sign
from groundswell_signing.entrypoints.http.limits import BodySizeLimit
from groundswell_signing.entrypoints.http.security import SecurityHeaders, UnexpectedErrors
from groundswell_signing.entrypoints.http.shedding import ADMITTED, InFlight, ShedWhenBusy
from groundswell_signing.entrypoints.relay import RELAY_POOL_SIZE, RelaySettings, add_relay
from groundswell_signing.migrations import MIGRATIONS
from groundswell_signing.service_layer.backlog import OutboxBacklog
from groundswell_signing.service_layer.group_commit import ShedReason, SignatureWriter
from groundswell_signing.service_layer.petitions import CountCache, PetitionCache
from groundswell_signing.service_layer.signing import AbusePolicy

log = structlog.get_logger()

# 32 characters of secrets.token_urlsafe carry 192 bits; a short token can be guessed.
ADMIN_TOKEN_MIN_LENGTH = 32
# How often the counters of ended rate windows are deleted (`_prune_rate_windows`).
RATE_WINDOW_PRUNE_SECONDS = 60.0


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


class SigningService(Service):
    """The signature writer (group commit), the petition and count caches, and the
    outbox relay when it runs in this process (`SIGNING_RELAY_MODE`, relay.py)."""

    name = "signing"
    # Signatures are taken while the broker is away: the relay makes the topics.
    creates_topics = False
    # Built on the pool by `setup`; requests arrive only once it has run.
    writer: SignatureWriter
    petitions: PetitionCache
    counts: CountCache
    backlog: OutboxBacklog
    loop_lag: LoopLag

    def __init__(self, settings: SigningSettings) -> None:
        check_admin_token(settings)
        super().__init__(settings, schema=SCHEMA, migrations=MIGRATIONS)
        self.settings: SigningSettings = settings
        self.policy = AbusePolicy(settings, load_disposable_domains())
        self.admin_throttle = AdminAuthThrottle(
            free_failures=settings.admin_auth_free_failures,
            window=settings.admin_auth_window_seconds,
            base_delay=settings.admin_auth_base_delay_seconds,
        )
        self.relay: OutboxRelay | None = None
        self._max_loop_lag = settings.max_loop_lag_ms / 1000
        self.in_flight = InFlight(settings.max_in_flight)

    async def setup(self) -> None:
        settings, pool = self.settings, self.pool
        if RelaySettings().mode == "in-process":
            # On connections of its own, so requests cannot take the relay's; "separate"
            # leaves it to `groundswell-signing relay`, a process whose CPU share the
            # request load cannot take (relay.py).
            relay_pool = await create_pool(
                settings.database_url, min_size=2, max_size=RELAY_POOL_SIZE
            )
            self.on_stop(lambda: close_pool(relay_pool))
            self.relay = add_relay(self, relay_pool, settings)
        # The writer's statements on connections of their own, planned for them.
        writer_pool = await create_pool(
            settings.database_url,
            min_size=settings.writer_tasks,
            max_size=settings.writer_tasks + 1,
            settings=WRITER_SETTINGS,
        )
        self.on_stop(lambda: close_pool(writer_pool))
        wake_relay = RelayWakeup(pool, SCHEMA)
        self.on_stop(wake_relay.close)
        self.writer = SignatureWriter(
            writer_pool,
            wake_relay=wake_relay,
            flag_over_limit=settings.rate_limit_action == "flag",
            writers=settings.writer_tasks,
            max_batch=settings.max_batch,
            max_queue=settings.max_queue,
            max_queue_age=settings.max_queue_age_ms / 1000,
            gather=settings.gather_ms / 1000,
            enough=settings.gather_enough,
        )
        self.petitions = PetitionCache(pool)
        self.counts = CountCache(pool)
        self.backlog = OutboxBacklog(pool, limit=settings.max_outbox_age_ms / 1000)
        self.add_loop("outbox-backlog", self.backlog.run)
        self.loop_lag = LoopLag()
        self.add_loop("loop-lag", self.loop_lag.run)
        self.add_loop("signature-writer", self.writer.run)
        self.add_loop("rate-window-prune", self._prune_rate_windows)

    async def _prune_rate_windows(self) -> None:
        # The counters of ended rate windows, every minute, on the main pool: pruned by a
        # writer between two batches (as before), the DELETE held that writer 52 ms at
        # 1,000 signatures/s, and the requests waiting on it were refused
        # (docs/performance.md).
        while True:
            await asyncio.sleep(RATE_WINDOW_PRUNE_SECONDS)
            with contextlib.suppress(*TEMPORARY_DATABASE_ERRORS):  # pruned next time
                await prune_rate_counters(self.pool, int(time.time()))

    def saturated(self) -> ShedReason | None:
        """Why the process is full, or None: it holds as many signing requests as it may
        (`in_flight`), requests wait for its loop (`loop_lag`), or the writer's queue is
        long or old. A fact, asked again as often as needed (the server's door asks it,
        then the lean path)."""
        if self.in_flight.full:
            return ShedReason.IN_FLIGHT
        if self.loop_lag.sustained > self._max_loop_lag:
            return ShedReason.LOOP_LAG
        if self.writer.overloaded():
            return ShedReason.WRITER_QUEUE
        return None

    def overloaded(self, scope: Scope | None = None) -> ShedReason | None:
        """Why this request is over capacity, or None: saturated, or the stack is behind
        (the outbox and the counter) and this request falls in the share refused.

        The share is a random draw, so one per request: a request it lets in is marked
        in its `scope` (`ADMITTED`), and asked again later (the server's door first, then
        the lean path or the route) only the saturation is checked."""
        if reason := self.saturated():
            return reason
        if scope is not None and scope.get(ADMITTED):
            return None
        if self.backlog.behind():
            return ShedReason.OUTBOX_BACKLOG
        if scope is not None:
            scope[ADMITTED] = True
        return None


def create_app(settings: SigningSettings) -> FastAPI:
    service = SigningService(settings)
    app = service_app(
        service,
        title="Groundswell signing",
        description="Petitions and signatures: public signing API, petition pages, admin API.",
    )
    # Signing's own answers for people (pages) replace the generic 503 and 422.
    install_error_handlers(app)
    # Middlewares run outermost-last-added.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    # Outside the body limit (whose own exception it must not swallow): what no handler
    # claimed becomes a logged 500, with the request id still bound.
    app.add_middleware(UnexpectedErrors)
    app.add_middleware(ShedWhenBusy, overloaded=service.overloaded, in_flight=service.in_flight)
    app.add_middleware(SecurityHeaders)  # outermost: every answer, 413s and 500s included
    app.include_router(api.router)
    app.include_router(admin.router)
    app.include_router(supporters.router)
    app.include_router(privacy.router)
    app.include_router(privacy.public)
    app.include_router(pages.router)
    app.include_router(site.router)
    # Outside every middleware: it does for its one request what they do (fast_sign.py).
    install_fast_sign(app, settings.max_body_bytes)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "static"), name="static")
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory (`--factory`): each worker process builds its own app."""
    settings = SigningSettings()  # ADMIN_TOKEN and the rest come from the environment
    configure_logging("signing", settings.log_level)
    return create_app(settings)
