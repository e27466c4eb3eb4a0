"""What each email says: subject, plain text and HTML, and the links in them.

The texts are Jinja2 templates in `groundswell_mailer/templates/` (`<kind>.txt` and
`<kind>.html`), compiled once. Everything a signer typed is escaped in the HTML part
(autoescape) and has control characters removed everywhere, so a name cannot inject
markup or headers. `mime.py` turns the result into the bytes sent.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import lru_cache
from typing import Any
from urllib.parse import quote, urlencode

from groundswell_contracts.events import EmailKind
from groundswell_runtime.organisation import Organisation
from groundswell_runtime.share_links import ShareLinks, share_links
from jinja2 import Environment, PackageLoader, StrictUndefined, Template, select_autoescape

from groundswell_mailer.domain.delivery import unsubscribe_applies

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")
# How long a privacy request's link works: signing's rule (privacy_requests.LINK_LIFETIME).
PRIVACY_LINK_HOURS = 24


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

    def privacy_request(self, token: str) -> str:
        return f"{self.public_base_url.rstrip('/')}/privacy/requests/{quote(token, safe='')}"

    def unsubscribe(self, token: str) -> str:
        return f"{self.mailer_public_url.rstrip('/')}/unsubscribe/{quote(token, safe='')}"

    def preferences(self, token: str) -> str:
        # The preference centre takes the same per-mailbox token (entrypoints/preferences.py).
        return f"{self.mailer_public_url.rstrip('/')}/preferences/{quote(token, safe='')}"


@dataclass(frozen=True)
class EmailContent:
    """What an email needs beyond its recipient; stored with it until it is sent."""

    first_name: str
    petition_title: str
    petition_slug: str
    share_code: str
    withdraw_token: str | None = None
    confirmation_token: str | None = None
    # A privacy request's link: its one-time token and what it asks for.
    verification_token: str | None = None
    privacy_kind: str | None = None

    def to_json(self) -> dict[str, Any]:
        # Not dataclasses.asdict: its recursive deep copy costs more than the email's
        # other bookkeeping, and every field here is a plain string or None.
        return {name: getattr(self, name) for name in _CONTENT_FIELDS}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> EmailContent:
        return cls(
            first_name=str(data["first_name"]),
            petition_title=str(data["petition_title"]),
            petition_slug=str(data["petition_slug"]),
            share_code=str(data["share_code"]),
            withdraw_token=data.get("withdraw_token"),
            confirmation_token=data.get("confirmation_token"),
            verification_token=data.get("verification_token"),
            privacy_kind=data.get("privacy_kind"),
        )


_CONTENT_FIELDS = tuple(f.name for f in fields(EmailContent))

# The signer's share link, once per channel: one definition with the petition pages.
ShareOptions = ShareLinks


@dataclass(frozen=True)
class Campaign:
    """Who the emails come from and what they promise: the organisation profile
    (groundswell_runtime.organisation) and the confirmation link's lifetime, which
    signing enforces (`SIGNING_CONFIRMATION_TTL_HOURS`) and the email states."""

    organisation: Organisation
    confirmation_ttl_hours: int

    def privacy_url(self, links: Links) -> str:
        return self.organisation.privacy_url(links.public_base_url)


@dataclass(frozen=True)
class ComposedEmail:
    subject: str
    text: str
    html: str
    headers: tuple[tuple[str, str], ...]


def one_line(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


def share_options(links: Links, share_code: str, petition_title: str) -> ShareLinks:
    """Each channel's copy of the signer's personal link (`/s/{code}?c={channel}`)."""
    return share_links(
        links.share(share_code),
        petition_title,
        lambda channel: links.share(share_code, channel),
    )


def lifetime(hours: int) -> str:
    """ "3 days", "1 day", "36 hours": how long a link works, as people say it."""
    if hours % 24 == 0:
        days = hours // 24
        return f"{days} day{'s' if days != 1 else ''}"
    return f"{hours} hour{'s' if hours != 1 else ''}"


@lru_cache(maxsize=1)
def configured_campaign() -> Campaign:
    """The campaign from the environment (`ORG_*`, `MAILER_CONFIRMATION_TTL_HOURS` or
    `SIGNING_CONFIRMATION_TTL_HOURS`), read once: what `compose` uses when its caller
    does not pass one."""
    from groundswell_mailer.config import MailerSettings  # the settings read the environment

    return MailerSettings().campaign()


def unsubscribe_headers(unsubscribe_url: str) -> tuple[tuple[str, str], ...]:
    # RFC 8058: mailbox providers POST "List-Unsubscribe=One-Click" to the URL.
    return (
        ("List-Unsubscribe", f"<{unsubscribe_url}>"),
        ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
    )


def compose(
    kind: EmailKind,
    content: EmailContent,
    links: Links,
    unsubscribe_token: str | None,
    campaign: Campaign | None = None,
) -> ComposedEmail:
    """Render one email. Every kind but the confirmation carries an unsubscribe link;
    every one a footer with the organisation's name, postal address and privacy notice."""
    if unsubscribe_applies(kind) and not unsubscribe_token:
        raise ValueError(f"a {kind} email needs an unsubscribe token")
    campaign = campaign or configured_campaign()
    organisation = campaign.organisation
    title = one_line(content.petition_title)
    variables: dict[str, Any] = {
        "organisation": organisation,
        "privacy_url": campaign.privacy_url(links),
        "first_name": one_line(content.first_name),
        "title": title,
        "petition_url": links.petition(content.petition_slug),
        "unsubscribe_url": links.unsubscribe(unsubscribe_token) if unsubscribe_token else None,
        "preferences_url": links.preferences(unsubscribe_token) if unsubscribe_token else None,
    }
    if kind == "confirmation":
        if not content.confirmation_token:
            raise ValueError("a confirmation email needs a confirmation token")
        subject = f"Please confirm your signature on “{title}”"
        variables["confirm_url"] = links.confirm(content.confirmation_token)
        variables["expires_in"] = lifetime(campaign.confirmation_ttl_hours)
    elif kind == "privacy_verification":
        if not content.verification_token:
            raise ValueError("a privacy verification email needs its token")
        erasure = content.privacy_kind == "erasure"
        subject = "Confirm: erase your data" if erasure else "Your link to a copy of your data"
        variables["erasure"] = erasure
        variables["request_url"] = links.privacy_request(content.verification_token)
        variables["expires_in"] = lifetime(PRIVACY_LINK_HOURS)
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
    if organisation.reply_to:
        headers = (("Reply-To", organisation.reply_to), *headers)
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
    for kind in ("confirmation", "thank_you", "already_signed", "privacy_verification")
    for part in ("txt", "html")
}
