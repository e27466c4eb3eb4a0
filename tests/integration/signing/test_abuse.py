"""Issue 8's attacks on signing's HTTP edge (items 7, 11, 12, 14), each reproduced.

Item 11 runs the real signing app under a real uvicorn server on a free port, built by
`groundswell_runtime.serving.server_config` exactly as the services run, and attacks it
through raw sockets.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import structlog
from groundswell_runtime import serving
from groundswell_runtime.logging import configure_logging
from groundswell_signing.entrypoints.http.app import create_app

from .conftest import (
    ADMIN,
    ADMIN_TOKEN,
    SettingsFactory,
    SigningHarness,
    on_a_free_port,
    start_harness,
)

EVIL = {"Origin": "https://evil.example"}
FORM = {"name": "Ada Lovelace", "postcode": "OX1 2JD", "country": "GB"}


def form(email: str | None = None) -> dict[str, str]:
    return FORM | {"email": email or f"ada-{uuid.uuid4().hex[:8]}@example.org"}


async def signature_count(harness: SigningHarness) -> int:
    return int(await harness.pool.fetchval("SELECT count(*) FROM signing.signatures"))


# --- item 7: cross-site form posts ------------------------------------------------------


async def test_item7_cross_site_form_posts_are_refused(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    for path in (f"/p/{slug}", f"/embed/{slug}"):
        for headers in (EVIL, {"Sec-Fetch-Site": "cross-site"}, {"Origin": "null"}):
            refused = await signing.client.post(path, data=form(), headers=headers)
            assert refused.status_code == 403, (path, headers)
            assert "another website" in refused.text
    assert await signature_count(signing) == 0


async def test_item7_cross_site_confirm_and_withdraw_are_refused(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=True)
    assert (await signing.sign(petition["slug"])).status_code == 202
    [created] = await signing.outbox_events("SignatureCreated")
    confirm = f"/confirm/{created['confirmation_token']}"
    withdraw = f"/withdraw/{created['withdraw_token']}"
    assert (await signing.client.post(confirm, headers=EVIL)).status_code == 403
    assert await signing.outbox_events("SignatureConfirmed") == []
    # The real page's button, same-origin, still confirms.
    ok = await signing.client.post(confirm, headers={"Sec-Fetch-Site": "same-origin"})
    assert ok.status_code == 200
    assert (await signing.client.post(withdraw, headers=EVIL)).status_code == 403
    assert await signing.pool.fetchval("SELECT withdrawn_at FROM signing.signatures") is None


async def test_forms_from_our_own_pages_still_sign(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    allowed: list[dict[str, str]] = [
        {"Sec-Fetch-Site": "same-origin", "Origin": "http://signing.test"},  # our own page
        {"Sec-Fetch-Site": "none"},  # typed or bookmarked
        {"Origin": "http://127.0.0.1:8001"},  # PUBLIC_BASE_URL's origin, no Fetch metadata
        {"Origin": "https://signing.test"},  # the Host, behind a TLS-terminating proxy
        {},  # old browsers, curl
    ]
    for headers in allowed:
        # The embed iframe posts to its own origin: same-origin, wherever it is framed.
        for path in (f"/p/{slug}", f"/embed/{slug}"):
            response = await signing.client.post(path, data=form(), headers=headers)
            assert response.status_code == 200, (path, headers, response.text[:300])
            assert "Thank you" in response.text
    assert await signature_count(signing) == 2 * len(allowed)


def test_item7_decision_rule() -> None:
    from groundswell_signing.entrypoints.http.security import is_cross_site_form

    base = "https://petitions.example.org"
    assert is_cross_site_form("cross-site", "https://petitions.example.org", None, base)
    assert is_cross_site_form("same-site", None, None, base)  # a sibling subdomain's page
    assert not is_cross_site_form(None, "https://petitions.example.org:443", None, base)
    assert is_cross_site_form(None, "https://petitions.example.org.evil.example", None, base)
    assert not is_cross_site_form(None, "http://[::1]:8001", "[::1]:8001", base)


# --- item 11: HTTP limits on a real server ----------------------------------------------


@pytest.fixture
async def served(topics: None, signing_settings: SettingsFactory) -> AsyncIterator[int]:
    """The signing app on a free port, served as `serve` serves it (but a 1 s head timeout)."""

    class QuickHeadTimeout(serving.GuardedHttpToolsProtocol):
        head_timeout = 1.0

    app = create_app(signing_settings())
    async with app.router.lifespan_context(app), on_a_free_port(app, http=QuickHeadTimeout) as port:
        yield port


def first_line(data: bytes) -> str:
    return data.split(b"\r\n", 1)[0].decode() if data else "closed"


async def exchange(port: int, chunks: Iterator[bytes], wait: float = 30) -> str:
    """Send `chunks` (stopping if the server closes), then the server's first line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        for chunk in chunks:
            writer.write(chunk)
            try:
                await writer.drain()
            except ConnectionError:
                break
        try:
            return first_line(await asyncio.wait_for(reader.read(200), wait))
        except ConnectionError:
            return "reset"
    finally:
        writer.close()


