"""What a browser is told and what a hostile page cannot do: headers, cross-site forms, 500s.

- Form posts (`/p`, `/embed`, `/confirm`, `/withdraw`) are refused when a browser says
  they come from another site: a hostile page could otherwise sign, confirm or withdraw
  in a visitor's name. `Sec-Fetch-Site` decides when sent (every current browser); else
  `Origin` must be ours; with neither (old browsers, curl, scripts) the post is allowed,
  because a page cannot make a browser send a cross-site post with neither.
- Pages get a Content-Security-Policy that runs only our own script file, and every
  response gets `nosniff` and a referrer policy. Token pages are never cached and
  never leak their address as a referrer.
- An unexpected exception is logged by type and code location only: its message can
  quote request values (a name, an email), which must not reach a log line.
"""

from __future__ import annotations

import json
import traceback
from urllib.parse import urlsplit

import structlog
from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger()

SAME_ORIGIN_FETCH = frozenset({"same-origin", "none"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


class CrossSiteForm(Exception):
    """A browser posted one of our forms from another site's page."""


def origin_of(url: str) -> str | None:
    """`https://Example.org:443/p/x` -> `https://example.org`; None if it has no host."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError:
        return None
    if parts.scheme not in _DEFAULT_PORTS or not parts.hostname:
        return None
    host = parts.hostname
    if ":" in host:  # IPv6 literal
        host = f"[{host}]"
    if port is not None and port != _DEFAULT_PORTS[parts.scheme]:
        host = f"{host}:{port}"
    return f"{parts.scheme}://{host}"


def is_cross_site_form(
    sec_fetch_site: str | None, origin: str | None, host: str | None, public_base_url: str
) -> bool:
    """The decision, apart from any request: True means refuse."""
    if sec_fetch_site is not None:
        return sec_fetch_site.strip().lower() not in SAME_ORIGIN_FETCH
    if origin is None:
        return False
    given = origin_of(origin)  # "null" (sandboxed frames, privacy redirects) is None
    if given is None:
        return True
    ours = {origin_of(public_base_url)}
    if host:
        # The address the browser used, whatever the scheme a proxy in front terminated.
        ours |= {origin_of(f"http://{host}"), origin_of(f"https://{host}")}
    return given not in ours


async def refuse_cross_site_forms(request: Request) -> None:
    """Dependency of every HTML form's POST route."""
    settings = request.app.state.service.settings
    headers = request.headers
    if is_cross_site_form(
        headers.get("sec-fetch-site"),
        headers.get("origin"),
        headers.get("host"),
        settings.public_base_url,
    ):
        raise CrossSiteForm()


def page_policy(counter_public_url: str, *, embeddable: bool) -> str:
    """The CSP of every HTML page: our own script, styles and count stream, nothing else."""
    counter = origin_of(counter_public_url) or ""
    framing = "*" if embeddable else "'self'"
    return "; ".join(
        [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"connect-src 'self' {counter}".rstrip(),
            "form-action 'self'",
            "base-uri 'none'",
            "object-src 'none'",
            f"frame-ancestors {framing}",
        ]
    )


def page_headers(counter_public_url: str, *, embeddable: bool, secret_url: bool) -> dict[str, str]:
    headers = {"Content-Security-Policy": page_policy(counter_public_url, embeddable=embeddable)}
    if not embeddable:
        headers["X-Frame-Options"] = "DENY"
    if secret_url:
        # The address holds a token: keep it out of caches, history sync and Referer.
        headers["Cache-Control"] = "no-store"
        headers["Referrer-Policy"] = "no-referrer"
    return headers


SECURITY_DEFAULTS = (
    (b"x-content-type-options", b"nosniff"),
    # Share links carry ?ref=: other sites see our origin, never the full address.
    (b"referrer-policy", b"strict-origin-when-cross-origin"),
)


def with_security_headers(message: Message) -> Message:
    """The defaults added to a response start that does not set its own (the one rule,
    for `SecurityHeaders` and the lean signing path, fast_sign.py)."""
    if message["type"] == "http.response.start":
        headers = list(message.get("headers", ()))
        present = {name.lower() for name, _ in headers}
        headers += [(k, v) for k, v in SECURITY_DEFAULTS if k not in present]
        message["headers"] = headers
    return message


class SecurityHeaders:
    """`nosniff` and a referrer policy on every response that does not set its own."""

    DEFAULTS = SECURITY_DEFAULTS

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            await send(with_security_headers(message))

        await self.app(scope, receive, send_with_headers)


class UnexpectedErrors:
    """Answer 500 for any exception no handler claimed, and log it without its message.

    Starlette's own last-resort handler re-raises so that uvicorn logs the exception
    with its message, which may quote what the client sent; this one does not.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            await answer_unexpected(scope, exc, send, started=started)


async def answer_unexpected(scope: Scope, exc: Exception, send: Send, *, started: bool) -> None:
    """`UnexpectedErrors`' answer (also the lean signing path's): the exception logged by
    type and place only, and a 500 unless a response had already started."""
    route = scope.get("route")
    log.error(
        "unhandled_error",
        error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
        method=scope.get("method"),
        route=getattr(route, "path", None),  # the template: /p/{slug}, no values
        where=[
            f"{frame.filename}:{frame.lineno} in {frame.name}"
            for frame in traceback.extract_tb(exc.__traceback__)[-8:]
        ],
    )
    if started:
        return  # uvicorn closes a response that was cut short
    body = json.dumps({"detail": "Internal error; it has been logged."}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
