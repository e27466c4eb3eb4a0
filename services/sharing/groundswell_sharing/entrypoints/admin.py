"""The organisers' view of sharing (Bearer ADMIN_TOKEN): who is bringing signatures in.

First names stored by sharing are shown here and nowhere else.
"""

from __future__ import annotations

from collections.abc import Callable

import asyncpg
from fastapi import APIRouter, Depends, Query, Response
from groundswell_runtime.admin_auth import admin_check
from pydantic import SecretStr

from groundswell_sharing.entrypoints import views


def admin_router(token: SecretStr | None, pool: Callable[[], asyncpg.Pool]) -> APIRouter:
    router = APIRouter(dependencies=[Depends(admin_check(token))], tags=["admin"])

    @router.get(
        "/api/admin/petitions/{slug}/shares",
        response_model=views.AdminShareStats,
        summary="Sharing statistics with the referrers' first names (organisers)",
        description="As `GET /api/petitions/{slug}/shares`, with each top referrer's first "
        "name and share code. Bearer ADMIN_TOKEN.",
        responses={
            401: {"description": "Missing or wrong admin token"},
            404: {"description": "No petition with this slug is known"},
        },
    )
    async def admin_petition_shares(
        slug: str, response: Response, limit: int = Query(10, ge=1, le=100)
    ) -> views.AdminShareStats:
        current, tallies = await views.petition_or_404(pool(), slug, limit)
        response.headers["Cache-Control"] = "no-store"
        return views.admin_stats(current, tallies, limit)

    return router
