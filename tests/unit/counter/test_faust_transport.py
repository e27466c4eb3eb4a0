"""The fetcher's per-record hand-over: one task instead of four, same outcomes; the
consumer thread's loop (no broker)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import uvloop
from groundswell_counter.adapters.faust_transport import _waits_on, run_unless_set
from groundswell_counter.config import CounterSettings
from groundswell_counter.entrypoints.faust_app import CounterWorker
from mode.utils.locks import Event as ModeEvent


async def test_work_that_finishes_wins_and_leaves_no_waiter_behind() -> None:
    flow, stopped = asyncio.Event(), ModeEvent()

    async def handle() -> None:
        await asyncio.sleep(0)

    assert await run_unless_set(handle(), (flow, stopped)) is True
    assert not flow._waiters and not stopped._waiters


async def test_work_is_cancelled_when_an_event_is_set_first() -> None:
    flow, stopped = asyncio.Event(), ModeEvent()
    cancelled = asyncio.Event()

    async def handle() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    asyncio.get_running_loop().call_later(0.01, flow.set)
    assert await run_unless_set(handle(), (flow, stopped)) is False
    await asyncio.wait_for(cancelled.wait(), 1)
    assert not flow._waiters and not stopped._waiters


async def test_an_error_in_the_work_is_raised() -> None:
    async def handle() -> None:
        raise ValueError("bad record")

    with pytest.raises(ValueError, match="bad record"):
        await run_unless_set(handle(), (asyncio.Event(), ModeEvent()))


async def test_only_the_wait_of_that_very_event_is_recognised() -> None:
    flow, other = asyncio.Event(), asyncio.Event()
    mine, theirs, elsewhere = flow.wait(), other.wait(), asyncio.sleep(0)
    try:
        assert _waits_on(mine, flow)
        assert not _waits_on(theirs, flow)
        assert not _waits_on(elsewhere, flow)
    finally:
        for coro in (mine, theirs, elsewhere):
            coro.close()


async def test_the_consumer_thread_runs_on_uvloop(tmp_path: Path) -> None:
    # mode would give the thread an asyncio loop; the counter's transport gives uvloop.
    worker = CounterWorker(
        CounterSettings(kafka_bootstrap_servers="127.0.0.1:1", data_dir=tmp_path)
    )
    thread = worker.app.consumer._thread
    try:
        assert isinstance(thread.thread_loop, uvloop.Loop)
    finally:
        thread.thread_loop.close()