def request_head(*header_lines: bytes) -> bytes:
    return b"GET /healthz HTTP/1.1\r\nHost: signing.test\r\n" + b"".join(header_lines) + b"\r\n"


async def test_item11_a_huge_header_is_refused(served: int) -> None:
    def one_megabyte_header() -> Iterator[bytes]:
        yield b"GET /healthz HTTP/1.1\r\nHost: signing.test\r\nX-Big: "
        for _ in range(16):
            yield b"a" * 65_536
        yield b"\r\n\r\n"

    assert await exchange(served, one_megabyte_header()) in (
        "HTTP/1.1 431 Request Header Fields Too Large",
        "reset",
    )


async def test_item11_too_many_headers_are_refused(served: int) -> None:
    twenty_thousand = request_head(*(b"X-%d: v\r\n" % i for i in range(20_000)))
    answer = await exchange(served, iter([twenty_thousand]))
    assert answer in ("HTTP/1.1 431 Request Header Fields Too Large", "reset")
    # Few bytes but many fields: the count limit, not the size limit, refuses these.
    many = request_head(*(b"X%d:\r\n" % i for i in range(serving.MAX_HEADERS + 1)))
    assert len(many) < serving.MAX_HEAD_BYTES
    assert await exchange(served, iter([many])) == "HTTP/1.1 431 Request Header Fields Too Large"


async def test_ordinary_requests_pass_the_limits(served: int) -> None:
    big_but_fair = request_head(b"User-Agent: " + b"u" * 8_000 + b"\r\n")
    assert await exchange(served, iter([big_but_fair])) == "HTTP/1.1 200 OK"
    # A head split over several reads is counted as it arrives and still passes.
    head = request_head(*(b"X-%d: %s\r\n" % (i, b"v" * 50) for i in range(60)))
    pieces = iter([head[i : i + 500] for i in range(0, len(head), 500)])
    assert await exchange(served, pieces) == "HTTP/1.1 200 OK"
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{served}") as client:
        petition = {
            "slug": f"p-{uuid.uuid4().hex[:10]}",
            "title": "A petition with a long text",
            "target": "The council",
            "body": "Long enough. " * 700,  # ~9 KB body, several reads
        }
        created = await client.post("/api/admin/petitions", json=petition, headers=ADMIN)
        assert created.status_code == 201


