"""Over capacity: refused at once with 503 and Retry-After, before any work is done."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from groundswell_signing.entrypoints.http.shedding import InFlight, ShedWhenBusy
from groundswell_signing.service_layer.group_commit import (
    Overloaded,
    ShedReason,
    SignatureWriter,
)
from prometheus_client import REGISTRY

from .conftest import attempt


def shed(reason: ShedReason) -> float:
    value = REGISTRY.get_sample_value("groundswell_signing_shed_total", {"reason": reason})
    assert value is not None  # every reason is there from the start
    return value


def stuck_writer(**limits: Any) -> SignatureWriter:
    # Never run: nothing drains the queue, as when every writer is busy committing.
    return SignatureWriter(
        None,  # type: ignore[arg-type]
        wake_relay=lambda: None,
        flag_over_limit=False,
        **limits,
    )


async def test_a_full_queue_refuses_the_next_attempt() -> None:
    writer = stuck_writer(max_queue=2, max_queue_age=60)
    waiting = [asyncio.ensure_future(writer.submit(attempt())) for _ in range(2)]
    await asyncio.sleep(0)
    assert writer.overloaded()
    before = shed(ShedReason.WRITER_QUEUE)
    with pytest.raises(Overloaded):
        await writer.submit(attempt())
    assert shed(ShedReason.WRITER_QUEUE) == before + 1
    for task in waiting:
        task.cancel()


async def test_an_old_queue_refuses_the_next_attempt() -> None:
    writer = stuck_writer(max_queue=1000, max_queue_age=0.01)
    waiting = asyncio.ensure_future(writer.submit(attempt()))
    await asyncio.sleep(0.02)
    with pytest.raises(Overloaded):
        await writer.submit(attempt())
    waiting.cancel()


async def test_signing_requests_are_refused_before_the_app_sees_them() -> None:
    app = FastAPI()
    seen: list[str] = []

    @app.post("/api/petitions/{slug}/signatures")
    async def sign(slug: str) -> dict[str, str]:
        seen.append(slug)
        return {}

    @app.get("/p/{slug}")
    async def page(slug: str) -> dict[str, str]:
        return {}

    writer = stuck_writer(max_queue=1, max_queue_age=60)
    guard = ShedWhenBusy(
        app,
        overloaded=lambda _scope: ShedReason.WRITER_QUEUE if writer.overloaded() else None,
        in_flight=InFlight(64),
    )
    before = shed(ShedReason.WRITER_QUEUE)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guard), base_url="http://t"
    ) as c:
        assert (await c.post("/api/petitions/a/signatures")).status_code == 200
        waiting = asyncio.ensure_future(writer.submit(attempt()))
        await asyncio.sleep(0)
        refused = await c.post("/api/petitions/b/signatures")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        assert shed(ShedReason.WRITER_QUEUE) == before + 1  # counted with its reason
        assert "nothing was recorded" in refused.json()["detail"]
        assert (await c.get("/p/b")).status_code == 200  # only signing is shed
        waiting.cancel()
    assert seen == ["a"]


async def test_a_process_holding_its_limit_of_requests_refuses_the_next() -> None:
    app = FastAPI()
    release = asyncio.Event()

    @app.post("/api/petitions/{slug}/signatures")
    async def sign(slug: str) -> dict[str, str]:
        await release.wait()  # held, as while waiting for the loop and the writer
        return {}

    in_flight = InFlight(2)
    guard = ShedWhenBusy(
        app,
        overloaded=lambda _scope: ShedReason.IN_FLIGHT if in_flight.full else None,
        in_flight=in_flight,
    )
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=guard), base_url="http://t"
    ) as c:
        held = [asyncio.ensure_future(c.post(f"/api/petitions/{n}/signatures")) for n in "ab"]
        while in_flight.count < 2:
            await asyncio.sleep(0.001)
        refused = await c.post("/api/petitions/c/signatures")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
        release.set()
        assert [(await r).status_code for r in held] == [200, 200]
        assert in_flight.count == 0  # released when answered
        assert (await c.post("/api/petitions/d/signatures")).status_code == 200


class _Backlog:
    def __init__(self, behind: bool) -> None:
        self._behind = behind

    def behind(self) -> bool:
        return self._behind


async def test_the_service_names_the_first_rule_that_refuses() -> None:
    # The rules as SigningService asks them, no database: each reading set by hand.
    from groundswell_runtime.loop_lag import LoopLag
    from groundswell_signing.config import SigningSettings
    from groundswell_signing.entrypoints.http.app import SigningService

    service = SigningService(SigningSettings(ADMIN_TOKEN="x" * 40, max_in_flight=2))
    service.writer = stuck_writer(max_queue=1, max_queue_age=60)
    service.loop_lag = LoopLag(readings=1)
    service.backlog = _Backlog(behind=False)  # type: ignore[assignment]
    assert service.saturated() is None and service.overloaded() is None

    service.backlog = _Backlog(behind=True)  # type: ignore[assignment]
    assert service.saturated() is None
    assert service.overloaded() is ShedReason.OUTBOX_BACKLOG
    # A request the share let in (its draw done at the door) is not drawn for again.
    scope: dict[str, object] = {}
    service.backlog = _Backlog(behind=False)  # type: ignore[assignment]
    assert service.overloaded(scope) is None
    service.backlog = _Backlog(behind=True)  # type: ignore[assignment]
    assert service.overloaded(scope) is None
    assert service.overloaded({}) is ShedReason.OUTBOX_BACKLOG

    service.writer._queue.append(attempt())  # the writer's queue at its limit
    assert service.overloaded() is ShedReason.WRITER_QUEUE

    service.loop_lag._readings.append(1.0)  # a second late, every reading
    assert service.saturated() is ShedReason.LOOP_LAG

    service.in_flight.count = service.in_flight.limit
    assert service.overloaded() is ShedReason.IN_FLIGHT
