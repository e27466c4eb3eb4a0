"""How every service's HTTP server runs: one place for the limits that refuse abuse.

uvicorn's defaults accept any number of connections, headers of any size and number,
and a request head that trickles in forever: its fast parser (httptools) ignores
`h11_max_incomplete_event_size`, and no timer runs until a first response is sent. A
64 MB header was buffered whole; a connection sending one byte a second stayed open.

`GuardedHttpToolsProtocol` keeps httptools (h11 is pure Python, several times slower
per request) and adds what it lacks, at the protocol level where nothing is buffered
for the app yet:

- the request head (request line and headers) may hold at most `MAX_HEAD_BYTES` and
  `MAX_HEADERS` fields, else 431 and the connection is closed. Bytes are counted as they
  arrive, so at most one read (<= 256 KB) past the limit is ever held;
- the head must be complete within `HEAD_TIMEOUT_SECONDS` of the connection opening or
  of the previous response ending (slowloris), and a body must arrive within
  `BODY_TIMEOUT_SECONDS` of its head (slow POST); else the connection is closed;
- beyond `MAX_CONCURRENCY` connections or in-flight requests per process, uvicorn
  answers 503 at once, the cheapest answer there is; idle keep-alive connections are
  closed after `KEEP_ALIVE_SECONDS`;
- a response's head and body leave in one write, not uvicorn's two (joined_writes.py).

An app can also answer some requests at the door (`install_door`): once a request's
head is parsed, before uvicorn makes a task and calls the app, the door may hand back
the whole answer, which is sent at once through uvicorn's own `RequestResponseCycle.send`
(so the bytes, keep-alive and pipelining are uvicorn's). Signing refuses a surge's excess
this way (fast_sign.py): a refusal through the app cost ~0.14 ms of CPU, and at 4,000
requests/s offered most of them are refusals. It relies on uvicorn (0.54) internals: the
protocol's `_start_asgi_task(cycle, app)`, a cycle's `send` awaiting only while
`flow.write_paused`, and `on_body` dropping a body once its response is complete. If a
uvicorn release changes the first, the door is never asked and the app refuses as before
(the test in tests/integration/signing/test_fast_sign.py then fails).

`server_config` builds the uvicorn.Config (for servers embedded in another event loop,
like the counter's); `serve` runs one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, cast

import uvicorn
from starlette.types import Message, Scope
from uvicorn.protocols.http.httptools_impl import (
    STATUS_LINE,
    HttpToolsProtocol,
    RequestResponseCycle,
)

from groundswell_runtime.joined_writes import JoinedWrites

# Beyond this many connections or in-flight requests per process, answer 503 at once.
MAX_CONCURRENCY = 2_048
# Idle keep-alive connections are closed after this long.
KEEP_ALIVE_SECONDS = 5
# Request line plus headers: nginx allows 4 x 8 KB, Node 16 KB. Nothing here uses cookies.
MAX_HEAD_BYTES = 16 * 1024
# Apache's LimitRequestFields; browsers send about 20.
MAX_HEADERS = 100
# A request head is a few hundred bytes: a client that cannot send it in this long is
# holding the connection, not using it.
HEAD_TIMEOUT_SECONDS = 10.0
# Bodies here are at most 128 KB (admin) and usually under 1 KB.
BODY_TIMEOUT_SECONDS = 30.0


TOO_LARGE = b"Request header fields too large.\n"

# Given a request's scope (its body not read), the ASGI messages of the answer to send
# at once, or None to hand the request to the app as usual.
Door = Callable[[Scope], Sequence[Message] | None]
_DOOR = "groundswell_door"


def install_door(app: Any, door: Door) -> None:
    """Let `door` answer requests to `app` before the app sees them (see the module doc)."""
    setattr(app, _DOOR, door)


def _run_now(send: Coroutine[Any, Any, None]) -> None:
    """Run `RequestResponseCycle.send` to its end without a task. It awaits only while
    the transport's write buffer is full (`flow.drain`), which the caller ruled out."""
    try:
        send.send(None)
    except StopIteration:
        return
    send.close()
    raise RuntimeError("uvicorn's send waited with the write buffer not full")


class _HeadTooLarge(Exception):
    """Raised from a parser callback to stop parsing; httptools wraps it."""


class GuardedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on the request head and on slow clients."""

    max_head_bytes = MAX_HEAD_BYTES
    max_headers = MAX_HEADERS
    head_timeout = HEAD_TIMEOUT_SECONDS
    body_timeout = BODY_TIMEOUT_SECONDS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = False  # from a message's first byte to the end of its head
        self._head_read = 0  # bytes of reads that ended inside the current head
        self._head_parsed = 0  # bytes of its complete request line and fields
        self._head_fields = 0
        self._refused = False
        self._timer: asyncio.TimerHandle | None = None
        self._timing_body = False
        self._door: Door | None = getattr(self.app, _DOOR, None)

    # --- timers ----------------------------------------------------------------------
    def _arm(self, seconds: float, *, body: bool = False) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._too_slow)
        self._timing_body = body

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _responding(self) -> bool:
        return self.cycle is not None and not self.cycle.response_complete

    def _too_slow(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        if self._in_head and not self._responding():
            self._refuse(408, b"Request head not received in time.\n")
        else:
            # Idle before a request, or a body that stopped coming: close. The app, if
            # it is waiting for the body, sees a disconnect.
            self.transport.close()

    # --- refusals --------------------------------------------------------------------
    def _refuse(self, status: int, message: bytes) -> None:
        self._refused = True
        self._disarm()
        if not self._responding():  # never in the middle of another response
            self.transport.write(
                b"".join(
                    [
                        STATUS_LINE[status],
                        b"content-type: text/plain; charset=utf-8\r\n",
                        b"content-length: " + str(len(message)).encode() + b"\r\n",
                        b"connection: close\r\n\r\n",
                        message,
                    ]
                )
            )
        self.transport.close()

    def send_400_response(self, msg: str) -> None:
        # A parser callback raised _HeadTooLarge: answer 431, not "invalid request".
        if self._refused:
            self._refuse(431, TOO_LARGE)
        else:
            super().send_400_response(msg)

    # --- protocol and parser callbacks -----------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        # Each response's head and body in one write (joined_writes.py). Flow control
        # keeps the real transport; every write on the connection goes through this one.
        self.transport = cast(asyncio.Transport, JoinedWrites(transport, self.loop))
        self._arm(self.head_timeout)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # A read that ends inside a head is head (but for the end of a pipelined
            # previous request it may start with: a small overcount). httptools buffers
            # the partial field, so it is counted now, not when the field completes.
            self._head_read += len(data)
            if self._head_read > self.max_head_bytes:
                self._refuse(431, TOO_LARGE)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_read = self._head_parsed = self._head_fields = 0
        if self._timer is None and not self._responding():  # e.g. pipelined
            self._arm(self.head_timeout)

    def on_url(self, url: bytes) -> None:
        self._count(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._head_fields += 1
        if self._head_fields > self.max_headers:
            self._refused = True
            raise _HeadTooLarge
        self._count(len(name) + len(value) + 4)
        super().on_header(name, value)

    def _count(self, size: int) -> None:
        # A head that arrives whole in one read never ends a read inside itself:
        # its complete parts are counted here.
        self._head_parsed += size
        if self._head_parsed > self.max_head_bytes:
            self._refused = True
            raise _HeadTooLarge

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._arm(self.body_timeout, body=True)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        if self._timing_body:
            self._disarm()
        super().on_message_complete()

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: Any) -> None:
        # uvicorn calls this for every request it hands to the app, pipelined ones too,
        # once the head is parsed and no earlier response on the connection is pending.
        answer = self._door(cast(Scope, cycle.scope)) if self._door is not None else None
        if answer is None:
            super()._start_asgi_task(cycle, app)
            return
        # Sent as the app's answer would be. The body, if any, is then dropped as it
        # arrives (uvicorn ignores a body once its response is complete), and the next
        # request on the connection is served as usual.
        for n, message in enumerate(answer):
            if self.flow.write_paused:  # the client is not reading: send the rest in turn
                self.loop.create_task(_send_all(cycle, answer[n:]))
                return
            _run_now(cycle.send(message))  # type: ignore[arg-type]

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The next request's head is due within the timeout (uvicorn's own keep-alive
        # timer closes a connection that stays silent for KEEP_ALIVE_SECONDS).
        if not self.transport.is_closing() and not self._responding():
            self._arm(self.head_timeout)


async def _send_all(cycle: RequestResponseCycle, messages: Sequence[Message]) -> None:
    for message in messages:
        await cycle.send(message)  # type: ignore[arg-type]


def server_config(app: Any, *, host: str, port: int, **overrides: Any) -> uvicorn.Config:
    """The uvicorn.Config every service runs with; `overrides` win."""
    return uvicorn.Config(app, **_options(host, port) | overrides)


def _options(host: str, port: int) -> dict[str, Any]:
    return {
        "host": host,
        "port": port,
        "log_config": None,  # keep the JSON logging the service configured
        "access_log": False,  # client addresses are personal data
        "server_header": False,
        # Forwarded headers are read by groundswell_runtime.client_address, with the
        # service's own trusted-proxy list; uvicorn must not rewrite the peer first.
        "proxy_headers": False,
        "limit_concurrency": MAX_CONCURRENCY,
        "timeout_keep_alive": KEEP_ALIVE_SECONDS,
        # Only for an override to http="h11"; the guarded protocol enforces the rest.
        "h11_max_incomplete_event_size": MAX_HEAD_BYTES,
        "backlog": 2_048,
        # uvloop, with a listener that takes a surge's connections at once (accepting.py).
        "loop": "groundswell_runtime.accepting:AcceptingLoop",
        # An import string, so worker processes load it too.
        "http": "groundswell_runtime.serving:GuardedHttpToolsProtocol",
    }


def serve(
    app: Any,
    *,
    host: str,
    port: int,
    workers: int = 1,
    factory: bool = False,
    **overrides: Any,
) -> None:
    """Run an ASGI app (or, with `workers` > 1, an import string of an app factory)."""
    options = _options(host, port)
    if workers > 1:
        options.update(workers=workers, factory=factory)
    uvicorn.run(app, **options | overrides)
