"""A response's head and body in one write to the socket, not two.

uvicorn writes an HTTP response in two `transport.write` calls: the status line and
headers when the app sends `http.response.start`, the body when it sends
`http.response.body`. uvloop writes at once when its buffer is empty, so each response
cost two `write` system calls and, with Nagle off, two TCP segments, each waking the
client. On these machines a system call and a wake-up are dear: `write` was the
largest single item in signing's profile (17% of its samples at 1,000 signatures/s),
and one of the two per response is pure overhead.

`JoinedWrites` wraps a connection's transport (`serving.GuardedHttpToolsProtocol`
installs it): a write that starts a response (`HTTP/1.1 ...`) is held, and the next
write on the connection goes out with it. An app sends its body in the same step as its
head (nothing awaits in between unless the client stops reading), so the two leave as
one. A head with no body after it (HEAD, 204, 304, a stream whose first chunk is slow)
is written when the event loop next turns, and before anything else on the
connection, including a close: the bytes and their order are those of uvicorn.
"""

from __future__ import annotations

import asyncio
from typing import Any

_RESPONSE_START = b"HTTP/1.1 "


class JoinedWrites:
    """The connection's transport, holding a response's head until its body joins it."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: bytes | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held + data)
        elif data[:9] == _RESPONSE_START:
            self._held = bytes(data)
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        """Write a held head now (nothing, if its body already took it along)."""
        held = self._held
        if held is not None:
            self._held = None
            if not self._transport.is_closing():
                self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def __getattr__(self, name: str) -> Any:
        # Everything else (pause_reading, abort, buffer sizes...) is the transport's own.
        return getattr(self._transport, name)
