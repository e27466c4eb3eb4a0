"""What each email says: subject, plain text and HTML, and the links in them.

Everything a signer typed is escaped in the HTML part (Jinja2 autoescape) and has
control characters removed everywhere, so a name cannot inject markup or headers.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import quote, urlencode

from groundswell_contracts.events import EmailKind
from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape

from groundswell_mailer.domain.delivery import unsubscribe_applies

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class Links:
    """Public base URLs, as the recipient's browser reaches each service."""

    public_base_url: str  # signing
    share_base_url: str  # sharing
    mailer_public_url: str  # this service

    def confirm(self, token: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/confirm/{quote(token, safe='')}"

    def withdraw(self, token: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/withdraw/{quote(token, safe='')}"

    def petition(self, slug: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/p/{quote(slug, safe='')}"

    def share(self, code: str, channel: str | None = None) -> str:
        url = f"{self.share_base_url.rstrip('/')}/s/{quote(code, safe='')}"
        return f"{url}?{urlencode({'c': channel})}" if channel else url

    def unsubscribe(self, token: str) -> str:
        return f"{self.mailer_public_url.rstrip('/')}/unsubscribe/{quote(token, safe='')}"


@dataclass(frozen=True)
class EmailContent:
    """What an email needs beyond its recipient; stored with it until it is sent."""

    first_name: str
    petition_title: str
    petition_slug: str
    share_code: str
    withdraw_token: str | None = None
    confirmation_token: str | None = None

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmailContent:
        return cls(
            first_name=str(data["first_name"]),
            petition_title=str(data["petition_title"]),
            petition_slug=str(data["petition_slug"]),
            share_code=str(data["share_code"]),
            withdraw_token=data.get("withdraw_token"),
            confirmation_token=data.get("confirmation_token"),
        )


@dataclass(frozen=True)
class ShareOptions:
    """The signer's share link, once per channel so the sharing stats can tell them apart."""

    link: str
    whatsapp: str
    facebook: str
    x: str
    email: str


@dataclass(frozen=True)
class ComposedEmail:
    subject: str
    text: str
    html: str
    headers: tuple[tuple[str, str], ...]


def one_line(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def share_options(links: Links, share_code: str, petition_title: str) -> ShareOptions:
    pitch = f"I just signed “{one_line(petition_title)}”. Will you sign too?"
    whatsapp_text = f"{pitch} {links.share(share_code, 'whatsapp')}"
    return ShareOptions(
        link=links.share(share_code),
        whatsapp="https://wa.me/?" + urlencode({"text": whatsapp_text}),
        facebook="https://www.facebook.com/sharer/sharer.php?"
        + urlencode({"u": links.share(share_code, "facebook")}),
        x="https://twitter.com/intent/tweet?"
        + urlencode({"text": pitch, "url": links.share(share_code, "x")}),
        email="mailto:?"
        + urlencode(
            {
                "subject": one_line(petition_title),
                "body": f"{pitch}\n\n{links.share(share_code, 'email')}",
            },
            quote_via=quote,
        ),
    )


def unsubscribe_headers(unsubscribe_url: str) -> tuple[tuple[str, str], ...]:
    # RFC 8058: mailbox providers POST "List-Unsubscribe=One-Click" to the URL.
    return (
        ("List-Unsubscribe", f"<{unsubscribe_url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    )


def compose(
    kind: EmailKind, content: EmailContent, links: Links, unsubscribe_token: str | None
) -> ComposedEmail:
    """Render one email. Every kind but the confirmation carries an unsubscribe link."""
    if unsubscribe_applies(kind) and not unsubscribe_token:
        raise ValueError(f"a {kind} email needs an unsubscribe token")
    title = one_line(content.petition_title)
    variables: dict[str, Any] = {
        "first_name": one_line(content.first_name),
        "title": title,
        "petition_url": links.petition(content.petition_slug),
        "unsubscribe_url": links.unsubscribe(unsubscribe_token) if unsubscribe_token else None,
    }
    if kind == "confirmation":
        if not content.confirmation_token:
            raise ValueError("a confirmation email needs a confirmation token")
        subject = f"Please confirm your signature on “{title}”"
        variables["confirm_url"] = links.confirm(content.confirmation_token)
    elif kind == "thank_you":
        subject = f"Thank you for signing “{title}”"
        variables["share"] = share_options(links, content.share_code, title)
        variables["withdraw_url"] = (
            links.withdraw(content.withdraw_token) if content.withdraw_token else None
        )
    else:
        subject = f"You have already signed “{title}”"
        variables["share"] = share_options(links, content.share_code, title)
    headers = unsubscribe_headers(variables["unsubscribe_url"]) if unsubscribe_token else ()
    return ComposedEmail(
        subject=subject,
        text=_templates.get_template(f"{kind}.txt").render(variables),
        html=_templates.get_template(f"{kind}.html").render(variables),
        headers=headers,
    )


_LAYOUT = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title></head>
<body style="margin:0;padding:24px;background:#f4f4f5;font-family:Arial,sans-serif;color:#18181b">
<div style="max-width:560px;margin:0 auto;background:#ffffff;border-radius:8px;padding:24px">
{% block body %}{% endblock %}
{% if unsubscribe_url %}
<p style="margin-top:32px;font-size:12px;color:#71717a">You are receiving this because this
address was used to sign “{{ title }}”.
<a href="{{ unsubscribe_url }}" style="color:#71717a">Unsubscribe</a> from these emails.</p>
{% endif %}
</div></body></html>
"""

_BUTTON = (
    'style="display:inline-block;padding:12px 20px;background:#16a34a;color:#ffffff;'
    'text-decoration:none;border-radius:6px;font-weight:bold"'
)

_SHARE_HTML = """
<p><strong>Share it</strong> — every share brings in new signatures:</p>
<p>
<a href="{{ share.whatsapp }}">WhatsApp</a> ·
<a href="{{ share.facebook }}">Facebook</a> ·
<a href="{{ share.x }}">X</a> ·
<a href="{{ share.email }}">Email a friend</a>
</p>
<p>Or copy your link: <a href="{{ share.link }}">{{ share.link }}</a></p>
"""

_SHARE_TEXT = """Share it - every share brings in new signatures. Your link:
{{ share.link }}

WhatsApp: {{ share.whatsapp }}
Facebook: {{ share.facebook }}
X: {{ share.x }}
"""

_TEXT_FOOTER = """{% if unsubscribe_url %}
--
You are receiving this because this address was used to sign "{{ title }}".
Unsubscribe: {{ unsubscribe_url }}
{% endif %}"""

_TEMPLATES = {
    "layout.html": _LAYOUT,
    "confirmation.html": """{% extends "layout.html" %}{% block body %}
<p>Hello {{ first_name }},</p>
<p>Thank you for signing “<a href="{{ petition_url }}">{{ title }}</a>”. Your signature
counts once you confirm it.</p>
<p>Open the page below and press the <strong>Confirm my signature</strong> button on it
(just opening the link does not confirm anything):</p>
<p><a href="{{ confirm_url }}" """
    + _BUTTON
    + """>Open the confirmation page</a></p>
<p style="font-size:13px;color:#52525b">Or paste this into your browser: {{ confirm_url }}</p>
<p style="font-size:13px;color:#52525b">If you did not sign, ignore this email: nothing is
counted without the button.</p>
{% endblock %}""",
    "confirmation.txt": """Hello {{ first_name }},

Thank you for signing "{{ title }}". Your signature counts once you confirm it.

Open this page and press the "Confirm my signature" button on it
(just opening the link does not confirm anything):

{{ confirm_url }}

If you did not sign, ignore this email: nothing is counted without the button.
""",
    "thank_you.html": """{% extends "layout.html" %}{% block body %}
<p>Thank you, {{ first_name }}!</p>
<p>Your signature on “<a href="{{ petition_url }}">{{ title }}</a>” is counted.</p>
"""
    + _SHARE_HTML
    + """
{% if withdraw_url %}<p style="font-size:13px;color:#52525b">Signed by mistake?
<a href="{{ withdraw_url }}">Remove your signature</a> (opens a page with a button).</p>{% endif %}
{% endblock %}""",
    "thank_you.txt": """Thank you, {{ first_name }}!

Your signature on "{{ title }}" is counted.
{{ petition_url }}

"""
    + _SHARE_TEXT
    + """{% if withdraw_url %}
Signed by mistake? Remove your signature (opens a page with a button):
{{ withdraw_url }}
{% endif %}"""
    + _TEXT_FOOTER,
    "already_signed.html": """{% extends "layout.html" %}{% block body %}
<p>Hello {{ first_name }},</p>
<p>Someone, probably you, just tried to sign “<a href="{{ petition_url }}">{{ title }}</a>”
again with this address. Your signature is already there and counts once: there is
nothing more to do.</p>
<p style="font-size:13px;color:#52525b">If it was not you, you can ignore this email;
nobody was told whether this address had signed.</p>
"""
    + _SHARE_HTML
    + """{% endblock %}""",
    "already_signed.txt": """Hello {{ first_name }},

Someone, probably you, just tried to sign "{{ title }}" again with this address.
Your signature is already there and counts once: there is nothing more to do.

If it was not you, you can ignore this email; nobody was told whether this
address had signed.

"""
    + _SHARE_TEXT
    + _TEXT_FOOTER,
}

_templates = Environment(
    loader=DictLoader(_TEMPLATES),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
)
