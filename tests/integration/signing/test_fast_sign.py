"""The lean signing path (fast_sign.py) sits outside every middleware: it must answer as
the whole app does, with the request id, security headers, metrics, shedding and the
logged 500 those middlewares give every other request."""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from groundswell_signing.entrypoints.http.app import create_app
from groundswell_signing.entrypoints.http.fast_sign import FastSign
from groundswell_signing.service_layer.group_commit import Attempt, SignatureWriter
from prometheus_client.parser import text_string_to_metric_families
from starlette.types import Receive, Scope, Send

from .conftest import SettingsFactory, on_a_free_port

ROUTE = "/api/petitions/{slug}/signatures"


@pytest.fixture
async def app(topics: None, signing_settings: SettingsFactory) -> AsyncIterator[FastAPI]:
    app = create_app(signing_settings())
    async with app.router.lifespan_context(app):
        yield app


def client(app: FastAPI) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=app, client=("203.0.113.9", 40000))
    return httpx.AsyncClient(transport=transport, base_url="http://signing.test")


def body() -> dict[str, Any]:
    return {
        "name": "Ada Lovelace",
        "email": f"ada-{uuid.uuid4().hex[:8]}@example.org",
        "postcode": "OX1 2JD",
        "country": "GB",
        "contact_consent": True,
    }


async def new_petition(http: httpx.AsyncClient) -> str:
    from .conftest import ADMIN

    slug = f"p-{uuid.uuid4().hex[:10]}"
    response = await http.post(
        "/api/admin/petitions",
        json={
            "slug": slug,
            "title": "Let local public health teams run contact tracing",
            "target": "The Secretary of State for Health",
            "body": "Local teams know their communities.",
            "requires_confirmation": False,
        },
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    return slug


async def signing_requests(http: httpx.AsyncClient, status: str) -> float:
    text = (await http.get("/metrics")).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "groundswell_http_requests_total"
                and labels.get("route") == ROUTE
                and labels.get("method") == "POST"
                and labels.get("status") == status
            ):
                return sample.value
    return 0.0


async def chunked(data: bytes) -> AsyncIterator[bytes]:
    """A body without a declared length: the lean path leaves it to the FastAPI route."""
    yield data


async def test_the_lean_path_answers_as_the_route_does(app: FastAPI) -> None:
    async with client(app) as http:
        slug = await new_petition(http)
        url = f"/api/petitions/{slug}/signatures"
        before = await signing_requests(http, "202")
        lean = await http.post(url, json=body(), headers={"X-Request-ID": "lean-1"})
        routed = await http.post(
            url,
            content=chunked(httpx.Request("POST", url, json=body()).content),
            headers={"X-Request-ID": "route-1", "Content-Type": "application/json"},
        )
        after = await signing_requests(http, "202")
    assert "content-length" in lean.request.headers
    assert "content-length" not in routed.request.headers
    assert lean.status_code == routed.status_code == 202
    assert lean.json() == routed.json()
    for response, request_id in ((lean, "lean-1"), (routed, "route-1")):
        assert response.headers["x-request-id"] == request_id
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["referrer-policy"] == "strict-origin-when-cross-origin"
    assert after - before == 2


async def test_over_capacity_the_lean_path_is_shed_with_retry_after(app: FastAPI) -> None:
    service = app.state.service
    working = service.writer
    # Every writer busy: one request has waited longer than the queue allows.
    stuck = SignatureWriter(
        None,  # type: ignore[arg-type]
        wake_relay=lambda: None,
        flag_over_limit=False,
        max_queue_age=0.001,
    )
    waiting = asyncio.ensure_future(
        stuck.submit(
            Attempt(
                row={},
                petition=None,  # type: ignore[arg-type]
                hits=[],
                confirmation_token=None,
                withdraw_token="t",
                correlation_id=None,
                now=datetime.now(UTC),
            )
        )
    )
    await asyncio.sleep(0.01)
    async with client(app) as http:
        slug = await new_petition(http)
        service.writer = stuck
        try:
            refused = await http.post(f"/api/petitions/{slug}/signatures", json=body())
        finally:
            service.writer = working
            waiting.cancel()
        count = await service.pool.fetchval(
            "SELECT count(*) FROM signing.signatures s JOIN signing.petitions p "
            "ON p.id = s.petition_id WHERE p.slug = $1",
            slug,
        )
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "1"
    assert refused.headers["x-content-type-options"] == "nosniff"
    assert "nothing was recorded" in refused.json()["detail"]
    assert count == 0


