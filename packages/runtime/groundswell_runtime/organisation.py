"""The campaign running this Groundswell: who it is, how it signs its emails, where it lives.

One profile, read from `ORG_*` environment variables, shared by every service that speaks
in the campaign's name: signing's pages (header, footer, privacy notice, link previews) and
the mailer's emails (From, Reply-To, footer). UK PECR and US CAN-SPAM expect a sender's
name and postal address in every marketing email, and GDPR a privacy notice where data is
collected; so the defaults are an obvious demo, never a plausible real organisation, and a
campaign going live sets at least ORG_NAME, ORG_SENDER_ADDRESS and ORG_POSTAL_ADDRESS.

Everything here ends up in HTML (auto-escaped), in CSS (the brand colour: validated, since
a stylesheet is not escaped) or in an email header (the name and addresses: one line, no
control characters, so none can add a header).
"""

from __future__ import annotations

import re
from email.utils import formataddr
from pathlib import Path
from typing import Self

from pydantic import ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEMO_NAME = "Demo Campaign"
DEMO_POSTAL_ADDRESS = "1 Example Street, Exampletown, EX1 1AA, United Kingdom (demo address)"

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# One plain mailbox, as the mailer's MIME writer accepts recipients.
_MAILBOX = re.compile(r"[^\s@<>()\[\]\\,;:\"\x00-\x1f\x7f]+@[^\s@<>()\[\]\\,;:\"\x00-\x1f\x7f]+")
_COLOUR = re.compile(r"#(?:[0-9a-fA-F]{3}|[0-9a-fA-F]{6})")


class Organisation(BaseSettings):
    """`ORG_NAME`, `ORG_SENDER_NAME`, `ORG_SENDER_ADDRESS`, `ORG_REPLY_TO`,
    `ORG_NOTIFY_ADDRESS`, `ORG_POSTAL_ADDRESS`, `ORG_PRIVACY_POLICY_URL`,
    `ORG_PRIVACY_POLICY_TEXT` (or
    `ORG_PRIVACY_POLICY_FILE`), `ORG_LOGO_URL`, `ORG_BRAND_COLOUR`. See docs/campaign.md."""

    model_config = SettingsConfigDict(env_prefix="ORG_", extra="ignore", frozen=True)

    name: str = DEMO_NAME
    # The From display name; the organisation's name when unset.
    sender_name: str | None = None
    # `.example` is reserved (RFC 2606): demo mail can never reach a real domain's owner.
    sender_address: str = "no-reply@campaign.example"
    reply_to: str | None = None
    # Where the organisation's own notifications go (a petition reached a milestone); the
    # demo's lands in the local sink. Set it empty to send none.
    notify_address: str | None = "organisers@campaign.example"
    postal_address: str = DEMO_POSTAL_ADDRESS
    # The campaign's own privacy policy, if it has one on its site; otherwise signing serves
    # the notice at /privacy, from `privacy_policy_text` or a default template.
    privacy_policy_url: str | None = None
    privacy_policy_text: str | None = None
    privacy_policy_file: Path | None = None
    # Shown in page headers and as the link-preview image; absolute (https://...) or a
    # path on the signing service (/static/...).
    logo_url: str | None = None
    brand_colour: str = "#00703c"

    @field_validator("name", "sender_name", "postal_address")
    @classmethod
    def _one_line(cls, value: str | None) -> str | None:
        if value is None:
            return None
        # Addresses are often written over lines; in a footer or header they are one line.
        value = ", ".join(part.strip() for part in value.splitlines() if part.strip())
        if _CONTROL.search(value) or not value.strip():
            raise ValueError("must be non-empty text without control characters")
        return value.strip()

    @field_validator("sender_address", "reply_to", "notify_address")
    @classmethod
    def _mailbox(cls, value: str | None, info: ValidationInfo) -> str | None:
        if info.field_name != "sender_address" and (value is None or value.strip() == ""):
            return None  # no Reply-To (replies go to the sender), no notifications
        if value is None or not _MAILBOX.fullmatch(value.strip()):
            raise ValueError("must be one plain email address, like campaign@example.org")
        return value.strip()

    @field_validator("privacy_policy_url", "logo_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None or value.strip() == "":
            return None
        value = value.strip()
        if _CONTROL.search(value) or not (
            value.startswith(("https://", "http://")) or value.startswith("/")
        ):
            raise ValueError("must be an http(s):// address or a path starting with /")
        return value

    @field_validator("brand_colour")
    @classmethod
    def _colour(cls, value: str) -> str:
        # Written into a stylesheet unescaped: only a hex colour may pass.
        if not _COLOUR.fullmatch(value.strip()):
            raise ValueError("must be a hex colour such as #00703c")
        return value.strip().lower()

    @model_validator(mode="after")
    def _read_privacy_file(self) -> Self:
        if self.privacy_policy_file is not None and not self.privacy_policy_text:
            text = self.privacy_policy_file.read_text(encoding="utf-8")
            object.__setattr__(self, "privacy_policy_text", text)
        return self

    @property
    def is_demo(self) -> bool:
        """Still the demo identity: pages and emails say so."""
        return self.name == DEMO_NAME or self.postal_address == DEMO_POSTAL_ADDRESS

    @property
    def from_name(self) -> str:
        return self.sender_name or self.name

    def mail_from(self) -> str:
        """The From header value: `Sender Name <address>` (quoted as RFC 5322 needs)."""
        return formataddr((self.from_name, self.sender_address))

    def privacy_url(self, public_base_url: str) -> str:
        """Where every page and email links for the privacy notice."""
        if self.privacy_policy_url:
            return self.absolute(self.privacy_policy_url, public_base_url)
        return f"{public_base_url.rstrip('/')}/privacy"

    def logo(self, public_base_url: str) -> str | None:
        return self.absolute(self.logo_url, public_base_url) if self.logo_url else None

    @staticmethod
    def absolute(url: str, public_base_url: str) -> str:
        return f"{public_base_url.rstrip('/')}{url}" if url.startswith("/") else url

    def privacy_paragraphs(self) -> list[str]:
        """The campaign's own notice text, as paragraphs (blank lines separate them)."""
        text = (self.privacy_policy_text or "").replace("\r\n", "\n")
        return [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
