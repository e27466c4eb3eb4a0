"""A small HTTP/1.1 client for the load: one connection per request, `Connection: close`.

Why not httpx: its connection pool re-scans every waiting request on every change
(quadratic), and an open-loop load piles up waiting requests exactly when a service is
down, so the load itself stalled under the faults it is meant to observe. A fresh
loopback connection per request costs a fraction of a millisecond and carries no stale
keep-alive state across a killed server.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode, urlsplit


@dataclass(frozen=True)
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes


class Dropped(ConnectionError):
    """The connection ended before a whole status line arrived."""


async def request(
    method: str,
    url: str,
    *,
    headers: dict[str, str] | None = None,
    json_body: Any = None,
    form: dict[str, str] | None = None,
    limit: float = 15.0,
) -> Answer:
    """Raises OSError (refused, reset, Dropped) or TimeoutError; never anything else."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    body = b""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}:{port}", "Connection: close"]
    if json_body is not None:
        body = json.dumps(json_body).encode()
        lines.append("Content-Type: application/json")
    elif form is not None:
        body = urlencode(form).encode()
        lines.append("Content-Type: application/x-www-form-urlencoded")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(body)}")
    lines.extend(f"{k}: {v}" for k, v in (headers or {}).items())
    async with asyncio.timeout(limit):
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
            raw = await reader.read(-1)  # the server closes after its answer
        finally:
            writer.close()
    head, _, rest = raw.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields = status_line.split(" ", 2)
    if len(fields) < 2 or not fields[1].isdigit():
        raise Dropped(f"no status line ({len(raw)} bytes)")
    answer_headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        answer_headers[name.strip().lower()] = value.strip()
    return Answer(int(fields[1]), answer_headers, rest)
