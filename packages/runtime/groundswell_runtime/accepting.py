"""uvloop, with a listener that takes every waiting connection at once.

uvloop's listener (libuv's) accepts one connection per turn of the event loop. A loop
that is busy turns every few tens of milliseconds, so when a surge opens hundreds of
connections at once they wait in the kernel's accept queue and are taken at ~25 a
second: measured under signing at 800-1,500/s offered, `ss -ltn` showed 390-450
connections queued for seconds, and the first requests of a surge waited 1-3 s for
an answer that the in-flight bound would have given (a 503) in milliseconds. asyncio's
own loop accepts a backlog of them per turn (its accept queue stayed empty in the
same run) but costs signing ~20% more CPU a request, so uvloop stays and only its
listener is replaced: `AcceptingLoop.create_server` listens with `add_reader` and, on
each wake, accepts everything waiting (up to `ACCEPTS_PER_WAKE`) and hands each socket
to uvloop's own transport with `connect_accepted_socket`. Nothing else changes:
reading, writing and the protocol are uvloop's and uvicorn's as before.

What this relies on, to check when uvicorn or uvloop is upgraded (the test in
tests/unit/runtime/test_accepting.py fails if uvloop starts accepting all at once,
which would make this module unnecessary):

- uvicorn (0.54) takes its loop from `Config.loop`, which may be the import string of
  a callable that makes one ("groundswell_runtime.accepting:AcceptingLoop"; worker
  processes load it too); its `Server.startup` calls
  `loop.create_server(factory, host=, port=, ssl=, backlog=)`, or `sock=` for workers,
  keeps the result in `Server.servers`, reads `.sockets` for its startup log line and
  calls only `.close()` on it when stopping (it closes connections itself);
- uvloop's `connect_accepted_socket` takes ownership of the socket and calls the
  protocol factory before its first `await`.
TLS and other uses of `create_server` go to uvloop's listener unchanged.
"""

from __future__ import annotations

import asyncio
import errno
import socket
from collections.abc import Callable, Iterable
from typing import Any

import structlog
import uvloop

# A wake takes at most this many connections, so a flood cannot hold the loop for long;
# anything left is taken on the next turn.
ACCEPTS_PER_WAKE = 1_024
# Out of file descriptors (or memory): stop accepting for this long rather than spin on
# a listener that stays readable. asyncio's own listener does the same.
PAUSE_WHEN_EXHAUSTED_SECONDS = 1.0
_EXHAUSTED = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}

log = structlog.get_logger(__name__)

ProtocolFactory = Callable[[], asyncio.BaseProtocol]


class AcceptingServer(asyncio.AbstractServer):
    """Listening sockets served by `add_reader`: everything waiting is accepted per wake."""

    def __init__(
        self,
        loop: uvloop.Loop,
        protocol_factory: ProtocolFactory,
        sockets: Iterable[socket.socket],
    ) -> None:
        self._loop = loop
        self._protocol_factory = protocol_factory
        self._sockets = list(sockets)
        self._serving = False
        self._closed: asyncio.Future[None] = loop.create_future()
        # connect_accepted_socket runs as a task; the loop holds tasks only weakly.
        self._connecting: set[asyncio.Task[Any]] = set()

    @property
    def sockets(self) -> tuple[socket.socket, ...]:
        return tuple(self._sockets)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._serving

    async def start_serving(self) -> None:
        if self._serving or self._closed.done():
            return
        self._serving = True
        for sock in self._sockets:
            sock.setblocking(False)
            self._loop.add_reader(sock.fileno(), self._accept_waiting, sock)

    async def serve_forever(self) -> None:
        await self.start_serving()
        await asyncio.shield(self._closed)

    def close(self) -> None:
        if self._closed.done():
            return
        self._serving = False
        for sock in self._sockets:
            self._loop.remove_reader(sock.fileno())
            sock.close()
        self._closed.set_result(None)

    async def wait_closed(self) -> None:
        # Only the listeners are this object's; the connections belong to the protocol's
        # owner (uvicorn closes them in Server.shutdown), as they do under uvloop's own.
        await asyncio.shield(self._closed)

    def _accept_waiting(self, listener: socket.socket) -> None:
        for _ in range(ACCEPTS_PER_WAKE):
            try:
                conn, _address = listener.accept()
            except (BlockingIOError, InterruptedError):
                return  # nothing more is waiting
            except ConnectionAbortedError:
                continue  # the client gave up while queued
            except OSError as exc:
                if exc.errno not in _EXHAUSTED:
                    raise
                log.error("accept_paused", reason=errno.errorcode.get(exc.errno or 0, "?"))
                self._loop.remove_reader(listener.fileno())
                self._loop.call_later(PAUSE_WHEN_EXHAUSTED_SECONDS, self._resume, listener)
                return
            task = self._loop.create_task(self._connect(conn))
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    def _resume(self, listener: socket.socket) -> None:
        if self._serving:
            self._loop.add_reader(listener.fileno(), self._accept_waiting, listener)

    async def _connect(self, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await self._loop.connect_accepted_socket(self._protocol_factory, conn)
        except Exception as exc:
            conn.close()  # the client sees a close; the listener goes on
            if not isinstance(exc, OSError):  # a reset while queued is routine
                log.error("connection_setup_failed", error=type(exc).__name__)


class AcceptingLoop(uvloop.Loop):
    """uvloop.Loop whose plain TCP listeners accept everything waiting per turn."""

    async def create_server(  # type: ignore[override]  # uvloop's stub lists overloads
        self,
        protocol_factory: ProtocolFactory,
        host: str | None = None,
        port: int | None = None,
        *,
        sock: socket.socket | None = None,
        backlog: int = 100,
        ssl: Any = None,
        start_serving: bool = True,
        **kwargs: Any,
    ) -> asyncio.AbstractServer:
        if ssl is not None or kwargs:
            uvloops: Any = super()
            return await uvloops.create_server(  # type: ignore[no-any-return]
                protocol_factory,
                host,
                port,
                sock=sock,
                backlog=backlog,
                ssl=ssl,
                start_serving=start_serving,
                **kwargs,
            )
        if sock is not None:
            sockets = [sock]
            sock.listen(backlog)  # uvloop's listener does so too: the caller may not have
        else:
            sockets = await self._bind(host, port, backlog)
        server = AcceptingServer(self, protocol_factory, sockets)
        if start_serving:
            await server.start_serving()
        return server

    async def _bind(self, host: str | None, port: int | None, backlog: int) -> list[socket.socket]:
        # Every address the host resolves to, as asyncio's create_server binds them.
        infos = await self.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        sockets: list[socket.socket] = []
        try:
            for family, kind, proto, _name, address in dict.fromkeys(infos):
                sock = socket.socket(family, kind, proto)
                sockets.append(sock)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind(address)
                sock.listen(backlog)
        except OSError:
            for sock in sockets:
                sock.close()
            raise
        return sockets
