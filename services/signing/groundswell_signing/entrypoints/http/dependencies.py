"""What route handlers receive: the pool, settings, abuse policy, caller IP, admin check.

Every dependency is `async def`: FastAPI runs a plain `def` dependency in the
threadpool, a thread hop per dependency per request on the hot path.
"""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import asyncpg
from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from groundswell_runtime.client_address import client_address, client_network

from groundswell_signing.config import SigningSettings
from groundswell_signing.entrypoints.http.admin_auth import AdminAuthThrottle

if TYPE_CHECKING:
    from groundswell_signing.entrypoints.http.app import SigningService
from groundswell_signing.service_layer.group_commit import SignatureWriter
from groundswell_signing.service_layer.petitions import PetitionCache
from groundswell_signing.service_layer.signing import AbusePolicy

_bearer = HTTPBearer(auto_error=False, description="The ADMIN_TOKEN")


def service(request: Request) -> SigningService:
    """The running service (groundswell_runtime.service_app keeps it on the app)."""
    running: SigningService = request.app.state.service
    return running


async def get_settings(request: Request) -> SigningSettings:
    settings: SigningSettings = service(request).settings
    return settings


async def get_pool(request: Request) -> asyncpg.Pool:
    pool: asyncpg.Pool = service(request).pool
    return pool


async def get_policy(request: Request) -> AbusePolicy:
    policy: AbusePolicy = service(request).policy
    return policy


async def get_writer(request: Request) -> SignatureWriter:
    writer: SignatureWriter = service(request).writer
    return writer


async def get_petition_cache(request: Request) -> PetitionCache:
    cache: PetitionCache = service(request).petitions
    return cache


async def now() -> datetime:
    return datetime.now(UTC)


async def client_ip(
    request: Request, settings: Annotated[SigningSettings, Depends(get_settings)]
) -> str | None:
    return client_address(
        request.client.host if request.client else None,
        request.headers.get("x-forwarded-for"),
        settings.trusted_proxies,
    )


async def require_admin(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    settings: Annotated[SigningSettings, Depends(get_settings)],
    ip: Annotated[str | None, Depends(client_ip)],
) -> None:
    throttle: AdminAuthThrottle = service(request).admin_throttle
    network = client_network(ip) if ip else "unknown"
    now = time.monotonic()
    wait = throttle.refused_for(network, now)
    if wait:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            f"Too many failed admin logins from your network; try again in {wait} seconds",
            headers={"Retry-After": str(wait)},
        )
    expected = settings.admin_token.get_secret_value().encode()
    given = credentials.credentials.encode() if credentials else b""
    # Constant-time, and the same answer whether the token is missing or wrong.
    if not credentials or not secrets.compare_digest(given, expected):
        throttle.failed(network, now)
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            "A valid admin token is required (Authorization: Bearer <ADMIN_TOKEN>)",
            headers={"WWW-Authenticate": "Bearer"},
        )
    throttle.succeeded(network)


Pool = Annotated[asyncpg.Pool, Depends(get_pool)]
Settings = Annotated[SigningSettings, Depends(get_settings)]
Policy = Annotated[AbusePolicy, Depends(get_policy)]
Writer = Annotated[SignatureWriter, Depends(get_writer)]
Petitions = Annotated[PetitionCache, Depends(get_petition_cache)]
ClientIP = Annotated[str | None, Depends(client_ip)]
Now = Annotated[datetime, Depends(now)]
