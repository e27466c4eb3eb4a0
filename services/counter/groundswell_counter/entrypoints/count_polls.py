"""A poll of a known petition's count, answered without the framework.

A count is one cached document (`CountsView`): the work of a poll is matching the path and
the ETag. Through FastAPI and the middlewares around it, a poll cost the counter a few
hundred microseconds of routing and wrapping, and campaign sites' widgets (and the live
page's fallback when Server-Sent Events are blocked) poll, in a surge, far more often
than anyone signs. So, as signing's `fast_sign` does for its one request, this answers
exactly what the route would (`http.get_count`; a test compares the two header by
header) with the same rules' own helpers: the request id bound and echoed
(`bind_request_id`), metrics and the request log (`record_request`), the ETag and the
caching headers (`etag_matches`, `cache_control`), and the `Vary: Origin` the CORS
middleware adds to every answer. Everything else goes to the app: unknown petitions
(their 404), and a cross-origin request (the CORS middleware's headers).
"""

from __future__ import annotations

import re
import time
from types import SimpleNamespace

from groundswell_runtime.correlation import bind_request_id
from groundswell_runtime.ops import RequestLogPolicy, record_request
from starlette.types import ASGIApp, Receive, Scope, Send

from groundswell_counter.adapters.counts_view import CountsView
from groundswell_counter.config import CounterSettings

COUNT_PATH = re.compile(r"^/api/petitions/(?P<slug>[^/]+)/count$")
# What the router would leave in the scope: the route template labels the metrics.
ROUTE = SimpleNamespace(path="/api/petitions/{slug}/count")


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    candidates = {tag.strip().removeprefix("W/") for tag in if_none_match.split(",")}
    return "*" in candidates or etag in candidates


def cache_control(settings: CounterSettings) -> str:
    return (
        f"public, max-age={settings.cache_max_age_seconds}, "
        f"stale-while-revalidate={settings.cache_stale_while_revalidate_seconds}"
    )


class CountPolls:
    """Outermost: `app` is everything else (live streams, then the FastAPI app)."""

    def __init__(self, app: ASGIApp, view: CountsView, settings: CounterSettings) -> None:
        self.app = app
        self._view = view
        self._cache_control = cache_control(settings).encode()
        self._request_log = RequestLogPolicy.from_environment()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = (
            COUNT_PATH.match(scope["path"])
            if scope["type"] == "http" and scope["method"] == "GET"
            else None
        )
        entry = self._view.by_slug(match["slug"]) if match else None
        if entry is None or _header(scope, b"origin") is not None:
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        scope["route"] = ROUTE
        headers = [
            bind_request_id(scope["headers"]),
            (b"etag", entry.etag.encode()),
            (b"cache-control", self._cache_control),
            (b"vary", b"Origin"),
        ]
        if etag_matches(_header(scope, b"if-none-match"), entry.etag):
            status, body = 304, b""
        else:
            status, body = 200, entry.body
            headers += [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        record_request(self._request_log, scope, status, started)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None
