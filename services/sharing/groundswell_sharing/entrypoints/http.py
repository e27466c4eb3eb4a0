"""The sharing HTTP app: share-link redirects, sharing stats, a leaderboard, ops.

The app's lifespan also runs the consumer of `petitions` and `signatures` and the
outbox relay that publishes clicks and referrals.
"""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import quote, urlencode

import structlog
from fastapi import APIRouter, FastAPI, Query, Request, Response
from fastapi.responses import RedirectResponse
from groundswell_contracts.topics import Consumer, Topic
from groundswell_runtime.background import ConsumerLoop
from groundswell_runtime.client_address import client_address
from groundswell_runtime.consumer import InTransaction
from groundswell_runtime.kafka import BULK_FETCH_MAX_WAIT_MS
from groundswell_runtime.outbox import OutboxRelay
from groundswell_runtime.service import Service, service_app
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


class SharingService(Service):
    """The consumer of `petitions` and `signatures` and the outbox relay (stopped in the
    reverse order: groundswell_runtime.service)."""

    name = "sharing"
    # Attribution may wait for a surge to pass (surge_yield.py): a click on a link not
    # known yet is redirected by its petition hint and counted once the link arrives.
    yields_in_surge = True

    def __init__(self, settings: SharingSettings) -> None:
        super().__init__(settings, schema=repo.SCHEMA, migrations=repo.migrations())
        self.settings: SharingSettings = settings
        # The same in every instance and across restarts (domain/visitors.py), so a
        # restart does not count the day's repeat clicks again.
        self.visitor_salt = visitor_salt(
            settings.visitor_salt.get_secret_value() if settings.visitor_salt else None,
            settings.admin_token.get_secret_value() if settings.admin_token else None,
        )
        self.budget = ClickBudget(settings.clicks_per_network_hour, settings.clicks_per_site_hour)

    async def setup(self) -> None:
        settings, pool = self.settings, self.pool
        self.add_relay(OutboxRelay(pool, repo.SCHEMA, settings.kafka_bootstrap_servers))
        self.add_consumer(
            "consumer",
            ConsumerLoop(
                Consumer.SHARING.value,
                settings.consumer_group,
                [Topic.PETITIONS.value, Topic.SIGNATURES.value],
                settings.kafka_bootstrap_servers,
                InTransaction(pool, handle_batch=SharingHandler(settings)),
                fetch_max_wait_ms=BULK_FETCH_MAX_WAIT_MS,
                surge=self.surge_yield,
            ),
        )


def sharing_router(service: SharingService) -> APIRouter:
    router = APIRouter()
    settings = service.settings

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
            service.visitor_salt,
            client_address(peer, forwarded, settings.trusted_proxies),
            now,
        )
        outcome, link = await clicks.record_click(
            service.pool,
            share_code=code,
            channel=channel,
            automated=is_automated(request.headers.get("user-agent")),
            visitor=caller,
            at=now,
            budget=service.budget,
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
        current, tallies = await views.petition_or_404(service.pool, slug, TOP_REFERRERS)
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
        rows = await repo.leaderboard(service.pool, limit)
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
    service = SharingService(settings or SharingSettings())
    app = service_app(service, title="Groundswell sharing", description=DESCRIPTION)
    app.include_router(sharing_router(service))
    app.include_router(admin_router(service.settings.admin_token, service.require_pool))
    return app
