"""The two HTML pages a share link can answer instead of a redirect."""

from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse

_HEAD = (
    '<!doctype html><html lang="en"><head><meta charset="utf-8">'
    '<meta name="viewport" content="width=device-width,initial-scale=1">'
)
_STYLE = (
    "<style>"
    "body{font-family:Arial,Helvetica,sans-serif;background:#f4f4f5;color:#18181b;margin:0}"
    "main{max-width:520px;margin:48px auto;background:#fff;border-radius:8px;padding:32px}"
    "</style>"
)
# Each visit must reach us, and the code must not leak onwards or into search results.
NO_STORE = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


def unknown_link_page(public_base_url: str) -> HTMLResponse:
    home = escape(public_base_url.rstrip("/") + "/")
    document = (
        f"{_HEAD}<title>Share link not found</title>{_STYLE}</head><body><main>"
        "<h1>We don't recognise this share link</h1>"
        "<p>The link may have been cut short or mistyped when it was copied: check that "
        "you have all of it, or ask the person who sent it to send it again.</p>"
        f'<p><a href="{home}">Find the petition on the site</a></p>'
        "</main></body></html>"
    )
    return HTMLResponse(document, status_code=404, headers=NO_STORE)


def opening_page(retry_url: str, delay: int) -> HTMLResponse:
    """A link signing issued a moment ago, before sharing has heard of it: the browser
    asks again shortly (Refresh header and meta refresh, no script needed).

    202: accepted, not done; a link-preview robot does not keep it as the link's page.
    """
    target = escape(retry_url)
    document = (
        f'{_HEAD}<meta http-equiv="refresh" content="{delay}; url={target}">'
        f"<title>Opening the petition...</title>{_STYLE}</head><body><main>"
        "<h1>Opening the petition...</h1>"
        "<p>This link was shared only a moment ago; the petition will open in a "
        "second or two.</p>"
        f'<p><a href="{target}">Open it now</a></p>'
        "</main></body></html>"
    )
    return HTMLResponse(
        document, status_code=202, headers=NO_STORE | {"Refresh": f"{delay}; url={retry_url}"}
    )
