"""The organisers' view of sharing (Bearer ADMIN_TOKEN): who is bringing signatures in.

First names stored by sharing are shown here and nowhere else.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from typing import Annotated

import asyncpg
from fastapi import APIRouter, Depends, HTTPException, Query, Response, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr

from groundswell_sharing.entrypoints import views

_bearer = HTTPBearer(auto_error=False, description="The ADMIN_TOKEN")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def admin_check(token: SecretStr | None) -> Callable[[HTTPAuthorizationCredentials | None], None]:
    expected = token.get_secret_value().encode() if token and token.get_secret_value() else None

    def require_admin(credentials: Credentials) -> None:
        given = credentials.credentials.encode() if credentials else b""
        # Constant-time, and the same answer whether the token is missing or wrong. With
        # no token configured nobody is an admin.
        if expected is None or not credentials or not secrets.compare_digest(given, expected):
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "A valid admin token is required (Authorization: Bearer <ADMIN_TOKEN>)",
                headers={"WWW-Authenticate": "Bearer"},
            )

    return require_admin


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
