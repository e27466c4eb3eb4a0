"""Work that can wait steps aside in a surge: the mailer and sharing stop taking in new
work while the machine's cores are contended and they are behind, and catch up after.

Why a nice value is not enough (`groundswell_stack.services.PRIORITY` runs both at nice
10, and `priority.lend_priority` lowers their PostgreSQL backends too): it shares the
cores, not what their work costs elsewhere, in PostgreSQL (WAL, locks, buffers,
autovacuum of their tables) and in the broker (their fetches, their events). Measured
(docs/performance.md, 2026-12-05, 2,000 signatures/s after 250, 500 and 1,000/s): with
both running at nice 10, signing's HTTP p99 was 67.6 ms and freshness p99 638 ms;
with both stopped for that step (SIGSTOP) 21.2 ms and 366 ms, and every thank-you was
in the SMTP sink 80 s after the step; with this module, 27.6 ms and 358 ms.

The signal is the kernel's CPU pressure (PSI, `/proc/pressure/cpu`): the share of time
in which at least one runnable task waited for a core, host-wide (or the container's,
where the kernel gives it one). Measured on 2 cores, averaged over `WINDOW_SECONDS`:
~0.35-0.45 at 1,000/s with everything running, 0.45-0.73 at 2,000/s with the mailer and
sharing stopped, 0.1-0.45 while they caught up afterwards. Pressure alone is not enough:
a service that keeps up costs little, so it yields only when it is already behind: its
consumers' lag is at least `MIN_BACKLOG` events (`behind_on_events`), or, for the
mailer, the emails it claims have been due for `MIN_DUE_SECONDS` (its intake keeps up;
its sending is what falls behind). A surge makes either true within seconds; a platform
that keeps up seldom does (at 1,000/s the mailer did, for a while, in two runs of six).

`YieldPolicy` is the rule, pure (times and figures in, a decision out):

- working -> yielding: pressure >= HIGH and the service is behind, unless the last
  yield ended less than `MIN_WORK_SECONDS` ago (what the service's own catch-up causes
  must not stop it: pausing relieves the pressure, it resumes, and holds on);
- yielding -> working: pressure < LOW, or `max_seconds` yielded. That bound is what a
  surge may delay new work (a thank-you is late by at most about that plus the catch-up);
  in a surge longer than it, the service works `MIN_WORK_SECONDS` between yields.

`SurgeYield` applies it once a second; consumers wait on it before each poll, the
mailer's claimer before each claim. Work in hand always finishes. Without PSI (not
Linux, an old kernel, no permission) nothing ever yields.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import structlog
from prometheus_client import Counter, Gauge

from groundswell_runtime.lag import total_lag

log = structlog.get_logger()

HIGH = 0.5
LOW = 0.3
WINDOW_SECONDS = 3
MIN_BACKLOG = 1_000
MIN_DUE_SECONDS = 1.0
MIN_WORK_SECONDS = 15.0
PRESSURE_FILE = Path("/proc/pressure/cpu")

YIELDING = Gauge("groundswell_surge_yielding", "1 while this service's intake yields to a surge")
YIELDED = Counter(
    "groundswell_surge_yield_seconds_total", "Seconds this service's intake yielded to surges"
)


@dataclass
class YieldPolicy:
    """The rule in the module docstring. `observe` once per sample."""

    max_seconds: float
    high: float = HIGH
    low: float = LOW
    min_work_seconds: float = MIN_WORK_SECONDS
    yielding_since: float | None = None
    worked_since: float | None = None
    _window: collections.deque[float] = field(
        default_factory=lambda: collections.deque(maxlen=WINDOW_SECONDS)
    )

    @property
    def pressure(self) -> float:
        return sum(self._window) / len(self._window) if self._window else 0.0

    def observe(self, now: float, pressure: float, behind: bool) -> bool:
        """Take one sample (`pressure`: the share of the last second); True to yield."""
        self._window.append(pressure)
        if self.yielding_since is not None:
            if self.pressure < self.low or now - self.yielding_since >= self.max_seconds:
                self.yielding_since, self.worked_since = None, now
            return self.yielding_since is not None
        rested = self.worked_since is None or now - self.worked_since >= self.min_work_seconds
        full = len(self._window) == self._window.maxlen
        pressed = full and self.pressure >= self.high and behind
        if self.max_seconds > 0 and rested and pressed:
            self.yielding_since = now
        return self.yielding_since is not None


def behind_on_events() -> bool:
    """This process's consumers are at least `MIN_BACKLOG` events behind, all told."""
    return total_lag() >= MIN_BACKLOG


def read_pressure_total(path: Path = PRESSURE_FILE) -> float | None:
    """Seconds in which some runnable task waited for a core, since boot; None without PSI."""
    try:
        for line in path.read_text().splitlines():
            kind, *fields = line.split()
            if kind == "some":
                return int(dict(f.split("=") for f in fields)["total"]) / 1e6
    except (OSError, ValueError, KeyError):
        return None
    return None


class SurgeYield:
    """Samples the pressure each `interval` and asks whether the service is `behind`;
    `wait_working` holds intake while it yields."""

    def __init__(
        self,
        max_seconds: float,
        behind: Callable[[], bool] = behind_on_events,
        *,
        pressure_total: Callable[[], float | None] = read_pressure_total,
        clock: Callable[[], float] = time.monotonic,
        interval: float = 1.0,
    ) -> None:
        self.policy = YieldPolicy(max_seconds=max_seconds)
        self._behind = behind
        self._pressure_total = pressure_total
        self._clock = clock
        self._interval = interval
        self._working = asyncio.Event()
        self._working.set()

    @property
    def yielding(self) -> bool:
        return not self._working.is_set()

    async def wait_working(self, seconds: float) -> bool:
        """True once intake may go on; False if still yielding after `seconds`."""
        if self._working.is_set():
            return True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._working.wait()
        return self._working.is_set()

    async def run(self) -> None:
        """Sample until cancelled; on the way out (or without PSI) intake goes on."""
        try:
            last = self._pressure_total()
            if last is None or self.policy.max_seconds <= 0:
                return
            at = self._clock()
            while True:
                await asyncio.sleep(self._interval)
                total, now = self._pressure_total(), self._clock()
                if total is None:
                    return
                elapsed = max(now - at, 1e-3)
                self._apply(now, (total - last) / elapsed, elapsed)
                last, at = total, now
        finally:
            self._set(False)

    def _apply(self, now: float, share: float, elapsed: float) -> None:
        was = self.yielding
        if was:
            YIELDED.inc(elapsed)
        yielding = self.policy.observe(now, share, not was and self._behind())
        if yielding != was:
            log.info(
                "surge_yield_started" if yielding else "surge_yield_ended",
                pressure=round(self.policy.pressure, 2),
            )
        self._set(yielding)

    def _set(self, yielding: bool) -> None:
        YIELDING.set(1 if yielding else 0)
        if yielding:
            self._working.clear()
        else:
            self._working.set()
