"""`/docs` and `/redoc` of all four services load nothing from another host, and what they
load is served (issue 11: blank pages without internet).

The apps are the services' own factories, driven over ASGI without their start-up (the
pages need no database or broker)."""

from __future__ import annotations

import re
from collections.abc import Callable
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from groundswell_counter.adapters.counts_view import CountsView
from groundswell_counter.config import CounterSettings
from groundswell_counter.entrypoints.http import create_api
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.entrypoints.http import create_app as create_mailer
from groundswell_runtime.docs import ASSET_FILES, ASSETS_PATH
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.entrypoints.http import create_app as create_sharing
from groundswell_signing.config import SigningSettings
from groundswell_signing.entrypoints.http.app import create_app as create_signing
from starlette.types import ASGIApp

BASE = "http://service.test"


def signing() -> ASGIApp:
    return create_signing(SigningSettings(ADMIN_TOKEN="docs-test-admin-token-0123456789abcdef"))


def counter() -> ASGIApp:
    settings = CounterSettings()
    return create_api(settings, CountsView(settings.kafka_bootstrap_servers, "counts"), {})


def mailer() -> ASGIApp:
    return create_mailer(MailerSettings())


def sharing() -> ASGIApp:
    return create_sharing(SharingSettings(ADMIN_TOKEN="docs-test-admin-token-0123456789abcdef"))


SERVICES: dict[str, Callable[[], ASGIApp]] = {
    "signing": signing,
    "counter": counter,
    "mailer": mailer,
    "sharing": sharing,
}


class _References(HTMLParser):
    """Every URL a page makes the browser fetch: src/href/spec-url attributes and Swagger
    UI's `url: '...'`."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "spec-url") and value:
                self.urls.append(value)

    def handle_data(self, data: str) -> None:
        # Swagger UI's inline set-up names the OpenAPI document (and the OAuth2 page).
        self.urls += re.findall(r"""(?:url|oauth2RedirectUrl)\s*:\s*['"]([^'"]+)['"]""", data)


def references(html: str) -> list[str]:
    parser = _References()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize("service", sorted(SERVICES))
@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_local_assets_that_answer(service: str, page: str) -> None:
    app = SERVICES[service]()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=BASE) as client:
        response = await client.get(page)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/html")
        urls = references(response.text)
        scripts = [u for u in urls if u.endswith(".js")]
        assert scripts, f"{service}{page} loads no script at all: {urls}"
        assert "/openapi.json" in urls, f"{service}{page} does not load the API document"
        for url in urls:
            absolute = urljoin(f"{BASE}{page}", url)
            assert urlsplit(absolute).netloc == urlsplit(BASE).netloc, (
                f"{service}{page} loads {url} from another host"
            )
            fetched = await client.get(absolute)
            assert fetched.status_code == 200, f"{service}{page}: {url} -> {fetched.status_code}"
            assert fetched.content, f"{service}{page}: {url} is empty"
        assert "cdn" not in response.text.lower()
        assert "fonts.googleapis" not in response.text


async def test_assets_are_the_real_bundles_with_their_types() -> None:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=signing()), base_url=BASE
    ) as client:
        for name in ASSET_FILES:
            response = await client.get(f"{ASSETS_PATH}/{name}")
            assert response.status_code == 200, name
            expected = {"js": "javascript", "css": "text/css", "png": "image/png"}[
                name.rsplit(".", 1)[1]
            ]
            assert expected in response.headers["content-type"], name
        bundle = await client.get(f"{ASSETS_PATH}/swagger-ui-bundle.js")
        # Swagger UI 5 reads the OpenAPI 3.1 documents FastAPI writes; 4 shows an error.
        assert "SwaggerUIBundle" in bundle.text and "3.1" in bundle.text
        openapi = await client.get("/openapi.json")
        assert openapi.status_code == 200 and openapi.json()["openapi"].startswith("3.1")
        missing = await client.get(f"{ASSETS_PATH}/nothing-here.js")
        assert missing.status_code == 404
