"""A response's head and body leave in one write (groundswell_runtime.joined_writes),
with the bytes and their order unchanged, through the protocol every service runs."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest
from fastapi import FastAPI, Response
from groundswell_runtime import serving
from groundswell_runtime.joined_writes import JoinedWrites
from uvicorn.server import ServerState

HEAD = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    """What the socket would be asked to send, write by write."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "written after close"
        self.writes.append(bytes(data))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8000)}.get(
            name, default
        )

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def joined() -> tuple[JoinedWrites, RecordingTransport]:
    raw = RecordingTransport()
    return JoinedWrites(cast(asyncio.Transport, raw), asyncio.get_running_loop()), raw


async def test_a_head_and_its_body_are_one_write() -> None:
    transport, raw = joined()
    transport.write(HEAD)
    transport.write(b"ok")
    assert raw.writes == [HEAD + b"ok"]
    await asyncio.sleep(0)  # the loop turns: nothing more to write
    assert raw.writes == [HEAD + b"ok"]


async def test_a_head_without_a_body_goes_out_when_the_loop_turns() -> None:
    transport, raw = joined()
    transport.write(HEAD)
    assert raw.writes == []
    await asyncio.sleep(0)
    assert raw.writes == [HEAD]


async def test_a_close_writes_what_is_held_first() -> None:
    transport, raw = joined()
    transport.write(HEAD)
    transport.close()
    assert raw.writes == [HEAD]
    assert raw.closed
    await asyncio.sleep(0)
    assert raw.writes == [HEAD]


async def test_other_writes_are_not_held_and_keep_their_order() -> None:
    transport, raw = joined()
    transport.write(b"5\r\nhello\r\n")  # a chunk of a streamed body
    assert raw.writes == [b"5\r\nhello\r\n"]
    transport.write(HEAD)
    transport.write(memoryview(b"ok"))
    transport.write(b"0\r\n\r\n")
    assert raw.writes == [b"5\r\nhello\r\n", HEAD + b"ok", b"0\r\n\r\n"]


@pytest.fixture
def app() -> FastAPI:
    app = FastAPI()

    @app.get("/thing")
    async def thing() -> dict[str, str]:
        return {"a": "b"}

    @app.get("/nothing", status_code=204)
    async def nothing() -> Response:
        return Response(status_code=204)

    return app


async def served(app: FastAPI, request: bytes) -> RecordingTransport:
    """`request` through the protocol the services run, until the connection is idle."""
    config = serving.server_config(app, host="127.0.0.1", port=0, lifespan="off")
    config.load()
    protocol = serving.GuardedHttpToolsProtocol(
        config=config, server_state=ServerState(), app_state={}
    )
    raw = RecordingTransport()
    protocol.connection_made(cast(asyncio.Transport, raw))
    protocol.data_received(request)
    for _ in range(50):
        await asyncio.sleep(0.01)
        if protocol.cycle is not None and protocol.cycle.response_complete and raw.writes:
            break
    protocol.connection_lost(None)
    return raw


async def test_the_services_protocol_answers_in_one_write(app: FastAPI) -> None:
    raw = await served(app, b"GET /thing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(raw.writes) == 1
    assert raw.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    assert raw.writes[0].endswith(b'\r\n\r\n{"a":"b"}')


async def test_an_answer_without_a_body_is_sent_all_the_same(app: FastAPI) -> None:
    raw = await served(app, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
    assert len(raw.writes) == 1
    assert raw.writes[0].startswith(b"HTTP/1.1 204 No Content\r\n")
    assert raw.writes[0].endswith(b"\r\n\r\n")
