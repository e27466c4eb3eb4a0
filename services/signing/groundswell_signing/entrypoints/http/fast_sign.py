"""The signing request's lean path: the same work as the FastAPI route, without the framework.

Measured under load (py-spy, closed loop), FastAPI's routing, dependency solving and
response machinery took over half of signing's CPU per request, and our own work
(validation, the write) under a third. A surge is almost only this one request, so it
gets a bare ASGI handler in front of everything, as the counter's live streams do.

It changes nothing a client can see. The route stays in FastAPI (documented, and the
path everything unusual takes), and the lean path hands a request back to the whole
app whenever it would answer differently: a body without a declared length or over the
limit (BodySizeLimit answers the 413), a body that does not parse into
`SignatureRequest` (so the 422 has FastAPI's exact shape), a cross-origin request (CORS
headers), a non-JSON body. Those hand-overs happen before anything is recorded, so
nothing is done twice.

Why it sits outermost rather than just before the router: the eleven ASGI layers around
it (ours and Starlette's) each cost a call and a wrapped `send` per request, about a
tenth of signing's CPU. What the ones that matter do for a signing request, it does
itself with their own helpers, so each rule has one copy: the request id bound and
echoed (`bind_request_id`), metrics and the request log (`record_request`), the
security headers (`with_security_headers`), a logged 500 for what no handler claims
(`answer_unexpected`), the 503 over capacity (`shedding.refuse`, as ShedWhenBusy);
errors are answered by the app's own exception handlers, exactly as the route's would be.

Over capacity, the same requests are refused even earlier, at the HTTP server's door
(`signing_door`, through `groundswell_runtime.serving.install_door`): no task, no ASGI
call, the same bytes. The lean path's own refusal remains for a request that was let in
and finds the process full by the time it runs.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

from fastapi import FastAPI, Request
from groundswell_runtime.client_address import client_address
from groundswell_runtime.correlation import bind_request_id
from groundswell_runtime.ops import RequestLogPolicy, record_request
from groundswell_runtime.serving import Door, install_door
from pydantic import ValidationError
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from groundswell_signing.entrypoints.http.api import accept_signature, accepted_json
from groundswell_signing.entrypoints.http.schemas import SignatureRequest
from groundswell_signing.entrypoints.http.security import answer_unexpected, with_security_headers
from groundswell_signing.entrypoints.http.shedding import refusal, refuse
from groundswell_signing.service_layer.group_commit import ShedReason

PATH = re.compile(r"^/api/petitions/(?P<slug>[^/]+)/signatures$")
# What the router would leave in the scope: the route template labels the metrics.
ROUTE = SimpleNamespace(path="/api/petitions/{slug}/signatures")
_HEADERS = [(b"content-type", b"application/json")]


class FastSign:
    """Outermost: `app` is the whole app (every middleware and the router)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.request_log = RequestLogPolicy.from_environment()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            PATH.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "POST"
            else None
        )
        if match is None or not _plain(scope["headers"], self.max_body_bytes):
            await self.app(scope, receive, send)
            return
        app: FastAPI = scope["app"]
        service = app.state.service
        if reason := service.overloaded(scope):
            await self._refuse(send, reason)
            return
        body = await _read_body(receive)
        try:
            request = SignatureRequest.model_validate_json(body)
        except ValidationError:
            await self.app(scope, _replay(body, receive), send)
            return
        with service.in_flight.held():
            await self._sign(scope, receive, send, app, request, match["slug"], body)

    async def _refuse(self, send: Send, reason: ShedReason) -> None:
        """ShedWhenBusy's 503, answered here rather than through the eleven layers: in a
        surge most requests are refused. As on the route, only the security headers are
        added: a deliberate refusal is counted by `groundswell_signing_shed_total`, not
        in the request metrics, whose 5xx rate pages someone."""

        async def secured(message: Message) -> None:
            await send(with_security_headers(message))

        await refuse(secured, reason)

    async def _sign(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        app: FastAPI,
        request: SignatureRequest,
        slug: str,
        body: bytes,
    ) -> None:
        started = time.perf_counter()
        scope["route"] = ROUTE
        request_id = bind_request_id(scope["headers"])
        status = 500  # what is recorded if nothing answers (as RequestMetricsMiddleware)
        responded = False

        async def secured(message: Message) -> None:
            await send(with_security_headers(message))

        async def respond(message: Message) -> None:
            nonlocal status, responded
            if message["type"] == "http.response.start":
                status, responded = message["status"], True
                message["headers"] = [*message.get("headers", ()), request_id]
            await secured(message)

        try:
            await self._answer(scope, receive, respond, app, request, slug, body)
        except BaseException as exc:
            record_request(self.request_log, scope, status, started)
            if not isinstance(exc, Exception):
                raise
            await answer_unexpected(scope, exc, secured, started=responded)
            return
        record_request(self.request_log, scope, status, started)

    async def _answer(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        app: FastAPI,
        request: SignatureRequest,
        slug: str,
        body: bytes,
    ) -> None:
        service = app.state.service
        settings = service.settings
        peer = scope.get("client")
        ip = client_address(
            peer[0] if peer else None,
            _header(scope["headers"], b"x-forwarded-for"),
            settings.trusted_proxies,
        )
        try:
            outcome = await accept_signature(
                request,
                slug,
                service.writer,
                service.petitions,
                service.policy,
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
        payload = accepted_json(settings.public_base_url, slug, outcome.status)
        await send(
            {
                "type": "http.response.start",
                "status": 202,
                "headers": [*_HEADERS, (b"content-length", str(len(payload)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


def signing_door(app: FastAPI, max_body_bytes: int) -> Door:
    """While the process is saturated or the stack behind, the lean path's refusal for
    the requests it would take, answered by the server before the app is called (the
    share refused while behind is drawn here, once per request: `overloaded`). Measured
    (docs/performance.md, 2026-12-04): at 4,000/s offered most refusals are the
    share's; drawn by the lean path, each cost a task and the app's call."""

    def door(scope: Scope) -> list[Message] | None:
        if scope["method"] != "POST" or PATH.match(scope["path"]) is None:
            return None
        service = getattr(app.state, "service", None)  # None until the app has started
        if service is None or not _plain(scope["headers"], max_body_bytes):
            return None
        reason = service.overloaded(scope)
        if reason is None:
            return None
        return [with_security_headers(message) for message in refusal(reason)]

    return door


def install_fast_sign(app: FastAPI, max_body_bytes: int) -> None:
    """Put `FastSign` outside every middleware, Starlette's own included: `add_middleware`
    can only reach inside Starlette's error middleware, so it wraps the stack the app
    builds on its first request. Its refusal goes at the server's door too."""
    build = app.build_middleware_stack

    def build_with_fast_sign() -> ASGIApp:
        return FastSign(build(), max_body_bytes)

    app.build_middleware_stack = build_with_fast_sign  # type: ignore[method-assign]
    install_door(app, signing_door(app, max_body_bytes))


def _plain(headers: list[tuple[bytes, bytes]], max_body_bytes: int) -> bool:
    """A same-origin JSON request whose declared length is within the limit (the HTTP
    parser holds the body to it): anything else takes the whole app."""
    content_type = _header(headers, b"content-type") or ""
    length = _header(headers, b"content-length")
    return (
        content_type.startswith("application/json")
        and _header(headers, b"origin") is None
        and _header(headers, b"transfer-encoding") is None
        and length is not None
        and length.isdigit()
        and int(length) <= max_body_bytes
    )


def _header(headers: list[tuple[bytes, bytes]], name: bytes) -> str | None:
    for key, value in headers:
        if key == name:
            return value.decode("latin-1")
    return None


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
