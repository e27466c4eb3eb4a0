"""The sharing HTTP app: share-link redirects, sharing stats, a leaderboard, ops.

The app's lifespan also runs the consumer of `petitions` and `signatures` and the
outbox relay that publishes clicks and referrals.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from html import escape

import asyncpg
import structlog
from fastapi import APIRouter, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from groundswell_contracts.events import ShareLinkClicked
from groundswell_contracts.topics import Consumer, Topic
from groundswell_runtime.background import ConsumerLoop, cancel_and_wait, supervise
from groundswell_runtime.correlation import install_request_id_middleware
from groundswell_runtime.db import close_pool, create_pool, database_reachable, migrate
from groundswell_runtime.kafka import broker_reachable, ensure_topics
from groundswell_runtime.ops import install_ops
from groundswell_runtime.outbox import OutboxRelay, enqueue
from prometheus_client import Counter
from pydantic import BaseModel, Field

from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.domain import stats
from groundswell_sharing.domain.links import normalize_channel, petition_url, valid_share_code
from groundswell_sharing.domain.visitors import is_automated, visitor_hash
from groundswell_sharing.entrypoints.handlers import SharingHandler

log = structlog.get_logger()

SHARE_REDIRECTS = Counter("groundswell_sharing_redirects_total", "Share link visits", ["outcome"])
TOP_REFERRERS = 10

DESCRIPTION = """
Per-signer share links (`/s/{code}`), the clicks and referred signatures they bring,
and sharing statistics per petition. Clicks go to `share-clicks`, referrals to
`referrals`. No IP address is stored; referrers are shown by first name only.
"""

VIRAL_COEFFICIENT_DOC = (
    "Signatures that came through a signer's share link divided by the petition's "
    "counted signers (signatures_via_referrals / signers). 0.25 means one signer in four "
    "was brought in by another signer's link; at 1.0 each signer brings in one more on "
    "average, and above 1.0 sharing alone keeps the petition growing. 0 when nobody has "
    "signed yet."
)


class ChannelStats(BaseModel):
    clicks: int = Field(description="Clicks on share links shared through this channel")
    signatures: int = Field(description="Counted signatures referred through this channel")


class TopReferrer(BaseModel):
    first_name: str = Field(description="The sharer's first name; nothing else is shown")
    clicks: int
    signatures: int


class ShareStats(BaseModel):
    slug: str
    clicks: int = Field(description="People who followed a share link (robots excluded)")
    signatures_via_referrals: int = Field(
        description="Counted signatures that came through a signer's share link"
    )
    signers: int = Field(description="Counted signatures (the coefficient's denominator)")
    by_channel: dict[str, ChannelStats] = Field(
        description="Per channel (email, whatsapp, facebook, x, copy, direct, other, "
        "unknown): clicks and referred signatures"
    )
    by_source: dict[str, int] = Field(description="Counted signatures per campaign `source` code")
    top_referrers: list[TopReferrer]
    viral_coefficient: float = Field(description=VIRAL_COEFFICIENT_DOC)


class LeaderboardEntry(BaseModel):
    slug: str
    title: str
    signatures_via_referrals: int
    clicks: int
    viral_coefficient: float = Field(description=VIRAL_COEFFICIENT_DOC)


class Leaderboard(BaseModel):
    petitions: list[LeaderboardEntry]


class SharingRuntime:
    """What the lifespan starts and stops; the routes and readiness checks read it."""

    def __init__(self, settings: SharingSettings) -> None:
        self.settings = settings
        configured = settings.visitor_salt.get_secret_value() if settings.visitor_salt else ""
        # An empty value (e.g. `${SHARING_VISITOR_SALT:-}` in compose) means unset, never
        # an empty key.
        self.visitor_salt = configured.encode() if configured else secrets.token_bytes(32)
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
            SharingHandler(self.pool, settings),
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


def _unknown_link_page(public_base_url: str) -> HTMLResponse:
    home = escape(public_base_url.rstrip("/") + "/")
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        "<title>Share link not found</title><style>"
        "body{font-family:Arial,Helvetica,sans-serif;background:#f4f4f5;color:#18181b;margin:0}"
        "main{max-width:520px;margin:48px auto;background:#fff;border-radius:8px;padding:32px}"
        "</style></head><body><main><h1>We don't recognise this share link</h1>"
        "<p>The link may have been cut short or mistyped when it was copied: check that "
        "you have all of it, or ask the person who sent it to send it again.</p>"
        "<p>If they signed only a moment ago, their link may not be active yet: try again "
        "in a minute.</p>"
        f'<p><a href="{home}">Find the petition on the site</a></p>'
        "</main></body></html>"
    )
    return HTMLResponse(
        document, status_code=404, headers={"Cache-Control": "no-store", "X-Robots-Tag": "noindex"}
    )


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
        "link named one with `?c=`). Records the click and emits `ShareLinkClicked`, once "
        "per visitor per link per day; link-preview robots are redirected but not counted. "
        "Unknown codes get a 404 page.",
        responses={404: {"description": "Unknown share code (HTML page)"}},
    )
    async def follow_share_link(
        code: str,
        request: Request,
        # Not length-checked: a mangled channel still deserves the redirect (as "other").
        c: str | None = Query(None, description="Channel: email, whatsapp, facebook, x, copy..."),
    ) -> Response:
        if not valid_share_code(code):
            SHARE_REDIRECTS.labels("unknown").inc()
            return _unknown_link_page(settings.public_base_url)
        channel = normalize_channel(c)
        user_agent = request.headers.get("user-agent")
        automated = is_automated(user_agent)
        async with runtime.require_pool().acquire() as conn, conn.transaction():
            link = await repo.find_share_link(conn, code)
            counted = False
            if link is not None and not automated:
                today = datetime.now(UTC).date()
                ip = request.client.host if request.client else None
                visitor = visitor_hash(runtime.visitor_salt, today, ip, user_agent)
                counted = await repo.add_click(conn, link, channel, visitor, today)
                if counted:
                    await enqueue(
                        conn,
                        repo.SCHEMA,
                        ShareLinkClicked(
                            petition_id=link.petition_id, share_code=code, channel=channel
                        ),
                    )
        if link is None:
            SHARE_REDIRECTS.labels("unknown").inc()
            return _unknown_link_page(settings.public_base_url)
        outcome = "robot" if automated else ("counted" if counted else "repeat")
        SHARE_REDIRECTS.labels(outcome).inc()
        return RedirectResponse(
            petition_url(settings.public_base_url, link.slug, code, channel),
            status_code=302,
            # Each visit must reach us to be counted; the code must not leak onwards.
            headers={
                "Cache-Control": "no-store",
                "Referrer-Policy": "no-referrer",
                "X-Robots-Tag": "noindex",
            },
        )

    @router.get(
        "/api/petitions/{slug}/shares",
        tags=["stats"],
        response_model=ShareStats,
        summary="Sharing statistics for one petition",
        description="Clicks, signatures via referrals, per channel and per source, the top "
        f"{TOP_REFERRERS} referrers (first name only) and the viral coefficient: "
        + VIRAL_COEFFICIENT_DOC,
        responses={404: {"description": "No petition with this slug is known"}},
    )
    async def petition_shares(slug: str, response: Response) -> ShareStats:
        pool = runtime.require_pool()
        petition = await repo.petition_by_slug(pool, slug)
        if petition is None:
            raise HTTPException(status_code=404, detail="unknown petition")
        petition_id, current_slug = petition
        tallies = await repo.petition_tallies(pool, petition_id, TOP_REFERRERS)
        channels = stats.by_channel(tallies.clicks_by_channel, tallies.signatures_by_channel)
        referred = sum(tallies.signatures_by_channel.values())
        response.headers["Cache-Control"] = f"public, max-age={settings.stats_max_age_seconds}"
        return ShareStats(
            slug=current_slug,
            clicks=sum(tallies.clicks_by_channel.values()),
            signatures_via_referrals=referred,
            signers=tallies.signers,
            by_channel={
                name: ChannelStats(clicks=t.clicks, signatures=t.signatures)
                for name, t in channels.items()
            },
            by_source=tallies.by_source,
            top_referrers=[
                TopReferrer(first_name=t.first_name, clicks=t.clicks, signatures=t.signatures)
                for t in stats.top_referrers(tallies.referrers, TOP_REFERRERS)
            ],
            viral_coefficient=stats.viral_coefficient(referred, tallies.signers),
        )

    @router.get(
        "/api/leaderboard",
        tags=["stats"],
        response_model=Leaderboard,
        summary="Petitions with the most signatures via share links",
    )
    async def share_leaderboard(
        response: Response, limit: int = Query(10, ge=1, le=100)
    ) -> Leaderboard:
        rows = await repo.leaderboard(runtime.require_pool(), limit)
        response.headers["Cache-Control"] = f"public, max-age={settings.stats_max_age_seconds}"
        return Leaderboard(
            petitions=[
                LeaderboardEntry(
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
    app.include_router(sharing_router(runtime))
    return app