async def test_over_capacity_the_lean_path_refuses_as_the_route_does(app: FastAPI) -> None:
    service = app.state.service
    async with client(app) as http:
        slug = await new_petition(http)
        url = f"/api/petitions/{slug}/signatures"
        before = await signing_requests(http, "503"), shed_total()
        service.in_flight.count = service.in_flight.limit  # the process is full
        try:
            lean = await http.post(url, json=body())
            routed = await http.post(
                url,
                content=chunked(httpx.Request("POST", url, json=body()).content),
                headers={"Content-Type": "application/json"},
            )
        finally:
            service.in_flight.count = 0
        after = await signing_requests(http, "503"), shed_total()
    assert "content-length" not in routed.request.headers  # so it took the route
    assert lean.status_code == routed.status_code == 503
    assert lean.content == routed.content
    assert lean.headers == routed.headers
    assert lean.headers["retry-after"] == "1"
    assert lean.headers["x-content-type-options"] == "nosniff"
    # Counted as shed, not as a server error in the request metrics (an alert reads those).
    assert after == (before[0], before[1] + 2)


def shed_total() -> float:
    """Refusals for a full process (the rule these tests trigger), by its own label."""
    from prometheus_client import REGISTRY

    labels = {"reason": "in_flight"}
    return REGISTRY.get_sample_value("groundswell_signing_shed_total", labels) or 0.0


async def test_the_lean_path_holds_its_request_in_flight_and_refuses_beyond_the_limit(
    app: FastAPI,
) -> None:
    service = app.state.service
    seen: list[int] = []
    submit = service.writer.submit

    async def watched(attempt: Attempt) -> Any:
        seen.append(service.in_flight.count)
        return await submit(attempt)

    async with client(app) as http:
        slug = await new_petition(http)
        service.writer.submit = watched
        try:
            accepted = await http.post(f"/api/petitions/{slug}/signatures", json=body())
            service.in_flight.count = service.in_flight.limit  # as if that many were held
            refused = await http.post(f"/api/petitions/{slug}/signatures", json=body())
        finally:
            service.in_flight.count = 0
            del service.writer.submit
    assert accepted.status_code == 202 and seen == [1]
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert seen == [1]  # the refused one never reached the writer


class Broken:
    async def get(self, slug: str) -> Any:
        raise RuntimeError("ada@example.org")  # a message that must not reach a client


async def test_an_unexpected_error_on_the_lean_path_is_a_500_with_security_headers(
    app: FastAPI,
) -> None:
    service = app.state.service
    petitions = service.petitions
    async with client(app) as http:
        slug = await new_petition(http)
        before = await signing_requests(http, "500")
        service.petitions = Broken()
        try:
            response = await http.post(f"/api/petitions/{slug}/signatures", json=body())
        finally:
            service.petitions = petitions
        after = await signing_requests(http, "500")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal error; it has been logged."}
    assert "ada@example.org" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert after - before == 1


async def test_while_requests_wait_for_the_loop_new_signatures_are_refused(app: FastAPI) -> None:
    """A process that cannot keep up (busy, or its cores taken) makes requests wait before
    any rule sees them: its loop runs late, and signing refuses at once while it does."""
    async with client(app) as http:
        slug = await new_petition(http)
        for _ in range(3):  # the loop held up at every reading, as a starved process's is
            time.sleep(0.3)
            await asyncio.sleep(0.001)  # the lag task wakes, late
        refused = await http.post(f"/api/petitions/{slug}/signatures", json=body())
        assert refused.status_code == 503, refused.text
        assert refused.headers["retry-after"]
        await asyncio.sleep(0.1)  # running freely again
        taken = await http.post(f"/api/petitions/{slug}/signatures", json=body())
        assert taken.status_code == 202, taken.text


