"""`/healthz`, `/readyz` and `/metrics`, identical on every service."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping

import structlog
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


def route_template(scope: Scope) -> str:
    """The matched route's template (`/s/{code}`), never the raw path: share codes and
    tokens would explode the metric's cardinality. The router leaves the route in the
    scope once it has matched; mounts (static files) expose their own path."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    return str(path) if path else "unmatched"


class RequestMetricsMiddleware:
    """Per-route request count and latency, as pure ASGI (cheap on the hot path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before responding

        async def send_recording_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_recording_status)
        finally:
            route = route_template(scope)
            method = scope["method"]
            HTTP_LATENCY.labels(route, method).observe(time.perf_counter() - started)
            HTTP_REQUESTS.labels(route, method, str(status)).inc()


def install_ops(app: FastAPI, checks: Mapping[str, ReadinessCheck]) -> None:
    app.include_router(ops_router(checks))
    app.add_middleware(RequestMetricsMiddleware)
