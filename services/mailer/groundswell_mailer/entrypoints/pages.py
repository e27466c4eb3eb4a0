"""The few HTML pages the mailer serves (unsubscribe), with headers fit for secret URLs."""

from __future__ import annotations

from html import escape

from fastapi.responses import HTMLResponse

# The token is in the URL: never cache the page, never leak it through Referer.
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
}

_STYLE = (
    "body{font-family:Arial,Helvetica,sans-serif;background:#f4f4f5;color:#18181b;margin:0}"
    "main{max-width:520px;margin:48px auto;background:#fff;border-radius:8px;padding:32px}"
    "button{padding:12px 20px;background:#16a34a;color:#fff;border:0;border-radius:6px;"
    "font-size:16px;font-weight:bold;cursor:pointer}"
)


def page(title: str, body_html: str, status_code: int = 200) -> HTMLResponse:
    document = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        f"<title>{escape(title)}</title><style>{_STYLE}</style></head>"
        f"<body><main><h1>{escape(title)}</h1>{body_html}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status_code, headers=PAGE_HEADERS)


def unsubscribe_form(action_path: str) -> HTMLResponse:
    # A GET only shows this button: link scanners that fetch every URL unsubscribe nobody.
    return page(
        "Unsubscribe",
        "<p>Stop emails about the petitions this address signed? Your signatures stay counted."
        "</p>"
        f'<form method="post" action="{escape(action_path)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>',
    )


def already_unsubscribed() -> HTMLResponse:
    return page(
        "You are unsubscribed",
        "<p>This address gets no more emails about the petitions it signed. Your signatures "
        "stay counted.</p><p>If you sign another petition you will still be sent the link "
        "that confirms that signature.</p>",
    )


def unsubscribed() -> HTMLResponse:
    return page(
        "You are unsubscribed",
        "<p>Done: this address gets no more emails about the petitions it signed, starting "
        "now. Your signatures stay counted.</p><p>If you sign another petition you will still "
        "be sent the link that confirms that signature.</p>",
    )


def unknown_link() -> HTMLResponse:
    return page(
        "Link not recognised",
        "<p>This unsubscribe link is not one we sent, or it was cut short when it was copied. "
        "Use the <em>Unsubscribe</em> link at the bottom of any of our emails, or your email "
        "program's own unsubscribe button.</p>",
        status_code=404,
    )
