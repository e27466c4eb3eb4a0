"""The listener every service's server runs with: all waiting connections per loop turn."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
import uvloop
from groundswell_runtime import accepting, serving
from starlette.types import Receive, Scope, Send

WAITING = 200  # connections queued in the kernel before the loop turns
TURNS = 5


def _made_after(new_loop: Callable[[], asyncio.AbstractEventLoop]) -> int:
    """Queue WAITING connections on a listener, turn the loop TURNS times, count them."""
    loop = new_loop()
    made: list[asyncio.BaseTransport] = []

    class Counting(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            made.append(transport)

    clients: list[socket.socket] = []
    try:
        server = loop.run_until_complete(
            loop.create_server(Counting, "127.0.0.1", 0, backlog=2 * WAITING)
        )
        port = server.sockets[0].getsockname()[1]
        # The kernel completes each handshake into the accept queue: the loop is idle.
        clients = [socket.create_connection(("127.0.0.1", port)) for _ in range(WAITING)]
        for _ in range(TURNS):
            loop.run_until_complete(asyncio.sleep(0))
        count = len(made)
        server.close()
        for transport in made:
            transport.close()
        loop.run_until_complete(asyncio.sleep(0))
        return count
    finally:
        for client in clients:
            client.close()
        loop.close()


def test_uvloops_own_listener_takes_one_connection_a_turn() -> None:
    # Why AcceptingLoop exists. If this fails, uvloop now accepts a backlog at once and
    # groundswell_runtime.accepting can go.
    assert _made_after(uvloop.new_event_loop) < WAITING // 4


def test_the_accepting_loop_takes_every_waiting_connection_at_once() -> None:
    assert _made_after(accepting.AcceptingLoop) == WAITING


def test_the_accepting_loop_stops_listening_when_closed() -> None:
    loop = accepting.AcceptingLoop()
    try:
        server: Any = loop.run_until_complete(loop.create_server(asyncio.Protocol, "127.0.0.1", 0))
        port = server.sockets[0].getsockname()[1]
        assert server.is_serving()
        server.close()
        loop.run_until_complete(server.wait_closed())
        assert not server.is_serving()
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port)).close()
    finally:
        loop.close()


async def _hello(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"hello"})


@contextlib.contextmanager
def _running(config: uvicorn.Config) -> Iterator[uvicorn.Server]:
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run)
    thread.start()
    try:
        deadline = time.monotonic() + 10
        while not server.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.01)
        yield server
    finally:
        server.should_exit = True
        thread.join(10)


def test_services_serve_with_it() -> None:
    config = serving.server_config(_hello, host="127.0.0.1", port=0, lifespan="off")
    assert config.loop == "groundswell_runtime.accepting:AcceptingLoop"
    with _running(config) as server:
        (listener,) = server.servers
        assert isinstance(listener, accepting.AcceptingServer)
        port = listener.sockets[0].getsockname()[1]
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
            responses = [client.get("/") for _ in range(3)]  # one kept-alive connection
        assert [(r.status_code, r.text) for r in responses] == [(200, "hello")] * 3
    assert not listener.is_serving()
