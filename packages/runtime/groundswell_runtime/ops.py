"""`/healthz`, `/readyz` and `/metrics`, identical on every service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.routing import Match

ReadinessCheck = Callable[[], Awaitable[bool]]

HTTP_REQUESTS = Counter(
    "groundswell_http_requests_total", "HTTP requests served", ["route", "method", "status"]
)
HTTP_LATENCY = Histogram(
    "groundswell_http_request_seconds", "HTTP request latency", ["route", "method"]
)

log = structlog.get_logger()


def ops_router(checks: Mapping[str, ReadinessCheck]) -> APIRouter:
    router = APIRouter(tags=["ops"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz")
    async def readyz() -> JSONResponse:
        results: dict[str, bool] = {}
        for name, check in checks.items():
            try:
                results[name] = await asyncio.wait_for(check(), timeout=2)
            except Exception as exc:  # a failing dependency means "not ready", not a 500
                log.warning("readiness_check_failed", check=name, error=type(exc).__name__)
                results[name] = False
        ready = all(results.values())
        return JSONResponse(
            {"status": "ready" if ready else "not_ready", "checks": results},
            status_code=200 if ready else 503,
        )

    @router.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


def _route_template(request: Request) -> str:
    # Label by route template, not raw path: share codes and tokens would explode cardinality.
    for route in request.app.router.routes:
        match, _ = route.matches(request.scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "unmatched"))
    return "unmatched"


def install_ops(app: FastAPI, checks: Mapping[str, ReadinessCheck]) -> None:
    app.include_router(ops_router(checks))

    @app.middleware("http")
    async def measure(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = _route_template(request)
        HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(route, request.method, str(response.status_code)).inc()
        return response
