"""Over capacity, refuse signing requests before any work is spent on them.

The signature writer refuses new attempts when its queue is long or old (see
service_layer/group_commit.py), but by then the request has been routed, its body read
and validated, its tokens made: about a millisecond each, which a surge has none of.
This middleware asks the writer first and answers 503 with Retry-After at once: a
refused request costs a few microseconds, and the ones let through are answered in time.

It also holds the count of signing requests in the process (`InFlight`): a request waits
for the event loop as well as for the writer, and while the loop is late (the process
busy, or the cores taken by others) that wait shows in no queue of ours. At 1,500/s
offered on two cores, every request was held about half a second with the writer's
queue and the loop's lateness each under their limits. By Little's law the requests held
are the rate times how long each is held; holding at most `limit` bounds how long, at
whatever rate the process manages, and the rest are refused at once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from groundswell_signing.service_layer.group_commit import SHED_BY_REASON, Overloaded, ShedReason

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


def refusal(reason: ShedReason) -> list[Message]:
    """The answer over capacity (the route's, the lean path's and the door's): 503 with
    Retry-After, counted as shed for `reason`."""
    SHED_BY_REASON[reason].inc()
    return [
        {"type": "http.response.start", "status": 503, "headers": list(_HEADERS)},
        {"type": "http.response.body", "body": _BODY},
    ]


async def refuse(send: Send, reason: ShedReason) -> None:
    for message in refusal(reason):
        await send(message)


class InFlight:
    """Signing requests this process holds, from its front door to their answer."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.count = 0

    @property
    def full(self) -> bool:
        return self.count >= self.limit

    @contextmanager
    def held(self) -> Iterator[None]:
        self.count += 1
        try:
            yield
        finally:
            self.count -= 1


# Set in a signing request's scope once its draw against the share let in (backlog.py)
# has let it in, so that no later layer draws for it again.
ADMITTED = "groundswell.signing.admitted"


class ShedWhenBusy:
    def __init__(
        self,
        app: ASGIApp,
        overloaded: Callable[[Scope], ShedReason | None],
        in_flight: InFlight,
    ) -> None:
        self.app = app
        self.overloaded = overloaded
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and SIGNING_PATH.match(scope["path"])
        ):
            await self.app(scope, receive, send)
        elif reason := self.overloaded(scope):
            await refuse(send, reason)
        else:
            with self.in_flight.held():
                await self.app(scope, receive, send)
