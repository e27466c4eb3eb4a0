"""Correlation ids: born at the HTTP edge, carried in Kafka headers, bound in every log line."""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

import structlog
from fastapi import FastAPI, Request, Response
from groundswell_contracts.headers import CORRELATION_ID

REQUEST_ID_HEADER = "X-Request-ID"
_SAFE_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

correlation_id_var: ContextVar[str | None] = ContextVar("correlation_id", default=None)


def current_correlation_id() -> str:
    cid = correlation_id_var.get()
    if cid is None:
        cid = uuid.uuid4().hex
        correlation_id_var.set(cid)
    return cid


def bind_correlation_id(cid: str | None) -> str:
    # Ids come from outside (clients, headers): accept only a safe shape.
    value = cid if cid and _SAFE_ID.match(cid) else uuid.uuid4().hex
    correlation_id_var.set(value)
    structlog.contextvars.bind_contextvars(correlation_id=value)
    return value


def correlation_from_headers(headers: list[tuple[str, bytes]] | None) -> str | None:
    for key, value in headers or ():
        if key == CORRELATION_ID:
            return value.decode(errors="replace")
    return None


def install_request_id_middleware(app: FastAPI) -> None:
    @app.middleware("http")
    async def request_id(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        structlog.contextvars.clear_contextvars()
        cid = bind_correlation_id(request.headers.get(REQUEST_ID_HEADER))
        response = await call_next(request)
        response.headers[REQUEST_ID_HEADER] = cid
        return response
