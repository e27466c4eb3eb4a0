"""A new petition's first signature shows as promptly as any other (issue 7).

A petition page opened as soon as its petition is created asks for the live count
before the counter has met the petition. That request used to be answered 404, which
ends a browser's EventSource for good, and SSE clients that retry came back after
their ~3 s delay: the first signature then showed 3.4-3.7 s after it was accepted.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import httpx
from groundswell_contracts.events import PetitionCreated, SignatureCreated

# Generous: far above the ~0.2 s this takes, far below a multi-second retry or poll
# timer stacked on top of it. Not a speed measurement (that is bench/'s job).
DEADLINE_SECONDS = 10


def first_signature(petition: PetitionCreated) -> SignatureCreated:
    return SignatureCreated(
        petition_id=petition.petition_id,
        signature_id=uuid.uuid4(),
        petition_slug=petition.slug,
        petition_title=petition.title,
        status="signed",
        contact_consent=False,
        postcode_area="OX",
        country="GB",
        share_code="first",
        withdraw_token="w",
    )


async def count_events(lines: Any) -> Any:
    event: dict[str, str] = {}
    async for line in lines:
        if line == "":
            if event.get("event") == "count":
                yield json.loads(event["data"])
            event.clear()
        elif not line.startswith(":") and ":" in line:
            field, _, value = line.partition(":")
            event[field] = value.removeprefix(" ")


async def test_a_stream_opened_before_the_petition_exists_shows_its_first_signature(
    counter_stack: Any, publisher_for: Any
) -> None:
    worker = counter_stack.start_worker("solo")
    await counter_stack.wait_ready(worker)
    petition = PetitionCreated(
        petition_id=uuid.uuid4(), slug=f"new-{uuid.uuid4().hex[:8]}", title="New", target="P"
    )
    async with (
        publisher_for(counter_stack.bootstrap, counter_stack.topics) as publisher,
        httpx.AsyncClient(base_url=worker.url, timeout=DEADLINE_SECONDS) as http,
    ):
        # The page asks for the live count first; the petition and its first signature
        # are published while that request waits.
        async def open_stream() -> dict[str, Any]:
            async with http.stream("GET", f"/api/petitions/{petition.slug}/count/stream") as s:
                assert s.status_code == 200, await s.aread()
                async for count in count_events(s.aiter_lines()):
                    if count["signatures"] >= 1:
                        return dict(count)
            raise AssertionError("the stream ended")

        stream = asyncio.create_task(open_stream())
        await asyncio.sleep(0.2)
        assert not stream.done(), "the stream was answered before the petition existed"
        await publisher.publish([petition, first_signature(petition)])
        # One connection, no reconnect: the count arrives on the stream that was opened.
        count = await asyncio.wait_for(stream, DEADLINE_SECONDS)
        assert count["signatures"] == 1 and count["slug"] == petition.slug


async def test_a_new_petition_shows_its_first_signature_on_the_count_api(
    counter_stack: Any, publisher_for: Any
) -> None:
    worker = counter_stack.start_worker("solo")
    await counter_stack.wait_ready(worker)
    petition = PetitionCreated(
        petition_id=uuid.uuid4(), slug=f"new-{uuid.uuid4().hex[:8]}", title="New", target="P"
    )
    async with (
        publisher_for(counter_stack.bootstrap, counter_stack.topics) as publisher,
        httpx.AsyncClient(base_url=worker.url, timeout=5) as http,
    ):
        await publisher.publish([petition, first_signature(petition)])
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            response = await http.get(f"/api/petitions/{petition.slug}/count")
            if response.status_code == 200 and response.json()["signatures"] == 1:
                break
            assert time.monotonic() < deadline, f"not counted: {response.text}"
            await asyncio.sleep(0.05)
        # Never a cached 404 or stale zero: the answer is the petition's current count.
        assert response.headers["cache-control"].startswith("public, max-age=")
