"""RelayWakeup: every call is followed by a NOTIFY sent after it; calls made while one is
on its way, or soon after it was sent (the spacing), share the next. The database is a
stand-in whose NOTIFY the test lets finish (the real one:
tests/integration/runtime/test_runtime_parts.py)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from groundswell_runtime.outbox import RelayWakeup


class HeldDatabase:
    """A pool whose every NOTIFY waits until the test lets it through."""

    def __init__(self) -> None:
        self.started = 0  # NOTIFYs sent (the statement begun)
        self.finished = 0
        self.proceed = asyncio.Event()
        self.fail = False

    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[HeldDatabase]:
        yield self

    async def execute(self, statement: str, *args: Any) -> None:
        assert "pg_notify" in statement and args == ("s_outbox",)
        self.started += 1
        await self.proceed.wait()
        self.proceed.clear()
        if self.fail:
            raise ConnectionResetError
        self.finished += 1


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_calls_while_a_notify_is_on_its_way_share_one_more() -> None:
    db = HeldDatabase()
    wake = RelayWakeup(db, "s", spacing=0)  # type: ignore[arg-type]
    try:
        wake()
        await settle()
        assert db.started == 1  # on its way
        for _ in range(3):  # commits made meanwhile: it may have left before them
            wake()
        db.proceed.set()
        await settle()
        assert (db.started, db.finished) == (2, 1)  # one more, for all three
        db.proceed.set()
        await settle()
        assert (db.started, db.finished) == (2, 2)
        await settle()
        assert db.started == 2  # and nothing without a call
    finally:
        await wake.close()


async def test_calls_before_it_leaves_share_it_and_a_failure_ends_the_round() -> None:
    db = HeldDatabase()
    wake = RelayWakeup(db, "s", spacing=0)  # type: ignore[arg-type]
    try:
        for _ in range(3):  # before the task runs: the NOTIFY it sends follows them all
            wake()
        await settle()
        db.fail = True
        db.proceed.set()
        await settle()
        assert (db.started, db.finished) == (1, 0)  # failed: the relay's poll covers it
        db.fail = False
        wake()  # the next commit tries again
        await settle()
        db.proceed.set()
        await settle()
        assert (db.started, db.finished) == (2, 1)
    finally:
        await wake.close()


async def test_calls_soon_after_a_notify_wait_out_the_spacing_and_share_the_next() -> None:
    db = HeldDatabase()
    wake = RelayWakeup(db, "s", spacing=0.3)  # type: ignore[arg-type]
    try:
        wake()
        await settle()
        db.proceed.set()
        await settle()
        assert (db.started, db.finished) == (1, 1)
        wake()  # commits right after it was sent
        wake()
        await asyncio.sleep(0.05)
        assert db.started == 1  # not yet: the relay would not pass sooner anyway
        await asyncio.sleep(0.5)
        assert db.started == 2  # then one, after both
        db.proceed.set()
        await settle()
        assert db.finished == 2
        await asyncio.sleep(0.5)
        assert db.started == 2  # and nothing without a call
    finally:
        await wake.close()