async def test_item11_a_slow_head_is_cut_off(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    sent = 0
    try:
        # One byte at a time; the server must end it long before the head is done.
        for byte in request_head(b"X-Slow: " + b"a" * 200 + b"\r\n"):
            writer.write(bytes([byte]))
            sent += 1
            try:
                data = await asyncio.wait_for(reader.read(200), 0.05)
            except TimeoutError:
                continue
            break
        else:
            pytest.fail("the server read a whole slow head")
    finally:
        writer.close()
    assert first_line(data) in ("HTTP/1.1 408 Request Timeout", "closed")
    assert serving.HEAD_TIMEOUT_SECONDS <= 10  # the shipped limit


async def test_item11_an_idle_connection_is_closed(served: int) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", served)
    try:
        assert await asyncio.wait_for(reader.read(200), 30) == b""  # closed, nothing sent
    finally:
        writer.close()


def test_item11_every_limit_is_in_the_shipped_config() -> None:
    config = serving.server_config(object(), host="127.0.0.1", port=0)
    assert config.limit_concurrency == serving.MAX_CONCURRENCY
    assert config.timeout_keep_alive == serving.KEEP_ALIVE_SECONDS
    assert config.http == "groundswell_runtime.serving:GuardedHttpToolsProtocol"
    assert serving.MAX_HEAD_BYTES <= 32 * 1024 and serving.MAX_HEADERS <= 200


# --- item 12: lone surrogates -------------------------------------------------------------


@pytest.fixture
def json_logs() -> Iterator[io.StringIO]:
    """Every log line as the services write it (their JSON logging), into a buffer."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("signing", "INFO")
    buffer = io.StringIO()
    [handler] = root.handlers
    assert isinstance(handler, logging.StreamHandler)
    handler.setStream(buffer)
    try:
        yield buffer
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        structlog.reset_defaults()
        structlog.contextvars.clear_contextvars()


async def post_json(
    harness: SigningHarness, path: str, body: dict[str, Any], **kwargs: Any
) -> httpx.Response:
    """JSON with lone surrogates escaped (`\\ud800`), as a browser's JSON.stringify sends
    them; httpx's own `json=` cannot encode them."""
    headers = kwargs.pop("headers", {}) | {"Content-Type": "application/json"}
    return await harness.client.request(
        kwargs.pop("method", "POST"), path, content=json.dumps(body), headers=headers
    )


async def test_item12_lone_surrogates_are_a_422_naming_the_field(
    signing: SigningHarness, json_logs: io.StringIO
) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    cases = [
        ({"name": "Ada \ud800 Lovelace"}, "name"),
        ({"postcode": "75001\ud800", "country": "FR"}, "postcode"),
        ({"email": "ada\ud800@example.org"}, "email"),
    ]
    for overrides, field in cases:
        body = {
            "name": "Ada Lovelace",
            "email": "ada@example.org",
            "postcode": "OX1 2JD",
            "country": "GB",
            "contact_consent": True,
        } | overrides
        response = await post_json(signing, f"/api/petitions/{slug}/signatures", body)
        assert response.status_code == 422, (field, response.text)
        assert [e["loc"][-1] for e in response.json()["detail"]] == [field]
    admin = await post_json(
        signing,
        "/api/admin/petitions",
        {"slug": "surrogate", "title": "Title \udc00 here", "target": "To", "body": "b" * 20},
        headers=ADMIN,
    )
    assert admin.status_code == 422
    assert "title" in [e["loc"][-1] for e in admin.json()["detail"]]
    patch = await post_json(
        signing,
        f"/api/admin/petitions/{slug}",
        {"title": "Title \udc00 here"},
        headers=ADMIN,
        method="PATCH",
    )
    assert patch.status_code == 422
    # A surrogate as a JSON key (echoed back by the 422) encodes, too.
    key = await signing.client.post(
        "/api/admin/petitions",
        content=b'{"slug": "s", "\\ud800": 1}',
        headers=ADMIN | {"Content-Type": "application/json"},
    )
    assert key.status_code == 422
    assert await signature_count(signing) == 0
    logged = json_logs.getvalue()
    assert logged  # the requests were logged (by httpx at least): the check is live
    for value in ("Lovelace", "example.org", "75001", "Title"):
        assert value not in logged


async def test_item12_an_unexpected_error_logs_no_request_values(
    json_logs: io.StringIO,
) -> None:
    from groundswell_signing.entrypoints.http.security import UnexpectedErrors

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise ValueError("invalid input for query argument $1: 'victim@example.org'")

    transport = httpx.ASGITransport(app=UnexpectedErrors(broken))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.post("/p/x", data={"email": "victim@example.org"})
    assert response.status_code == 500 and "victim" not in response.text
    lines = [json.loads(x) for x in json_logs.getvalue().splitlines() if x.strip()]
    [line] = [x for x in lines if x.get("event") == "unhandled_error"]
    assert line["error_type"] == "builtins.ValueError"
    assert "victim" not in json.dumps(lines)


async def test_a_streamed_oversize_body_is_refused_not_a_500(signing: SigningHarness) -> None:
    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit counts
        for _ in range(40):
            yield b"x" * 1024

    for path, kind in (
        ("/api/petitions/any/signatures", "application/json"),
        ("/p/any", "application/x-www-form-urlencoded"),
    ):
        response = await signing.client.post(path, content=chunks(), headers={"Content-Type": kind})
        # 413 when the limit trips first; 400 when FastAPI's body parser reports it.
        assert response.status_code in (400, 413), path


# --- item 14: headers, admin token, admin auth failures -------------------------------------


def csp(response: httpx.Response) -> dict[str, str]:
    policy = response.headers["content-security-policy"]
    return {d.split(" ", 1)[0]: d.partition(" ")[2] for d in policy.split("; ")}


async def test_item14_pages_send_a_content_security_policy(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=True)
    slug = petition["slug"]
    for path, framing in ((f"/p/{slug}", "'self'"), (f"/embed/{slug}", "*")):
        page = await signing.client.get(path)
        policy = csp(page)
        assert policy["script-src"] == "'self'" and policy["object-src"] == "'none'"
        assert policy["base-uri"] in ("'none'", "'self'")
        assert policy["frame-ancestors"] == framing
        assert "http://127.0.0.1:8002" in policy["connect-src"]  # the live count
        assert page.headers["x-content-type-options"] == "nosniff"
        assert page.headers["referrer-policy"] == "strict-origin-when-cross-origin"
        # Nothing inline that the policy would block.
        assert re.findall(r"<script(?![^>]*\bsrc=)", page.text) == []
        assert re.findall(r"\s(style|on[a-z]+)=", page.text) == []
    api = await signing.client.get(f"/api/petitions/{slug}")
    assert api.headers["x-content-type-options"] == "nosniff"

    assert (await signing.sign(slug)).status_code == 202
    [created] = await signing.outbox_events("SignatureCreated")
    for path in (f"/confirm/{created['confirmation_token']}", "/confirm/not-a-token"):
        page = await signing.client.get(path)
        assert page.headers["cache-control"] == "no-store"
        assert page.headers["referrer-policy"] == "no-referrer"
        assert csp(page)["script-src"] == "'self'"
    done = await signing.client.post(f"/confirm/{created['confirmation_token']}")
    assert done.status_code == 200 and done.headers["cache-control"] == "no-store"
    withdraw = await signing.client.get(f"/withdraw/{created['withdraw_token']}")
    assert withdraw.status_code == 200
    assert withdraw.headers["cache-control"] == "no-store"
    assert withdraw.headers["referrer-policy"] == "no-referrer"


def test_item14_a_weak_admin_token_is_refused_at_start_up(
    signing_settings: SettingsFactory,
) -> None:
    # SystemExit: `groundswell-signing serve` stops with the message, not a traceback.
    with pytest.raises(SystemExit, match="at least 32"):
        create_app(signing_settings(ADMIN_TOKEN="test-admin-token"))
    assert len(ADMIN_TOKEN) >= 32
    create_app(signing_settings())  # the suite's own token is long enough


@pytest.fixture
async def proxied(topics: None, signing_settings: SettingsFactory) -> AsyncIterator[SigningHarness]:
    # A long first wait: the refusals below must not run out while the test runs.
    settings = signing_settings(trusted_proxies="203.0.113.7", admin_auth_base_delay_seconds=600)
    async for harness in start_harness(settings):
        yield harness


async def test_item14_repeated_admin_failures_are_slowed(proxied: SigningHarness) -> None:
    guesser = {"X-Forwarded-For": "198.51.100.66"}

    async def attempt(token: str, headers: dict[str, str]) -> httpx.Response:
        auth = {"Authorization": f"Bearer {token}"}
        return await proxied.client.get("/api/admin/petitions", headers=headers | auth)

    answers = [(await attempt(f"guess-{i}", guesser)).status_code for i in range(8)]
    assert answers == [401] * 5 + [429] * 3
    refused = await attempt(ADMIN_TOKEN, guesser)  # even the right token, while refused
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    # Another network is not affected.
    other = await attempt(ADMIN_TOKEN, {"X-Forwarded-For": "198.51.100.77"})
    assert other.status_code == 200
