"""What a mailing says, to whom it may go, and the milestone note: rules without I/O.

Rendering. The organiser writes Markdown (CommonMark, markdown-it-py) with raw HTML
turned off, so anything typed between angle brackets is shown, not obeyed, and
markdown-it's link check refuses `javascript:`, `vbscript:`, `file:` and `data:` links.
The body is rendered once per mailing; each recipient's copy only substitutes the
placeholders (`{first_name}`, `{petition_title}`, `{petition_url}`) into that HTML, with
the values HTML-escaped, so nothing a supporter typed as their name can add markup. A
placeholder inside a link's address is not substituted (markdown-it percent-encodes
the braces), so a name can never become part of a URL either.

Source tags. Every link to a petition page (`{PUBLIC_BASE_URL}/p/...`, or `/p/...`
written as a path) gets `source=<the mailing's code>`, replacing any source the
organiser typed: signing carries `?source=` into the signature and the counter's
`by_source` then shows what the mailing brought.

Who may get it (applied in SQL by adapters/audience.py, stated here):
a mailbox gets a mailing of category C when it is not unsubscribed, and its preference
for C is "yes", or unset and one of its live signatures (confirmed, not withdrawn) gave
contact consent. Updates go only to people who signed one of the mailing's petitions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from html import escape
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from markdown_it import MarkdownIt
from markdown_it.token import Token
from markupsafe import Markup

from groundswell_mailer.domain.messages import (
    Campaign,
    ComposedEmail,
    Links,
    one_line,
    unsubscribe_headers,
)

Category = Literal["news", "updates"]
CATEGORIES: tuple[Category, ...] = ("news", "updates")
CATEGORY_NAMES: dict[str, str] = {
    "updates": "updates on petitions you signed",
    "news": "the campaign's news",
}

PLACEHOLDERS = frozenset({"first_name", "petition_title", "petition_url"})
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
# What a mailing's source code may be: what signing accepts as `source`.
SOURCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MD_LINK = re.compile(r"(!?)\[([^\]\n]*)\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"\n]*\")?\s*\)")


def unknown_placeholders(*texts: str) -> list[str]:
    """Placeholders the organiser wrote that we cannot fill (say, `{firstname}`)."""
    found = {m.group(1) for text in texts for m in _PLACEHOLDER.finditer(text)}
    return sorted(found - PLACEHOLDERS)


def tag_link(url: str, public_base_url: str, source: str) -> str:
    """A petition link with `source=<source>` (absolute); any other link as it was."""
    base = public_base_url.rstrip("/")
    if url.startswith("/p/"):
        url = f"{base}{url}"
    if not url.startswith(f"{base}/p/"):
        return url
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k != "source"]
    query.append(("source", source))
    return urlunsplit(parts._replace(query=urlencode(query)))


@lru_cache(maxsize=1)
def _markdown() -> MarkdownIt:
    # "commonmark" with html off: raw HTML in the body is escaped, not rendered.
    return MarkdownIt("commonmark", {"html": False})


def _tag_tokens(tokens: list[Token], public_base_url: str, source: str) -> None:
    for token in tokens:
        if token.type == "link_open":
            href = str(token.attrGet("href") or "")
            token.attrSet("href", tag_link(href, public_base_url, source))
        if token.children:
            _tag_tokens(token.children, public_base_url, source)


def markdown_html(body: str, public_base_url: str, source: str) -> str:
    md = _markdown()
    tokens = md.parse(body)
    _tag_tokens(tokens, public_base_url, source)
    return str(md.renderer.render(tokens, md.options, {}))


def markdown_text(body: str, public_base_url: str, source: str) -> str:
    """The plain-text part: the Markdown itself (made to be read as text), with each
    link written out as `label (address)` and petition links tagged."""

    def link(match: re.Match[str]) -> str:
        image, label, url = match.group(1), match.group(2), match.group(3)
        url = tag_link(url, public_base_url, source)
        if image:
            return f"{label} ({url})" if label else url
        return f"{label} ({url})" if label and label != url else url

    return _MD_LINK.sub(link, body.replace("\r\n", "\n")).strip() + "\n"


def _fill(text: str, values: dict[str, str], *, html: bool) -> str:
    def one(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        if value is None:
            return match.group(0)
        return escape(value) if html else value

    return _PLACEHOLDER.sub(one, text)


@dataclass(frozen=True)
class Mailing:
    """A mailing as the sender needs it; `html_body` / `text_body` rendered once."""

    id: int
    subject: str
    category: str
    source: str
    cta_label: str
    cta_url: str  # tagged with the source
    petition_title: str
    first_name_fallback: str
    html_body: str
    text_body: str

    @classmethod
    def render(
        cls,
        *,
        id: int,
        subject: str,
        body_markdown: str,
        category: str,
        source: str,
        cta_label: str,
        petition_slug: str,
        petition_title: str,
        first_name_fallback: str,
        links: Links,
    ) -> Mailing:
        base = links.public_base_url
        return cls(
            id=id,
            subject=subject,
            category=category,
            source=source,
            cta_label=cta_label,
            cta_url=tag_link(links.petition(petition_slug), base, source),
            petition_title=petition_title,
            first_name_fallback=first_name_fallback,
            html_body=markdown_html(body_markdown, base, source),
            text_body=markdown_text(body_markdown, base, source),
        )

    def values(self, first_name: str) -> dict[str, str]:
        return {
            "first_name": one_line(first_name) or self.first_name_fallback,
            "petition_title": one_line(self.petition_title),
            "petition_url": self.cta_url,
        }


def compose_mailing(
    mailing: Mailing,
    first_name: str,
    links: Links,
    recipient_token: str,
    campaign: Campaign,
) -> ComposedEmail:
    """One supporter's copy: personalised body, the call to action, and a footer with
    the organisation's name, postal address, privacy notice, preferences and unsubscribe
    links (PECR / CAN-SPAM), plus the RFC 8058 one-click unsubscribe headers."""
    values = mailing.values(first_name)
    unsubscribe_url = links.unsubscribe(recipient_token)
    variables: dict[str, Any] = {
        "organisation": campaign.organisation,
        "privacy_url": campaign.privacy_url(links),
        "preferences_url": preferences_url(links, recipient_token),
        "unsubscribe_url": unsubscribe_url,
        "title": one_line(_fill(mailing.subject, values, html=False)),
        "reason": CATEGORY_NAMES[mailing.category],
        "cta_label": mailing.cta_label,
        "cta_url": mailing.cta_url,
    }
    html = _TEMPLATES["mailing.html"].render(
        variables,
        body=Markup(_fill(mailing.html_body, values, html=True)),  # noqa: S704
    )
    text = _TEMPLATES["mailing.txt"].render(
        variables, body=_fill(mailing.text_body, values, html=False)
    )
    headers = unsubscribe_headers(unsubscribe_url)
    if campaign.organisation.reply_to:
        headers = (("Reply-To", campaign.organisation.reply_to), *headers)
    return ComposedEmail(subject=variables["title"], text=text, html=html, headers=headers)


def compose_milestone(
    *, petition_title: str, petition_slug: str, threshold: int, links: Links, campaign: Campaign
) -> ComposedEmail:
    """The organisation's own note: no unsubscribe (it goes to the notify address)."""
    title = one_line(petition_title)
    variables: dict[str, Any] = {
        "organisation": campaign.organisation,
        "privacy_url": campaign.privacy_url(links),
        "title": title,
        "threshold": f"{threshold:,}",
        "petition_url": links.petition(petition_slug),
    }
    headers: tuple[tuple[str, str], ...] = ()
    if campaign.organisation.reply_to:
        headers = (("Reply-To", campaign.organisation.reply_to),)
    return ComposedEmail(
        subject=f"“{title}” reached {threshold:,} signatures",
        text=_TEMPLATES["milestone.txt"].render(variables),
        html=_TEMPLATES["milestone.html"].render(variables),
        headers=headers,
    )


def preferences_url(links: Links, token: str) -> str:
    return links.preferences(token)


# Progress: what the admin API and /metrics report for a mailing.
PROGRESS_STATES = ("waiting", "queued", "sending", "sent", "failed", "bounced", "suppressed")
_BOUNCE = re.compile(r"^5\d\d (sender|recipient|data):")


def progress_state(status: str, waiting: bool, last_error: str | None) -> str:
    """`waiting`: not released by the pacer yet; `bounced`: refused by the receiving
    server for good (5xx at MAIL, RCPT or DATA); `failed`: given up otherwise."""
    if status == "queued":
        return "waiting" if waiting else "queued"
    if status == "failed" and last_error and _BOUNCE.match(last_error):
        return "bounced"
    if status == "cancelled":
        return "suppressed"
    return status


_environment = Environment(
    loader=PackageLoader("groundswell_mailer", "templates"),
    autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
    undefined=StrictUndefined,
    keep_trailing_newline=True,
    auto_reload=False,
)
_TEMPLATES = {
    name: _environment.get_template(name)
    for name in ("mailing.html", "mailing.txt", "milestone.html", "milestone.txt")
}