# --- the door: refused by the HTTP server before the app is called ----------------------


def raw_post(slug: str, payload: bytes, *, chunked: bool = False) -> bytes:
    head = f"POST /api/petitions/{slug}/signatures HTTP/1.1\r\nHost: signing.test\r\n"
    head += "Content-Type: application/json\r\n"
    if chunked:  # no declared length: the lean path and the door hand it to the app
        return (
            head.encode()
            + b"Transfer-Encoding: chunked\r\n\r\n"
            + b"%x\r\n%s\r\n0\r\n\r\n" % (len(payload), payload)
        )
    return head.encode() + b"Content-Length: %d\r\n\r\n%s" % (len(payload), payload)


async def answers(port: int, data: bytes, count: int) -> list[bytes]:
    """Send `data` on one connection and read `count` whole answers (content-length)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        got = []
        for _ in range(count):
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            length = int(re.search(rb"(?i)content-length: (\d+)", head)[1])  # type: ignore[index]
            got.append(head + await reader.readexactly(length))
        return got
    finally:
        writer.close()


def without_date(answer: bytes) -> bytes:
    return re.sub(rb"(?m)^date: [^\r]*\r\n", b"", answer)


async def test_over_capacity_the_server_refuses_at_the_door_as_the_app_does(
    app: FastAPI, monkeypatch: pytest.MonkeyPatch
) -> None:
    reached: list[str] = []
    lean_path = FastSign.__call__

    async def watched(self: FastSign, scope: Scope, receive: Receive, send: Send) -> None:
        reached.append(scope["path"])
        await lean_path(self, scope, receive, send)

    monkeypatch.setattr(FastSign, "__call__", watched)
    service = app.state.service
    async with client(app) as http:
        slug = await new_petition(http)
        before = await signing_requests(http, "503"), shed_total()
    payload = json.dumps(body()).encode()
    health_check = b"GET /healthz HTTP/1.1\r\nHost: signing.test\r\n\r\n"
    reached.clear()
    async with on_a_free_port(app) as port:
        service.in_flight.count = service.in_flight.limit  # the process is full
        try:
            # One connection: refused at the door (its body dropped as it arrives), a
            # refusal by the app (chunked: no declared length), then a health check.
            door, routed, health = await answers(
                port,
                raw_post(slug, payload) + raw_post(slug, payload, chunked=True) + health_check,
                3,
            )
            # Queued behind a response of the app's (pipelined): answered in its turn,
            # from inside the app's last send, and the connection goes on.
            queued = await answers(port, health_check + raw_post(slug, payload) + health_check, 3)
        finally:
            service.in_flight.count = 0
        assert [answer.split(b" ", 2)[1] for answer in queued] == [b"200", b"503", b"200"]
        assert without_date(queued[1]) == without_date(door)
        # Only the chunked one reached the app; the door answered the others itself.
        assert reached == [f"/api/petitions/{slug}/signatures", *["/healthz"] * 3]
        assert door.startswith(b"HTTP/1.1 503 ")
        assert b"\r\nretry-after: 1\r\n" in door and b"\r\ndate: " in door
        assert without_date(door) == without_date(routed)
        assert health.startswith(b"HTTP/1.1 200 ")
        # Not full any more: the same request is let in and signs.
        (taken,) = await answers(port, raw_post(slug, payload), 1)
        assert taken.startswith(b"HTTP/1.1 202 "), taken
    async with client(app) as http:
        after = await signing_requests(http, "503"), shed_total()
    # The three refusals counted as shed, none in the request metrics (an alert reads those).
    assert after == (before[0], before[1] + 3)
