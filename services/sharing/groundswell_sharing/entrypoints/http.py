"""The sharing HTTP app: share-link redirects, sharing stats, a leaderboard, ops.

The app's lifespan also runs the consumer of `petitions` and `signatures` and the
outbox relay that publishes clicks and referrals.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import asyncpg
import structlog
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import RedirectResponse
from groundswell_contracts.topics import Consumer, Topic
from groundswell_runtime.background import ConsumerLoop, cancel_and_wait, supervise
from groundswell_runtime.client_address import client_address
from groundswell_runtime.consumer import InTransaction
from groundswell_runtime.correlation import install_request_id_middleware
from groundswell_runtime.db import close_pool, create_pool, database_reachable, migrate
from groundswell_runtime.kafka import broker_reachable, ensure_topics
from groundswell_runtime.ops import install_ops
from groundswell_runtime.outbox import OutboxRelay
from groundswell_runtime.unavailable import install_database_unavailable_handler
from prometheus_client import Counter

from groundswell_sharing.adapters import clicks
from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.domain import stats
from groundswell_sharing.domain.clicks import ClickBudget, visitor, wait_delay
from groundswell_sharing.domain.links import (
    DIRECT,
    normalize_channel,
    petition_url,
    possible_slug,
    valid_share_code,
)
from groundswell_sharing.domain.visitors import is_automated, visitor_salt
from groundswell_sharing.entrypoints import pages, views
from groundswell_sharing.entrypoints.admin import admin_router
from groundswell_sharing.entrypoints.handlers import SharingHandler

log = structlog.get_logger()

SHARE_REDIRECTS = Counter("groundswell_sharing_redirects_total", "Share link visits", ["outcome"])
TOP_REFERRERS = 10

DESCRIPTION = """
Per-signer share links (`/s/{code}`), the clicks and referred signatures they bring,
and sharing statistics per petition. Clicks go to `share-clicks`, referrals to
`referrals`. No IP address is stored. The public stats rank referrers without naming
them; organisers see first names through the admin endpoint (Bearer ADMIN_TOKEN).
"""


class SharingRuntime:
    """What the lifespan starts and stops; the routes and readiness checks read it."""

    def __init__(self, settings: SharingSettings) -> None:
        self.settings = settings
        # The same in every instance and across restarts (domain/visitors.py), so a
        # restart does not count the day's repeat clicks again.
        self.visitor_salt = visitor_salt(
            settings.visitor_salt.get_secret_value() if settings.visitor_salt else None,
            settings.admin_token.get_secret_value() if settings.admin_token else None,
        )
        self.budget = ClickBudget(settings.clicks_per_network_hour, settings.clicks_per_site_hour)
        self.pool: asyncpg.Pool | None = None
        self.consumer: ConsumerLoop | None = None
        self.relay: OutboxRelay | None = None
        self._tasks: dict[str, asyncio.Task[None]] = {}

    def require_pool(self) -> asyncpg.Pool:
        if self.pool is None:
            raise RuntimeError("the sharing service is not started")
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
        self.consumer = ConsumerLoop(
            Consumer.SHARING.value,
            settings.consumer_group,
            [Topic.PETITIONS.value, Topic.SIGNATURES.value],
            settings.kafka_bootstrap_servers,
            InTransaction(self.pool, SharingHandler(settings)),
        )
        self._tasks = {
            "outbox": asyncio.create_task(supervise("outbox", self.relay.run)),
            "consumer": asyncio.create_task(supervise("consumer", self.consumer.run)),
        }
        log.info("sharing_started")

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks.get("consumer"))
        await cancel_and_wait(self._tasks.get("outbox"))
        if self.relay is not None:
            await self.relay.stop()
        if self.pool is not None:
            await close_pool(self.pool)
        log.info("sharing_stopped")

    async def database_ready(self) -> bool:
        return self.pool is not None and await database_reachable(self.pool)

    async def broker_ready(self) -> bool:
        return await broker_reachable(self.settings.kafka_bootstrap_servers)

    async def consumer_ready(self) -> bool:
        return self.consumer is not None and self.consumer.consuming


def sharing_router(runtime: SharingRuntime) -> APIRouter:
    router = APIRouter()
    settings = runtime.settings

    @router.get(
        "/s/{code}",
        tags=["share links"],
        status_code=302,
        response_class=RedirectResponse,
        summary="Follow a share link",
        description="302 to the petition page with `ref={code}` (and `ref_channel` when the "
        "link named one with `?c=`). Records the click and emits `ShareLinkClicked` once per "
        "network (IPv4 address, IPv6 /64) per link per day, within an hourly budget of "
        "counted clicks per network; link-preview robots are redirected but not counted. "
        "A code sharing has not heard of yet (signing issued it a moment ago) answers 202 "
        "with a page that retries (`Refresh`, `retry=n`) a bounded number of times, then "
        "404; with `p={slug}` it redirects to that petition at once. A click made while "
        "waiting counts once the link is known.",
        responses={
            202: {"description": "Link not known yet: an HTML page that retries shortly"},
            404: {"description": "Unknown share code (HTML page)"},
        },
    )
    async def follow_share_link(
        code: str,
        request: Request,
        # Not length-checked: a mangled channel still deserves the redirect (as "other").
        c: str | None = Query(None, description="Channel: email, whatsapp, facebook, x, copy..."),
        p: str | None = Query(
            None,
            description="The petition's slug, used only while the code is not known yet "
            "(a known code always leads to its own petition)",
        ),
        retry: int = Query(0, ge=0, le=1000, description="Set by the waiting page"),
    ) -> Response:
        if not valid_share_code(code):
            SHARE_REDIRECTS.labels("unknown").inc()
            return pages.unknown_link_page(settings.public_base_url)
        channel = normalize_channel(c)
        # A mangled hint is ignored rather than refused: the link itself may still work.
        hinted = p if p is not None and possible_slug(p) else None
        give_up = hinted is None and retry >= settings.link_wait_attempts
        now = datetime.now(UTC)
        peer = request.client.host if request.client else None
        forwarded = ", ".join(request.headers.getlist("x-forwarded-for")) or None
        caller = visitor(
            runtime.visitor_salt,
            client_address(peer, forwarded, settings.trusted_proxies),
            now,
        )
        outcome, link = await clicks.record_click(
            runtime.require_pool(),
            share_code=code,
            channel=channel,
            automated=is_automated(request.headers.get("user-agent")),
            visitor=caller,
            at=now,
            budget=runtime.budget,
            keep_if_unknown=not give_up,
        )
        SHARE_REDIRECTS.labels(outcome.value).inc()
        slug = link.slug if link is not None else hinted
        if slug is not None:
            return RedirectResponse(
                petition_url(settings.public_base_url, slug, code, channel),
                status_code=302,
                headers=pages.NO_STORE,
            )
        if give_up:
            return pages.unknown_link_page(settings.public_base_url)
        # The normalised channel: the raw one could hold anything, even what cannot be encoded.
        query = {"retry": str(retry + 1)}
        if channel != DIRECT:
            query = {"c": channel} | query
        # Relative to /s/{code}, so it holds behind a proxy that mounts us under a prefix.
        return pages.opening_page(f"{quote(code)}?{urlencode(query)}", wait_delay(retry))

    @router.get(
        "/api/petitions/{slug}/shares",
        tags=["stats"],
        response_model=views.ShareStats,
        summary="Sharing statistics for one petition",
        description="Clicks, signatures via referrals, per channel and per source, the top "
        f"{TOP_REFERRERS} share links by rank and counts (nobody is named: organisers see "
        "first names at `/api/admin/petitions/{slug}/shares`) and the viral coefficient: "
        + views.VIRAL_COEFFICIENT_DOC,
        responses={404: {"description": "No petition with this slug is known"}},
    )
    async def petition_shares(slug: str, response: Response) -> views.ShareStats:
        current, tallies = await views.petition_or_404(runtime.require_pool(), slug, TOP_REFERRERS)
        response.headers["Cache-Control"] = f"public, max-age={settings.stats_max_age_seconds}"
        return views.public_stats(current, tallies, TOP_REFERRERS)

    @router.get(
        "/api/leaderboard",
        tags=["stats"],
        response_model=views.Leaderboard,
        summary="Petitions with the most signatures via share links",
    )
    async def share_leaderboard(
        response: Response, limit: int = Query(10, ge=1, le=100)
    ) -> views.Leaderboard:
        rows = await repo.leaderboard(runtime.require_pool(), limit)
        response.headers["Cache-Control"] = f"public, max-age={settings.stats_max_age_seconds}"
        return views.Leaderboard(
            petitions=[
                views.LeaderboardEntry(
                    slug=r.slug,
                    title=r.title,
                    signatures_via_referrals=r.signatures_via_referrals,
                    clicks=r.clicks,
                    viral_coefficient=stats.viral_coefficient(
                        r.signatures_via_referrals, r.signers
                    ),
                )
                for r in rows
            ]
        )

    return router


def create_app(settings: SharingSettings | None = None) -> FastAPI:
    runtime = SharingRuntime(settings or SharingSettings())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await runtime.start()
        try:
            yield
        finally:
            await runtime.stop()

    app = FastAPI(
        title="Groundswell sharing", version="0.1.0", description=DESCRIPTION, lifespan=lifespan
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
    app.include_router(sharing_router(runtime))
    app.include_router(admin_router(runtime.settings.admin_token, runtime.require_pool))
    return app
