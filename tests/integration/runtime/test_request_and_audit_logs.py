"""Request log lines (every service, through the runtime's metrics middleware) and the
signing admin audit trail, read from the JSON the services really write (issue 11)."""

from __future__ import annotations

import hashlib
import io
import json
import logging
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import pytest
import structlog
from fastapi import FastAPI, HTTPException
from groundswell_runtime.correlation import install_request_id_middleware
from groundswell_runtime.logging import configure_logging
from groundswell_runtime.ops import RequestLogPolicy, RequestLogSettings, install_ops
from groundswell_signing.config import SigningSettings
from groundswell_signing.entrypoints.http.app import create_app as create_signing
from pydantic import ValidationError

from ...conftest import TEST_PARTITIONS

SECRET_CODE = "tok-Secret-Code-42"
CLIENT_IP = "203.0.113.77"
ADMIN_TOKEN = "audit-test-admin-token-0123456789abcdefgh"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

Lines = Callable[[], list[dict[str, Any]]]


@pytest.fixture
def json_logs() -> Iterator[Lines]:
    """The lines the services write (their JSON logging), parsed."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    # The test's own HTTP client logs the URLs it asks for; no service does.
    client_logger = logging.getLogger("httpx")
    client_level = client_logger.level
    client_logger.setLevel(logging.WARNING)
    configure_logging("test", "INFO")
    buffer = io.StringIO()
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)

    def lines() -> list[dict[str, Any]]:
        return [json.loads(line) for line in buffer.getvalue().splitlines() if line.strip()]

    try:
        yield lines
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        client_logger.setLevel(client_level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


def small_app(policy: RequestLogPolicy) -> FastAPI:
    app = FastAPI()

    @app.get("/links/{code}")
    async def link(code: str) -> dict[str, str]:
        if code == "missing":
            raise HTTPException(404, "no such link")
        if code == "busy":
            raise HTTPException(429, "slow down")
        return {"ok": code[:1]}

    install_ops(app, {}, request_log=policy)
    install_request_id_middleware(app)
    return app


@pytest.fixture
def client_for() -> Callable[[FastAPI], httpx.AsyncClient]:
    def make(app: FastAPI) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
        return httpx.AsyncClient(transport=transport, base_url="http://svc.test")

    return make


def requests_logged(lines: Lines) -> list[dict[str, Any]]:
    return [line for line in lines() if line.get("event") == "request"]


async def test_a_request_line_names_the_route_never_the_path_query_or_address(
    json_logs: Lines, client_for: Callable[[FastAPI], httpx.AsyncClient]
) -> None:
    async with client_for(small_app(RequestLogPolicy("all"))) as client:
        response = await client.get(
            f"/links/{SECRET_CODE}?token={SECRET_CODE}", headers={"X-Request-ID": "req-abc.123"}
        )
        assert response.status_code == 200
    [line] = requests_logged(json_logs)
    assert line["method"] == "GET"
    assert line["route"] == "/links/{code}"
    assert line["status"] == 200
    assert isinstance(line["duration_ms"], float) and line["duration_ms"] >= 0
    assert line["correlation_id"] == "req-abc.123"
    assert line["level"] == "info"
    assert line["service"] == "test"
    everything = json.dumps(json_logs())
    assert SECRET_CODE not in everything
    assert CLIENT_IP not in everything


async def test_sampled_logs_every_refusal_and_one_success_in_n(
    json_logs: Lines, client_for: Callable[[FastAPI], httpx.AsyncClient]
) -> None:
    async with client_for(small_app(RequestLogPolicy("sampled", sample=5))) as client:
        for _ in range(10):
            assert (await client.get("/links/fine")).status_code == 200
        assert (await client.get("/links/missing")).status_code == 404
        assert (await client.get("/links/busy")).status_code == 429
        assert (await client.get("/nowhere/at/all")).status_code == 404
        for path in ("/healthz", "/metrics", "/readyz"):
            assert (await client.get(path)).status_code == 200
    logged = requests_logged(json_logs)
    successes = [line for line in logged if line["status"] < 400]
    assert len(successes) == 2  # requests 1 and 6 of 10
    assert all(line["sampled_1_in"] == 5 for line in successes)
    assert sorted((line["route"], line["status"]) for line in logged if line["status"] >= 400) == [
        ("/links/{code}", 404),
        ("/links/{code}", 429),
        ("unmatched", 404),
    ]
    assert not any(line["route"] in ("/healthz", "/metrics", "/readyz") for line in logged)


async def test_errors_and_off_modes(
    json_logs: Lines, client_for: Callable[[FastAPI], httpx.AsyncClient]
) -> None:
    async with client_for(small_app(RequestLogPolicy("errors"))) as client:
        await client.get("/links/fine")
        await client.get("/links/busy")
    assert [line["status"] for line in requests_logged(json_logs)] == [429]
    async with client_for(small_app(RequestLogPolicy("off"))) as client:
        await client.get("/links/busy")
    assert len(requests_logged(json_logs)) == 1


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert RequestLogSettings().log_requests == "sampled"
    monkeypatch.setenv("LOG_REQUESTS", "all")
    monkeypatch.setenv("LOG_REQUESTS_SAMPLE", "7")
    policy = RequestLogPolicy.from_environment()
    assert (policy.mode, policy.sample) == ("all", 7)
    monkeypatch.setenv("LOG_REQUESTS", "loud")
    with pytest.raises(ValidationError):
        RequestLogPolicy.from_environment()


# --- the signing admin audit trail (real PostgreSQL and broker) --------------------------


@pytest.fixture
async def signing(
    infra: Any, topics: None, fresh_database: str, json_logs: Lines
) -> AsyncIterator[httpx.AsyncClient]:
    settings = SigningSettings(
        ADMIN_TOKEN=ADMIN_TOKEN,
        database_url=fresh_database,
        kafka_bootstrap_servers=infra.kafka_bootstrap,
        kafka_topic_partitions=TEST_PARTITIONS,
    )
    app = create_signing(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, client=(CLIENT_IP, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://signing.test") as c:
            yield c


async def test_every_admin_action_and_export_is_audited_without_secrets(
    signing: httpx.AsyncClient, json_logs: Lines
) -> None:
    slug = f"audit-{uuid.uuid4().hex[:8]}"
    body = {
        "slug": slug,
        "title": "Keep the library open on Sundays",
        "target": "The council",
        "body": "It is the only warm quiet place in town.",
        "requires_confirmation": False,
        "organiser_email": "organiser.secret@example.org",
    }
    assert (await signing.post("/api/admin/petitions", json=body, headers=ADMIN)).status_code == 201
    for n in range(3):
        signed = await signing.post(
            f"/api/petitions/{slug}/signatures",
            json={
                "name": f"Secret Signer {n}",
                "email": f"signer-{n}-{uuid.uuid4().hex[:6]}@example.org",
                "postcode": "OX1 2JD",
                "country": "GB",
                "contact_consent": False,
            },
        )
        assert signed.status_code in (200, 201, 202), signed.text
    calls = [
        ("GET", "/api/admin/petitions", None),
        ("GET", f"/api/admin/petitions/{slug}", None),
        ("PATCH", f"/api/admin/petitions/{slug}", {"goal": 500, "title": "Open on Sundays"}),
        ("GET", f"/api/admin/petitions/{slug}/tally", None),
        ("GET", f"/api/admin/petitions/{slug}/signatures.csv", None),
        ("POST", f"/api/admin/petitions/{slug}/invalidations", {"postcode": "ZZ9 9ZZ"}),
    ]
    for method, path, payload in calls:
        response = await signing.request(method, path, json=payload, headers=ADMIN)
        assert response.status_code == 200, (path, response.text)
    refused = await signing.get(f"/api/admin/petitions/{slug}/signatures.csv")
    assert refused.status_code in (401, 403)

    audit = [line for line in json_logs() if line.get("event") == "admin_audit"]
    fingerprint = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()[:8]
    assert {line["who"] for line in audit} == {f"admin token {fingerprint}"}
    by_action = {line["action"]: line for line in audit}
    assert list(by_action) == [
        "petition_create",
        "petition_list",
        "petition_read",
        "petition_update",
        "petition_tally",
        "signatures_export",
        "signatures_invalidate",
    ]
    assert by_action["signatures_export"]["rows"] == 3
    assert by_action["signatures_export"]["petition"] == slug
    assert by_action["petition_update"]["fields"] == ["goal", "title"]
    assert by_action["signatures_invalidate"]["criteria"] == ["postcode"]
    assert by_action["signatures_invalidate"]["invalidated"] == 0
    assert all(line["level"] == "info" for line in audit)
    # The refused export is no admin action: it shows as a request line, not an audit one.
    assert len([line for line in audit if line["action"] == "signatures_export"]) == 1
    assert any(
        line.get("event") == "request" and line["status"] in (401, 403) for line in json_logs()
    )
    everything = json.dumps(json_logs())
    for secret in (ADMIN_TOKEN, "organiser.secret@example.org", "Secret Signer", "ZZ9 9ZZ"):
        assert secret not in everything
    assert CLIENT_IP not in everything
