"""How late this process's event loop runs: the sign that it cannot keep up.

A request waits for the loop before any code of ours sees it: while the process is busy,
or while the machine's cores are taken by others (measured on two cores at 1,000
signatures a second, signing's own CPU was a third of a core, yet requests waited for
seconds in a run where every process competed for the cores). Queues we hold (the
signature writer's) bound their own waits; this one only shows as lateness. `LoopLag`
sleeps a few milliseconds at a time and keeps how much later than asked it woke:
anything waiting in the loop has waited about that long too. `sustained` is the least
of the last few readings, so one pause (a garbage collection, a burst of arrivals) does
not count: a process that cannot keep up is late at every reading.
"""

from __future__ import annotations

import asyncio
from collections import deque

from prometheus_client import Gauge

LOOP_LAG = Gauge("groundswell_event_loop_lag_seconds", "How late the event loop ran its last timer")


class LoopLag:
    def __init__(self, interval: float = 0.02, readings: int = 3) -> None:
        self._interval = interval
        self._readings: deque[float] = deque(maxlen=readings)
        self.seconds = 0.0

    @property
    def sustained(self) -> float:
        """The least lag of the last few readings (0 until there are that many)."""
        full = len(self._readings) == self._readings.maxlen
        return min(self._readings) if full else 0.0

    async def run(self) -> None:
        """Runs until cancelled."""
        loop = asyncio.get_running_loop()
        try:
            while True:
                asked = loop.time() + self._interval
                await asyncio.sleep(self._interval)
                self.seconds = max(0.0, loop.time() - asked)
                self._readings.append(self.seconds)
                LOOP_LAG.set(self.seconds)
        finally:
            self.seconds = 0.0
            self._readings.clear()
