"""LISTEN that survives a database restart.

asyncpg delivers NOTIFY only while the connection that ran LISTEN lives; when the
server restarts or cuts it, nothing says so to the listener callback. `Listener` keeps
one pool connection listening, notices its loss (termination callback, `is_closed`),
and opens another with backoff. On every (re)start it sets the event once, since
notifications sent while nobody listened are gone; callers also poll.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg
import structlog

from groundswell_mailer.domain.delivery import backoff

log = structlog.get_logger()


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    return lambda _conn: event.set()


async def _wait(event: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class Listener:
    def __init__(self, pool: asyncpg.Pool, channel: str, notified: asyncio.Event) -> None:
        self._pool = pool
        self._channel = channel
        self._notified = notified

    def _on_notify(self, *_args: object) -> None:
        self._notified.set()

    async def run(self, finished: asyncio.Event) -> None:
        """Listen until `finished` is set, opening a new connection whenever one is lost."""
        failures = 0
        while not finished.is_set():
            lost = asyncio.Event()
            on_lost = _setter(lost)
            conn: asyncpg.Connection | None = None
            try:
                conn = await self._pool.acquire()
                conn.add_termination_listener(on_lost)
                await conn.add_listener(self._channel, self._on_notify)
                failures = 0
                self._notified.set()  # anything notified while nobody listened
                while not (lost.is_set() or conn.is_closed() or finished.is_set()):
                    await _wait(lost, 1.0)
                if not finished.is_set():
                    log.warning("listener_lost", channel=self._channel)
            except Exception as exc:
                failures += 1
                log.warning("listener_failed", channel=self._channel, error=type(exc).__name__)
            finally:
                if conn is not None:
                    await self._release(conn, on_lost)
            if not finished.is_set():
                await _wait(finished, backoff(failures + 1))

    async def _release(self, conn: asyncpg.Connection, on_lost: Callable[[object], None]) -> None:
        # A connection the server cut may already be back in the pool (asyncpg releases
        # it), and then every method of the proxy raises: nothing here may escape.
        with contextlib.suppress(Exception):
            conn.remove_termination_listener(on_lost)
        try:
            if not conn.is_closed():
                await conn.remove_listener(self._channel, self._on_notify)
            await self._pool.release(conn, timeout=5)
        except Exception:
            # Cut mid-query, or already gone: discard it rather than return it.
            with contextlib.suppress(Exception):
                conn.terminate()
                await self._pool.release(conn, timeout=1)
