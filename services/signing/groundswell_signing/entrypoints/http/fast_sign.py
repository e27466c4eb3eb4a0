"""The signing request's lean path: the same work as the FastAPI route, without the framework.

Measured under load (py-spy, closed loop), FastAPI's routing, dependency solving and
response machinery took over half of signing's CPU per request, and our own work
(validation, the write) under a third. A surge is almost only this one request, so it
gets a bare ASGI handler in front of the router, as the counter's live streams do.

It changes nothing a client can see. The route stays in FastAPI (documented, and the
path everything unusual takes), and the lean path hands a request back to it whenever
it would answer differently: a body that does not parse into `SignatureRequest` (so
the 422 has FastAPI's exact shape), a cross-origin request (CORS headers), a non-JSON
body. Those hand-overs happen before anything is recorded, so nothing is done twice.
After that point, an error is answered by the app's own exception handlers, exactly as
the route's would be. Our middlewares (request id, metrics, body limit, security
headers, shedding) wrap both paths alike.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI, Request
from groundswell_runtime.client_address import client_address
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from groundswell_signing.entrypoints.http.api import accept_signature
from groundswell_signing.entrypoints.http.schemas import SignatureRequest

PATH = re.compile(r"^/api/petitions/(?P<slug>[^/]+)/signatures$")
# What the router would leave in the scope: the route template labels the metrics.
ROUTE = SimpleNamespace(path="/api/petitions/{slug}/signatures")
_HEADERS = [(b"content-type", b"application/json")]


class FastSign:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            PATH.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if match is None or not _plain_json(scope["headers"]):
            await self.app(scope, receive, send)
            return
        body = await _read_body(receive)
        try:
            request = SignatureRequest.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)
            return
        scope["route"] = ROUTE
        app: FastAPI = scope["app"]
        service = app.state.service
        peer = scope.get("client")
        ip = client_address(
            peer[0] if peer else None,
            _header(scope["headers"], b"x-forwarded-for"),
            service.settings.trusted_proxies,
        )
        try:
            answer = await accept_signature(
                request,
                match["slug"],
                service.writer,
                service.petitions,
                service.policy,
                service.settings,
                ip,
                datetime.now(UTC),
            )
        except Exception as exc:
            handler = _handler_for(app, exc)
            if handler is None:
                raise
            response = await handler(Request(scope, _replay(body, receive)), exc)
            await response(scope, receive, send)
            return
        payload = answer.model_dump_json().encode()
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


def _plain_json(headers: list[tuple[bytes, bytes]]) -> bool:
    """A same-origin JSON request: anything else takes the full route."""
    content_type = _header(headers, b"content-type") or ""
    return content_type.startswith("application/json") and _header(headers, b"origin") is None


async def _read_body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that gives the body already read, then whatever the client sends next."""
    sent = False

    async def replayed() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


def _handler_for(app: FastAPI, exc: Exception) -> Any:
    for kind in type(exc).__mro__:
        if kind in app.exception_handlers:
            return app.exception_handlers[kind]
    return None
