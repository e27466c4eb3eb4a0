"""Over capacity, refuse signing requests before any work is spent on them.

The signature writer refuses new attempts when its queue is long or old (see
service_layer/group_commit.py), but by then the request has been routed, its body read
and validated, its tokens made: about a millisecond each, which a surge has none of.
This middleware asks the writer first and answers 503 with Retry-After at once: a
refused request costs a few microseconds, and the ones let through are answered in time.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from groundswell_signing.service_layer.group_commit import SHED, Overloaded

SIGNING_PATH = re.compile(r"^/api/petitions/[^/]+/signatures$")
_BODY = json.dumps(
    {
        "detail": "Too many signatures at once; nothing was recorded. "
        f"Try again in {Overloaded.retry_after} second(s)."
    }
).encode()
_HEADERS = [
    (b"content-type", b"application/json"),
    (b"content-length", str(len(_BODY)).encode()),
    (b"retry-after", str(Overloaded.retry_after).encode()),
    (b"cache-control", b"no-store"),
]


class ShedWhenBusy:
    def __init__(self, app: ASGIApp, overloaded: Callable[[], bool]) -> None:
        self.app = app
        self.overloaded = overloaded

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and SIGNING_PATH.match(scope["path"])
            and self.overloaded()
        ):
            SHED.inc()
            await send({"type": "http.response.start", "status": 503, "headers": _HEADERS})
            await send({"type": "http.response.body", "body": _BODY})
            return
        await self.app(scope, receive, send)
