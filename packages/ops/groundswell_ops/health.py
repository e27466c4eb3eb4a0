"""Each service's `/healthz` (the process answers) and `/readyz` (it can do its work)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True)
class ServiceHealth:
    name: str
    url: str
    alive: bool
    ready: bool
    # The readiness checks that failed, as the service names them (e.g. `outbox_relay`).
    failing: list[str] = field(default_factory=list)
    error: str | None = None


def _failing_checks(body: Any) -> list[str]:
    checks = body.get("checks") if isinstance(body, dict) else None
    if not isinstance(checks, dict):
        return []
    return sorted(str(k) for k, v in checks.items() if v is not True)


async def probe(client: httpx.AsyncClient, name: str, url: str) -> ServiceHealth:
    try:
        alive = (await client.get(f"{url}/healthz")).status_code == 200
        ready_response = await client.get(f"{url}/readyz")
    except httpx.HTTPError as exc:
        return ServiceHealth(name, url, False, False, error=type(exc).__name__)
    try:
        body = ready_response.json()
    except ValueError:
        body = None
    ready = ready_response.status_code == 200
    return ServiceHealth(name, url, alive, ready, [] if ready else _failing_checks(body))


async def probe_all(services: Mapping[str, str]) -> list[ServiceHealth]:
    async with httpx.AsyncClient(timeout=TIMEOUT_SECONDS) as client:
        return list(
            await asyncio.gather(*(probe(client, name, url) for name, url in services.items()))
        )
