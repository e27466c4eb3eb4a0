"""The counts API: JSON (cacheable, ETag) and a live Server-Sent Events stream.

Both read the `CountsView` only, never the worker's own table (see counts_view). Polls of
known petitions are answered in front of everything (count_polls.py).

Live streams are served by a bare ASGI handler in front of FastAPI: an idle stream is
one coroutine waiting on a future shared by every listener of its petition, plus one
pending receive() to notice the client leaving. Through Starlette's StreamingResponse
and the two BaseHTTPMiddleware layers of the shared ops/request-id plumbing, an idle
stream cost ~80 KB here (measured with 3,000 listeners). FastAPI still documents the
route, and answers it for unknown petitions (404).
"""

from __future__ import annotations

import asyncio
import collections
import json
import re
from collections.abc import AsyncIterator, Mapping
from urllib.parse import unquote
from uuid import UUID

from fastapi import FastAPI, Request, Response
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse, StreamingResponse
from groundswell_runtime.client_address import client_address, client_network
from groundswell_runtime.correlation import REQUEST_ID_HEADER, bind_correlation_id
from groundswell_runtime.ops import ReadinessCheck
from groundswell_runtime.service import ops_app
from prometheus_client import Counter, Gauge
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from groundswell_counter.adapters.counts_view import CountDocument, CountEntry, CountsView
from groundswell_counter.config import CounterSettings
from groundswell_counter.entrypoints.count_polls import CountPolls, cache_control, etag_matches

STREAM_LISTENERS = Gauge(
    "groundswell_counter_stream_listeners", "Open live count streams (Server-Sent Events)"
)
STREAMS_OPENED = Counter("groundswell_counter_streams_opened_total", "Live count streams opened")

SSE_MEDIA_TYPE = "text/event-stream"
STREAM_PATH = re.compile(r"^/api/petitions/(?P<slug>[^/]+)/count/stream$")
# Browsers reconnect after this long when a stream drops.
RETRY_ADVICE = b"retry: 3000\n\n"


class NotFound(BaseModel):
    detail: str


def _unknown(slug: str) -> JSONResponse:
    return JSONResponse(
        {
            "detail": f"No count for petition '{slug}': there is no such petition, or it "
            "has had no events yet."
        },
        status_code=404,
        headers={"Cache-Control": "no-cache"},
    )


def create_http_app(
    settings: CounterSettings, view: CountsView, checks: Mapping[str, ReadinessCheck]
) -> ASGIApp:
    api = create_api(settings, view, checks)
    return CountPolls(LiveCountStreams(api, view, settings), view, settings)


def create_api(
    settings: CounterSettings, view: CountsView, checks: Mapping[str, ReadinessCheck]
) -> FastAPI:
    app = ops_app(
        title="Groundswell counter",
        description="Live signature counts per petition.",
        checks=checks,
    )
    # The petition page is served by another service (another origin): let it read.
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"],
        allow_methods=["GET"],
        allow_headers=["If-None-Match", "Last-Event-ID", "Cache-Control"],
        expose_headers=["ETag"],
        max_age=600,
    )

    caching = cache_control(settings)

    @app.get(
        "/api/petitions/{slug}/count",
        response_model=CountDocument,
        responses={
            304: {"description": "Unchanged since the given ETag"},
            404: {"model": NotFound},
        },
        tags=["counts"],
        summary="A petition's signature count and its breakdowns",
    )
    async def get_count(slug: str, request: Request) -> Response:
        entry = view.by_slug(slug)
        if entry is None:
            return _unknown(slug)
        # Known petitions' polls are answered by CountPolls (count_polls.py) before here.
        headers = {"ETag": entry.etag, "Cache-Control": caching}
        if etag_matches(request.headers.get("if-none-match"), entry.etag):
            return Response(status_code=304, headers=headers)
        return Response(entry.body, media_type="application/json", headers=headers)

    @app.get(
        "/api/petitions/{slug}/count/stream",
        response_class=StreamingResponse,
        responses={
            200: {
                "content": {SSE_MEDIA_TYPE: {}},
                "description": "A `count` event now and on every change (at most "
                "a few per second); `: heartbeat` comments while "
                "idle. Reconnecting with Last-Event-ID skips the "
                "count already seen.",
            },
            404: {"model": NotFound},
        },
        tags=["counts"],
        summary="Live count updates as Server-Sent Events",
    )
    async def stream_count(slug: str, request: Request) -> Response:
        # Known petitions are streamed by LiveCountStreams before reaching FastAPI.
        entry = view.by_slug(slug)
        if entry is None:
            return _unknown(slug)
        return StreamingResponse(
            count_events(
                view,
                settings,
                entry.petition_id,
                request.headers.get("last-event-id"),
                asyncio.Future(),
            ),
            media_type=SSE_MEDIA_TYPE,
            headers=dict(_stream_headers()),
        )

    return app


