"""`/healthz`, `/readyz`, `/metrics`, request logs and offline `/docs`, identical on every
service."""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Literal

import structlog
from fastapi import APIRouter, FastAPI, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from groundswell_runtime.docs import install_offline_docs

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


OPS_ROUTES = frozenset({"/healthz", "/readyz", "/metrics"})
LogRequests = Literal["all", "sampled", "errors", "off"]


class RequestLogSettings(BaseSettings):
    """`LOG_REQUESTS` and `LOG_REQUESTS_SAMPLE`, read by every service the same way."""

    model_config = SettingsConfigDict(extra="ignore")

    log_requests: LogRequests = Field("sampled", validation_alias=AliasChoices("LOG_REQUESTS"))
    log_requests_sample: int = Field(
        100, ge=1, validation_alias=AliasChoices("LOG_REQUESTS_SAMPLE")
    )


class RequestLogPolicy:
    """Which requests get a log line.

    `sampled` (the default) logs every answer of 400 and above (429s, refusals, errors:
    what an operator looks for) and one in `sample` of the rest. Why not every request:
    a surge is a thousand signatures a second, and each signer loads the petition page
    too, so successes are nearly all of the traffic; one JSON line each costs tens of
    microseconds of the one CPU a service has, and the metrics already count them by
    route and status. The sample keeps typical durations and correlation ids visible.
    Successful `/healthz`, `/readyz` and `/metrics` (probes and scrapes) are never logged
    but under `all`. `errors` logs only 400 and above; `off` nothing.
    """

    def __init__(self, mode: LogRequests = "sampled", sample: int = 100) -> None:
        self.mode = mode
        self.sample = max(sample, 1)
        self._successes = itertools.count()

    @classmethod
    def from_environment(cls) -> RequestLogPolicy:
        settings = RequestLogSettings()
        return cls(settings.log_requests, settings.log_requests_sample)

    def decide(self, route: str, status: int) -> int | None:
        """None: no line. Otherwise how many requests the line stands for (1, or `sample`)."""
        if self.mode == "all":
            return 1
        if status >= 400:
            return None if self.mode == "off" else 1
        if self.mode != "sampled" or route in OPS_ROUTES:
            return None
        return self.sample if next(self._successes) % self.sample == 0 else None


class RequestMetricsMiddleware:
    """Per-route request count and latency, and the request log line, as pure ASGI (cheap
    on the hot path).

    The log line names the route template, never the path or query string (share codes,
    confirmation tokens), and no client address; the correlation id comes from the
    context the request-id middleware bound.
    """

    def __init__(self, app: ASGIApp, policy: RequestLogPolicy | None = None) -> None:
        self.app = app
        self.policy = policy or RequestLogPolicy.from_environment()

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
            record_request(self.policy, scope, status, started)


@functools.lru_cache(maxsize=1024)
def _series(route: str, method: str, status: int) -> tuple[Histogram, Counter]:
    """The metric series of one route, method and status. `labels()` checks and converts
    its arguments on every call (a measurable share of a request on the signing path);
    a series, once made, never changes, and the labels come from route templates."""
    return HTTP_LATENCY.labels(route, method), HTTP_REQUESTS.labels(route, method, str(status))


def record_request(policy: RequestLogPolicy, scope: Scope, status: int, started: float) -> None:
    """A finished request's metrics and log line (`RequestMetricsMiddleware`'s rule, also
    for a lean path that answers without it). `started` is a `time.perf_counter()`."""
    elapsed = time.perf_counter() - started
    route = route_template(scope)
    method = scope["method"]
    latency, requests = _series(route, method, status)
    latency.observe(elapsed)
    requests.inc()
    stands_for = policy.decide(route, status)
    if stands_for is not None:
        log.info(
            "request",
            method=method,
            route=route,
            status=status,
            duration_ms=round(elapsed * 1000, 1),
            **({"sampled_1_in": stands_for} if stands_for > 1 else {}),
        )


def install_ops(
    app: FastAPI,
    checks: Mapping[str, ReadinessCheck],
    *,
    request_log: RequestLogPolicy | None = None,
) -> None:
    app.include_router(ops_router(checks))
    app.add_middleware(RequestMetricsMiddleware, policy=request_log)
    install_offline_docs(app)
