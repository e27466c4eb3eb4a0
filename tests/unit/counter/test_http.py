"""The served view and the HTTP API, fed snapshots directly (no broker)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from groundswell_contracts.events import PetitionCountChanged, encode
from groundswell_counter.adapters.counts_view import VIEW_SNAPSHOTS, CountsView
from groundswell_counter.config import CounterSettings
from groundswell_counter.entrypoints.count_polls import CountPolls
from groundswell_counter.entrypoints.http import count_events, create_api, create_http_app
from prometheus_client import REGISTRY
from starlette.types import Receive, Scope, Send


def snapshot(petition: uuid.UUID, signatures: int, slug: str = "owls") -> PetitionCountChanged:
    return PetitionCountChanged(
        petition_id=petition,
        slug=slug,
        signatures=signatures,
        pending=2,
        by_area={"OX": signatures},
        by_country={"GB": signatures},
        by_source={"none": signatures},
        by_referral={"direct": signatures},
        goal=100,
        milestones=[],
    )


@pytest.fixture
def settings() -> CounterSettings:
    return CounterSettings(
        stream_min_interval_seconds=0.05,
        stream_heartbeat_seconds=0.2,
        stream_unknown_wait_seconds=0.2,
    )


@pytest.fixture
def view() -> CountsView:
    return CountsView("127.0.0.1:1", "counts")


@pytest.fixture
async def client(settings: CounterSettings, view: CountsView) -> AsyncIterator[httpx.AsyncClient]:
    async def ready() -> bool:
        return view.caught_up

    app = create_http_app(settings, view, {"counts_view": ready})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://counter") as http:
        yield http


async def test_count_document_has_the_public_shape(
    client: httpx.AsyncClient, view: CountsView
) -> None:
    view.apply(snapshot(uuid.uuid4(), 5))
    response = await client.get("/api/petitions/owls/count")
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {
        "slug",
        "signatures",
        "pending",
        "by_area",
        "by_country",
        "by_source",
        "by_referral",
        "milestones",
        "goal",
        "updated_at",
    }
    assert (body["slug"], body["signatures"], body["pending"], body["goal"]) == ("owls", 5, 2, 100)
    cache_control = response.headers["cache-control"]
    assert "max-age=2" in cache_control and "stale-while-revalidate=" in cache_control


async def test_etag_and_not_modified(client: httpx.AsyncClient, view: CountsView) -> None:
    petition = uuid.uuid4()
    view.apply(snapshot(petition, 5))
    first = await client.get("/api/petitions/owls/count")
    etag = first.headers["etag"]
    unchanged = await client.get("/api/petitions/owls/count", headers={"If-None-Match": etag})
    assert unchanged.status_code == 304 and unchanged.content == b""
    assert unchanged.headers["etag"] == etag
    weak = await client.get(
        "/api/petitions/owls/count", headers={"If-None-Match": f'"other", W/{etag}'}
    )
    assert weak.status_code == 304
    view.apply(snapshot(petition, 6))
    changed = await client.get("/api/petitions/owls/count", headers={"If-None-Match": etag})
    assert changed.status_code == 200 and changed.json()["signatures"] == 6
    assert changed.headers["etag"] != etag


async def test_unknown_slug_is_a_404_that_says_why(client: httpx.AsyncClient) -> None:
    for path in ("/api/petitions/nope/count", "/api/petitions/nope/count/stream"):
        response = await client.get(path)
        assert response.status_code == 404
        assert "nope" in response.json()["detail"]


async def test_any_origin_may_read(client: httpx.AsyncClient, view: CountsView) -> None:
    view.apply(snapshot(uuid.uuid4(), 1))
    response = await client.get(
        "/api/petitions/owls/count", headers={"Origin": "http://localhost:8001"}
    )
    assert response.headers["access-control-allow-origin"] == "*"
    assert "etag" in response.headers["access-control-expose-headers"].lower()


async def test_ops_endpoints(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    assert (await client.get("/readyz")).status_code == 503  # the view has not caught up
    assert (await client.get("/metrics")).status_code == 200
    schema = (await client.get("/openapi.json")).json()
    assert "/api/petitions/{slug}/count/stream" in schema["paths"]


async def test_a_slug_follows_its_petition(view: CountsView) -> None:
    petition = uuid.uuid4()
    view.apply(snapshot(petition, 1, slug="old"))
    view.apply(snapshot(petition, 1, slug="new"))
    assert view.by_slug("old") is None
    entry = view.by_slug("new")
    assert entry is not None and entry.petition_id == petition


async def test_listeners_share_one_future_per_petition(view: CountsView) -> None:
    petition = uuid.uuid4()
    changed = view.changed(petition)
    assert view.changed(petition) is changed and view.changed(uuid.uuid4()) is not changed
    done, _ = await asyncio.wait({changed}, timeout=0.05)
    assert not done  # a timeout leaves the shared future alone
    view.apply(snapshot(petition, 1))
    assert changed.done() and view.changed(petition) is not changed


async def test_stream_sends_the_current_count_then_each_change_coalesced(
    settings: CounterSettings, view: CountsView
) -> None:
    petition = uuid.uuid4()
    view.apply(snapshot(petition, 1))
    events = count_events(view, settings, petition, None, asyncio.Future())
    assert await anext(events) == b"retry: 3000\n\n"
    first = await anext(events)
    assert first.startswith(b"event: count\nid: ")
    assert json.loads(first.split(b"data: ", 1)[1])["signatures"] == 1

    async def burst() -> None:
        for signatures in range(2, 12):
            view.apply(snapshot(petition, signatures))
            await asyncio.sleep(0.005)

    burst_task = asyncio.create_task(burst())
    received = []
    while not received or received[-1] != 11:
        event = await asyncio.wait_for(anext(events), 2)
        received.append(json.loads(event.split(b"data: ", 1)[1])["signatures"])
    await burst_task
    # Ten changes within ~50 ms reach the listener in far fewer events.
    assert len(received) < 5
    heartbeat = await asyncio.wait_for(anext(events), 2)
    assert heartbeat == b": heartbeat\n\n"
    await events.aclose()


async def test_a_reconnecting_listener_does_not_get_what_it_has(
    settings: CounterSettings, view: CountsView
) -> None:
    petition = uuid.uuid4()
    view.apply(snapshot(petition, 1))
    entry = view.by_id(petition)
    assert entry is not None
    events = count_events(view, settings, petition, entry.etag.strip('"'), asyncio.Future())
    await anext(events)  # retry advice
    assert await asyncio.wait_for(anext(events), 2) == b": heartbeat\n\n"
    await events.aclose()


async def test_a_known_petition_is_streamed_by_the_lean_handler_until_the_client_leaves(
    settings: CounterSettings, view: CountsView
) -> None:
    view.apply(snapshot(uuid.uuid4(), 3))
    app = create_http_app(settings, view, {})
    sent: list[dict[str, Any]] = []
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body", b"").startswith(b"event: count"):
            left.set()  # the client leaves after its first event

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/petitions/owls/count/stream",
        "headers": [(b"origin", b"http://localhost:8001"), (b"x-request-id", b"abc-1")],
        "query_string": b"",
    }
    await asyncio.wait_for(app(scope, receive, send), 2)
    headers = dict(sent[0]["headers"])
    assert sent[0]["status"] == 200
    assert headers[b"content-type"].startswith(b"text/event-stream")
    assert headers[b"x-accel-buffering"] == b"no"
    assert headers[b"access-control-allow-origin"] == b"*"
    assert headers[b"x-request-id"] == b"abc-1"
    assert json.loads(sent[2]["body"].split(b"data: ", 1)[1])["signatures"] == 3


async def test_a_stream_asked_for_before_its_petition_is_known_waits_for_it(
    settings: CounterSettings, view: CountsView
) -> None:
    # A page opened as soon as its petition was created: a 404 here would end the
    # browser's EventSource, and retrying SSE clients would come back ~3 s later.
    settings = settings.model_copy(update={"stream_unknown_wait_seconds": 5.0})
    app = create_http_app(settings, view, {})
    sent: list[dict[str, Any]] = []
    left = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await left.wait()
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)
        if message.get("body", b"").startswith(b"event: count"):
            left.set()

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/petitions/brand-new/count/stream",
        "headers": [],
        "query_string": b"",
    }
    serving = asyncio.create_task(app(scope, receive, send))
    await asyncio.sleep(0.05)
    assert sent == []  # nothing answered yet: no 404 for a petition about to appear
    view.apply(snapshot(uuid.uuid4(), 1, slug="brand-new"))
    await asyncio.wait_for(serving, 2)
    assert sent[0]["status"] == 200
    assert json.loads(sent[2]["body"].split(b"data: ", 1)[1])["signatures"] == 1
    assert view._slug_waiters == {}  # nothing left behind


async def test_a_stream_for_a_petition_that_never_appears_is_a_404_after_the_wait(
    client: httpx.AsyncClient, view: CountsView
) -> None:
    response = await client.get("/api/petitions/never/count/stream")
    assert response.status_code == 404 and "never" in response.json()["detail"]
    assert view._slug_waiters == {}


async def test_a_snapshot_record_read_again_is_not_decoded_again(view: CountsView) -> None:
    record = SimpleNamespace(
        key=b"k", value=encode(snapshot(uuid.uuid4(), 4)), partition=0, offset=0
    )
    before = VIEW_SNAPSHOTS._value.get()
    view.apply_records([record, record])  # type: ignore[list-item]
    assert VIEW_SNAPSHOTS._value.get() - before == 1
    assert view.by_slug("owls") is not None


async def test_item11_one_client_cannot_hold_a_thousand_streams(
    settings: CounterSettings, view: CountsView
) -> None:
    view.apply(snapshot(uuid.uuid4(), 3))
    settings = settings.model_copy(update={"streams_per_client": 3})
    app = create_http_app(settings, view, {})
    leave = asyncio.Event()

    async def receive() -> dict[str, Any]:
        await leave.wait()
        return {"type": "http.disconnect"}

    def scope(client: str) -> dict[str, Any]:
        return {
            "type": "http",
            "method": "GET",
            "path": "/api/petitions/owls/count/stream",
            "headers": [],
            "query_string": b"",
            "client": (client, 40000),
        }

    async def open_stream(client: str) -> int:
        status: list[int] = []

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        task = asyncio.ensure_future(app(scope(client), receive, send))
        while not status:
            await asyncio.sleep(0.01)
        streams.append(task)
        return status[0]

    streams: list[asyncio.Future[None]] = []
    held = [await open_stream("198.51.100.7") for _ in range(3)]
    refused = await open_stream("198.51.100.7")
    other = await open_stream("203.0.113.9")  # another client is not affected
    assert held == [200, 200, 200] and refused == 429 and other == 200
    leave.set()
    await asyncio.wait_for(asyncio.gather(*streams), 2)
    assert await open_stream("198.51.100.7") == 200  # closed streams free their places


async def test_a_poll_gets_what_the_route_would_answer(
    settings: CounterSettings, view: CountsView
) -> None:
    """Known petitions' polls are answered in front of the framework (count_polls.py):
    same status, body and headers as the FastAPI route gives, and counted the same."""
    view.apply(snapshot(uuid.uuid4(), 7))

    async def ready() -> bool:
        return True

    lean = create_http_app(settings, view, {"counts_view": ready})
    route = create_api(settings, view, {"counts_view": ready})
    answers = []
    for app in (lean, route):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://counter") as http:
            first = await http.get("/api/petitions/owls/count", headers={"X-Request-ID": "r1"})
            again = await http.get(
                "/api/petitions/owls/count",
                headers={"X-Request-ID": "r2", "If-None-Match": first.headers["etag"]},
            )
            answers.append(
                [
                    (a.status_code, a.content, sorted(a.headers.multi_items()))
                    for a in (first, again)
                ]
            )
    assert answers[0] == answers[1]
    assert [status for status, _, _ in answers[0]] == [200, 304]
    polls = REGISTRY.get_sample_value(
        "groundswell_http_requests_total",
        {"route": "/api/petitions/{slug}/count", "method": "GET", "status": "304"},
    )
    assert polls is not None and polls >= 2  # one per app: the lean path counts too


async def test_polls_of_known_petitions_never_reach_the_framework(
    settings: CounterSettings, view: CountsView
) -> None:
    view.apply(snapshot(uuid.uuid4(), 3))
    reached: list[str] = []

    async def framework(scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])
        await send({"type": "http.response.start", "status": 418, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    transport = httpx.ASGITransport(app=CountPolls(framework, view, settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://counter") as http:
        assert (await http.get("/api/petitions/owls/count")).json()["signatures"] == 3
        assert reached == []
        # Unknown petitions (the 404) and cross-origin polls (CORS) are the app's.
        await http.get("/api/petitions/nope/count")
        await http.get("/api/petitions/owls/count", headers={"Origin": "https://example.org"})
    assert reached == ["/api/petitions/nope/count", "/api/petitions/owls/count"]
