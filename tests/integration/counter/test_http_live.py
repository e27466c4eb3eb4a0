"""The counts API of a real worker on the real broker: caching headers and the live stream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from groundswell_contracts.events import PetitionCreated, SignatureCreated


def signature(petition: PetitionCreated, status: str = "signed") -> SignatureCreated:
    return SignatureCreated(
        petition_id=petition.petition_id,
        signature_id=uuid.uuid4(),
        petition_slug=petition.slug,
        petition_title=petition.title,
        status=status,  # type: ignore[arg-type]
        contact_consent=False,
        postcode_area="OX",
        country="GB",
        share_code="abc",
        withdraw_token="w",
    )


async def wait_for_count(http: httpx.AsyncClient, slug: str, timeout: float = 30) -> httpx.Response:
    deadline = time.monotonic() + timeout
    while True:
        response = await http.get(f"/api/petitions/{slug}/count")
        if response.status_code == 200 or time.monotonic() > deadline:
            return response
        await asyncio.sleep(0.1)


async def next_count_event(lines: Any, timeout: float) -> dict[str, Any]:
    """Read SSE lines up to the next `count` event; heartbeats and advice are skipped."""
    event: dict[str, str] = {}

    async def read() -> dict[str, Any]:
        async for line in lines:
            if line == "":
                if event.get("event") == "count":
                    return dict(json.loads(event["data"]), _id=event.get("id"))
                event.clear()
            elif not line.startswith(":") and ":" in line:
                field, _, value = line.partition(":")
                event[field] = value.removeprefix(" ")
        raise AssertionError("stream ended")

    return await asyncio.wait_for(read(), timeout)


async def test_counts_are_cacheable_and_stream_live(counter_stack: Any, publisher_for: Any) -> None:
    worker = counter_stack.start_worker("solo", COUNTER_STREAM_HEARTBEAT_SECONDS="1")
    await counter_stack.wait_ready(worker)
    petition = PetitionCreated(
        petition_id=uuid.uuid4(),
        slug=f"live-{uuid.uuid4().hex[:8]}",
        title="Live",
        target="Parliament",
        goal=2,
    )
    async with (
        publisher_for(counter_stack.bootstrap, counter_stack.topics) as publisher,
        httpx.AsyncClient(base_url=worker.url, timeout=10) as http,
    ):
        await publisher.publish([petition])
        first = await wait_for_count(http, petition.slug)
        assert first.status_code == 200, first.text
        assert first.json()["signatures"] == 0 and first.json()["goal"] == 2

        # Cacheable: short max-age, stale-while-revalidate, ETag and 304.
        assert "max-age=" in first.headers["cache-control"]
        assert "stale-while-revalidate=" in first.headers["cache-control"]
        etag = first.headers["etag"]
        again = await http.get(
            f"/api/petitions/{petition.slug}/count", headers={"If-None-Match": etag}
        )
        assert again.status_code == 304

        # Readable from the petition page's origin.
        cors = await http.get(
            f"/api/petitions/{petition.slug}/count", headers={"Origin": "http://localhost:8001"}
        )
        assert cors.headers["access-control-allow-origin"] == "*"

        unknown = await http.get("/api/petitions/no-such-petition/count")
        assert unknown.status_code == 404 and "no-such-petition" in unknown.json()["detail"]

        async with http.stream(
            "GET",
            f"/api/petitions/{petition.slug}/count/stream",
            headers={"Origin": "http://localhost:8001"},
        ) as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            assert stream.headers["x-accel-buffering"] == "no"
            assert stream.headers["access-control-allow-origin"] == "*"
            lines = stream.aiter_lines()
            current = await next_count_event(lines, 10)
            assert current["signatures"] == 0

            # A signature arrives: the open stream shows it, no polling involved.
            sent = time.monotonic()
            await publisher.publish([signature(petition), signature(petition, "pending")])
            while current["signatures"] < 1 or current["pending"] < 1:
                current = await next_count_event(lines, 10)
            latency = time.monotonic() - sent
            assert latency < 5, f"the change took {latency:.2f}s to reach the stream"
            assert current["milestones"] == [] and current["goal"] == 2

            # Idle: heartbeat comments keep the connection (and proxies) alive.
            async def heartbeat() -> None:
                async for line in lines:
                    if line.startswith(": heartbeat"):
                        return

            await asyncio.wait_for(heartbeat(), 5)

            # Two signed: the goal is a milestone, shown on the stream.
            await publisher.publish([signature(petition)])
            while current["signatures"] < 2:
                current = await next_count_event(lines, 10)
            assert current["milestones"] == [2]

        # The served JSON agrees with the stream, and its ETag moved on.
        latest = await http.get(
            f"/api/petitions/{petition.slug}/count", headers={"If-None-Match": etag}
        )
        assert latest.status_code == 200 and latest.json()["signatures"] == 2
        assert latest.headers["etag"] != etag

        for path in ("/healthz", "/readyz", "/docs", "/openapi.json"):
            assert (await http.get(path)).status_code == 200, path
        metrics = (await http.get("/metrics")).text
        assert "groundswell_counter_events_total" in metrics
        assert "groundswell_counter_stream_listeners" in metrics