def _stream_headers() -> list[tuple[str, str]]:
    return [
        ("Cache-Control", "no-cache"),
        # Proxies such as nginx would otherwise hold events back in a buffer.
        ("X-Accel-Buffering", "no"),
        ("Access-Control-Allow-Origin", "*"),
    ]


class LiveCountStreams:
    """Serves `GET /api/petitions/{slug}/count/stream` for known petitions, and for a
    petition the view meets within `stream_unknown_wait_seconds` of the request (a page
    opened as soon as its petition was created); passes everything else, unknown
    petitions included, to the FastAPI app."""

    def __init__(self, app: ASGIApp, view: CountsView, settings: CounterSettings) -> None:
        self.app = app
        self._view = view
        self._settings = settings
        # Live streams per client network: one client may not hold thousands open.
        self._open: collections.Counter[str] = collections.Counter()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            STREAM_PATH.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET"
            else None
        )
        if match is None:
            await self.app(scope, receive, send)
            return
        client = self._client(scope)
        if self._open[client] >= self._settings.streams_per_client:
            await _too_many_streams(send)
            return
        self._open[client] += 1
        try:
            await self._stream(match, scope, receive, send)
        finally:
            self._open[client] -= 1
            if self._open[client] <= 0:
                del self._open[client]

    def _client(self, scope: Scope) -> str:
        peer = scope.get("client")
        forwarded = next(
            (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"), None
        )
        address = client_address(
            peer[0] if peer else None, forwarded, self._settings.trusted_proxies
        )
        return client_network(address) if address else "unknown"

    async def _stream(
        self, match: re.Match[str], scope: Scope, receive: Receive, send: Send
    ) -> None:
        entry = (
            await self._view.wait_for_slug(
                unquote(match["slug"]), self._settings.stream_unknown_wait_seconds
            )
            if match
            else None
        )
        if entry is None:
            await self.app(scope, receive, send)
            return
        request_headers = {
            k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]
        }
        request_id = bind_correlation_id(request_headers.get(REQUEST_ID_HEADER.lower()))
        headers = [
            ("Content-Type", f"{SSE_MEDIA_TYPE}; charset=utf-8"),
            *_stream_headers(),
            (REQUEST_ID_HEADER, request_id),
        ]
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(k.lower().encode(), v.encode()) for k, v in headers],
            }
        )
        gone = asyncio.ensure_future(_disconnected(receive))
        try:
            async for chunk in count_events(
                self._view,
                self._settings,
                entry.petition_id,
                request_headers.get("last-event-id"),
                gone,
            ):
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            gone.cancel()


async def _too_many_streams(send: Send) -> None:
    body = json.dumps(
        {"detail": "Too many live streams from your network; close some or poll the count"}
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 429,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"retry-after", b"30"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _disconnected(receive: Receive) -> None:
    while True:
        message: Message = await receive()
        if message["type"] == "http.disconnect":
            return


def _sse_event(entry: CountEntry) -> bytes:
    return (
        b"event: count\nid: " + entry.etag.strip('"').encode() + b"\ndata: " + entry.body + b"\n\n"
    )


async def count_events(
    view: CountsView,
    settings: CounterSettings,
    petition_id: UUID,
    last_event_id: str | None,
    gone: asyncio.Future[None],
) -> AsyncIterator[bytes]:
    """The stream's chunks until `gone` resolves: the current count, then each change."""
    STREAMS_OPENED.inc()
    STREAM_LISTENERS.inc()
    try:
        yield RETRY_ADVICE
        # A reconnecting client names the last version it saw: don't send it again.
        last_sent = f'"{last_event_id}"' if last_event_id else None
        while not gone.done():
            entry = view.by_id(petition_id)
            if entry is not None and entry.etag != last_sent:
                yield _sse_event(entry)
                last_sent = entry.etag
                # Coalesce: changes during the pause go out together in the next event.
                await asyncio.wait({gone}, timeout=settings.stream_min_interval_seconds)
                continue
            changed = view.changed(petition_id)
            done, _ = await asyncio.wait(
                {changed, gone},
                timeout=settings.stream_heartbeat_seconds,
                return_when=asyncio.FIRST_COMPLETED,
            )
            if not done:
                yield b": heartbeat\n\n"
    finally:
        STREAM_LISTENERS.dec()
