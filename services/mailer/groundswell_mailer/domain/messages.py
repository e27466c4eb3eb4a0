"""What each email says: subject, plain text and HTML, and the links in them.

The texts are Jinja2 templates in `groundswell_mailer/templates/` (`<kind>.txt` and
`<kind>.html`), compiled once. Everything a signer typed is escaped in the HTML part
(autoescape) and has control characters removed everywhere, so a name cannot inject
markup or headers. `mime.py` turns the result into the bytes sent.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import quote, quote_plus, urlencode

from groundswell_contracts.events import EmailKind
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

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
    """Each channel's link; the same as `urlencode` of each query, built from pieces
    (percent-encoding works character by character), with the petition's own pieces
    encoded once per title rather than once per email."""
    title, pitch_plus, pitch_then_body = _pitch(petition_title)
    return ShareOptions(
        link=links.share(share_code),
        whatsapp="https://wa.me/?text="
        + pitch_plus
        + "+"
        + quote_plus(links.share(share_code, "whatsapp")),
        facebook="https://www.facebook.com/sharer/sharer.php?u="
        + quote_plus(links.share(share_code, "facebook")),
        x="https://twitter.com/intent/tweet?text="
        + pitch_plus
        + "&url="
        + quote_plus(links.share(share_code, "x")),
        email="mailto:?subject="
        + title
        + "&body="
        + pitch_then_body
        + quote(links.share(share_code, "email"), safe=""),
    )


@lru_cache(maxsize=1024)
def _pitch(petition_title: str) -> tuple[str, str, str]:
    """(title, pitch) percent-encoded as each channel's query needs them."""
    title = one_line(petition_title)
    pitch = f"I just signed “{title}”. Will you sign too?"
    return quote(title, safe=""), quote_plus(pitch), quote(f"{pitch}\n\n", safe="")


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
        text=_TEMPLATES[f"{kind}.txt"].render(variables),
        html=_TEMPLATES[f"{kind}.html"].render(variables),
        headers=headers,
    )


# Compiled once, when the module is imported; rendering an email only runs them.
# Autoescape is on for the .html files: whatever a signer typed is escaped there.
_environment = Environment(
    loader=PackageLoader("groundswell_mailer", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    auto_reload=False,
)
_TEMPLATES: dict[str, Template] = {
    f"{kind}.{part}": _environment.get_template(f"{kind}.{part}")
    for kind in ("confirmation", "thank_you", "already_signed")
    for part in ("txt", "html")
}
