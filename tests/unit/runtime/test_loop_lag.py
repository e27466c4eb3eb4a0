"""LoopLag: a loop held up at every reading shows as sustained lag, which clears once it
runs freely again; a single pause does not."""

from __future__ import annotations

import asyncio
import contextlib
import time

from groundswell_runtime.loop_lag import LoopLag


async def test_a_held_up_loop_shows_as_lag_then_clears() -> None:
    lag = LoopLag(interval=0.01)
    task = asyncio.create_task(lag.run())
    try:
        await asyncio.sleep(0.05)
        time.sleep(0.3)  # one pause: seen, but not sustained
        await asyncio.sleep(0.001)  # the lag task wakes, late
        assert lag.seconds > 0.1 and lag.sustained < 0.1
        for _ in range(2):  # late at every reading: a process that cannot keep up
            time.sleep(0.3)
            await asyncio.sleep(0.001)
        assert lag.sustained > 0.1
        await asyncio.sleep(0.1)  # runs freely again
        assert lag.seconds < 0.1 and lag.sustained < 0.1
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert lag.seconds == 0.0
