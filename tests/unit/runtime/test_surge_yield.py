"""Yielding to a surge (groundswell_runtime.surge_yield): when work that can wait steps
aside, for how long at most, and when it comes back."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

from groundswell_runtime.lag import register_lag_source, unregister_lag_source
from groundswell_runtime.surge_yield import (
    HIGH,
    LOW,
    MIN_BACKLOG,
    MIN_WORK_SECONDS,
    WINDOW_SECONDS,
    SurgeYield,
    YieldPolicy,
    behind_on_events,
    read_pressure_total,
)

from ...conftest import PressureDial


def feed(policy: YieldPolicy, start: float, pressures: list[float], behind: bool) -> list[bool]:
    return [policy.observe(start + i, p, behind) for i, p in enumerate(pressures)]


def test_yields_under_sustained_pressure_with_a_backlog_and_resumes_when_it_passes() -> None:
    policy = YieldPolicy(max_seconds=60)
    # Not before a whole window of pressure: one busy second is not a surge.
    assert feed(policy, 0, [0.9] * (WINDOW_SECONDS - 1), True) == [False] * (WINDOW_SECONDS - 1)
    assert policy.observe(WINDOW_SECONDS, 0.9, True)
    # Still pressed while it yields (the live path alone fills the cores): it stays out.
    assert all(feed(policy, 10, [0.6] * 20, True))
    # The surge passes: the window's average falls under LOW and work resumes.
    decisions = feed(policy, 30, [0.0] * WINDOW_SECONDS, True)
    assert decisions[-1] is False and policy.yielding_since is None


def test_never_yields_when_keeping_up_or_below_the_threshold() -> None:
    policy = YieldPolicy(max_seconds=60)
    assert not any(feed(policy, 0, [0.95] * 30, False))
    policy = YieldPolicy(max_seconds=60)
    assert not any(feed(policy, 0, [HIGH - 0.05] * 30, True))


def test_a_yield_is_bounded_then_work_goes_on_for_a_while() -> None:
    policy = YieldPolicy(max_seconds=20)
    decisions = feed(policy, 0, [0.9] * 200, True)
    yielded = decisions.index(True)
    # At most max_seconds in one go, then at least MIN_WORK_SECONDS of work, and so on.
    assert decisions[yielded : yielded + 20] == [True] * 20
    resumed = yielded + 20
    assert decisions[resumed : resumed + int(MIN_WORK_SECONDS)] == [False] * int(MIN_WORK_SECONDS)
    assert decisions[resumed + int(MIN_WORK_SECONDS)] is True


def test_the_pressure_its_own_catch_up_makes_does_not_stop_it_again_at_once() -> None:
    policy = YieldPolicy(max_seconds=60)
    assert feed(policy, 0, [0.9] * WINDOW_SECONDS, True)[-1]
    # Pausing relieved the pressure: it was this service's own; it resumes ...
    assert not feed(policy, 10, [0.0] * WINDOW_SECONDS, True)[-1]
    resumed = 10 + WINDOW_SECONDS - 1
    # ... and its catch-up presses again: it keeps working for MIN_WORK_SECONDS.
    quiet = feed(policy, resumed + 1, [0.9] * int(MIN_WORK_SECONDS - 1), True)
    assert not any(quiet)


def test_behind_means_the_consumers_lag_all_told() -> None:
    rows = [("signatures", 0, MIN_BACKLOG // 2), ("signatures", 1, MIN_BACKLOG // 2 - 1)]

    def lag() -> list[tuple[str, int, int]]:
        return rows

    assert not behind_on_events()
    register_lag_source("surge-test", lag)
    try:
        assert not behind_on_events()
        rows[1] = ("signatures", 1, MIN_BACKLOG // 2)
        assert behind_on_events()
    finally:
        unregister_lag_source("surge-test", lag)
    assert not behind_on_events()


def test_zero_seconds_means_never() -> None:
    policy = YieldPolicy(max_seconds=0)
    assert not any(feed(policy, 0, [1.0] * 30, True))


def test_pressure_is_read_from_the_kernels_psi_file(tmp_path: Path) -> None:
    psi = tmp_path / "cpu"
    psi.write_text(
        "some avg10=1.00 avg60=2.00 avg300=3.00 total=2500000\n"
        "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"
    )
    assert read_pressure_total(psi) == 2.5
    assert read_pressure_total(tmp_path / "absent") is None
    psi.write_text("garbage\n")
    assert read_pressure_total(psi) is None


async def test_intake_waits_while_yielding_and_goes_on_after(pressure: PressureDial) -> None:
    surge = pressure.surge_yield()
    assert await surge.wait_working(0)
    task = asyncio.create_task(surge.run())
    try:
        await asyncio.sleep(0.1)  # well over a window of samples
        assert surge.yielding
        assert not await surge.wait_working(0.02)
        waiter = asyncio.create_task(surge.wait_working(5))
        pressure.share = LOW / 10
        assert await waiter and not surge.yielding
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert not surge.yielding  # stopped: intake is never left held


async def test_without_psi_nothing_ever_yields() -> None:
    surge = SurgeYield(60, lambda: True, pressure_total=lambda: None)
    await asyncio.wait_for(surge.run(), 1)
    assert not surge.yielding and await surge.wait_working(0)
