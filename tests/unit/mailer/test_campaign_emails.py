"""Emails speak for the campaign: From, Reply-To, footer, and the confirmation's expiry."""

from __future__ import annotations

from email import message_from_bytes, policy

import pytest
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.messages import Campaign, EmailContent, Links, compose, lifetime
from groundswell_mailer.domain.mime import MessageWriter
from groundswell_runtime.organisation import Organisation
from pydantic import ValidationError

LINKS = Links("https://sign.example", "https://share.example", "https://mail.example")
CONTENT = EmailContent("Zoë", "Save the park", "save-the-park", "abc123", "wd1", "ct1")
CLINICS = Organisation(
    name="Keep Our Clinics Open",
    sender_name="Priya at Keep Our Clinics Open",
    sender_address="hello@clinics.example",
    reply_to="team@clinics.example",
    postal_address="12 High Street\nLeeds LS1 1AA",
)
CAMPAIGN = Campaign(CLINICS, confirmation_ttl_hours=48)


@pytest.mark.parametrize("kind", ["confirmation", "thank_you", "already_signed"])
def test_every_email_has_the_organisation_footer(kind: str) -> None:
    email = compose(kind, CONTENT, LINKS, "tok", CAMPAIGN)  # type: ignore[arg-type]
    for body in (email.text, email.html):
        assert "Keep Our Clinics Open" in body
        assert "12 High Street, Leeds LS1 1AA" in body
        assert "https://sign.example/privacy" in body
    assert ("Reply-To", "team@clinics.example") in email.headers


def test_the_footer_links_an_external_privacy_policy() -> None:
    own = Organisation(privacy_policy_url="https://clinics.example/privacy")
    email = compose("thank_you", CONTENT, LINKS, "tok", Campaign(own, 72))
    assert "https://clinics.example/privacy" in email.text
    assert "https://sign.example/privacy" not in email.html


def test_the_confirmation_says_when_its_link_expires() -> None:
    email = compose("confirmation", CONTENT, LINKS, None, CAMPAIGN)
    assert "The link expires 2 days after you signed." in email.text
    assert "The link expires 2 days after you signed." in email.html
    # Still no unsubscribe on a confirmation: it is not a mailing.
    assert "unsubscribe" not in email.text.lower()
    assert [name for name, _ in email.headers] == ["Reply-To"]


def test_lifetimes_read_as_people_say_them() -> None:
    assert [lifetime(h) for h in (72, 24, 36, 1)] == ["3 days", "1 day", "36 hours", "1 hour"]


def test_thank_you_asks_to_share_with_friends_and_family() -> None:
    email = compose("thank_you", CONTENT, LINKS, "tok", CAMPAIGN)
    for body in (email.text, email.html):
        assert "share this link with your friends and family so they can sign too" in body
        assert "https%3A%2F%2Fshare.example%2Fs%2Fabc123%3Fc%3Dwhatsapp" in body


def test_the_sender_comes_from_the_organisation() -> None:
    settings = MailerSettings(organisation=CLINICS, SIGNING_CONFIRMATION_TTL_HOURS=24)
    assert settings.mail_from == "Priya at Keep Our Clinics Open <hello@clinics.example>"
    assert settings.campaign() == Campaign(CLINICS, 24)
    raw = MessageWriter(settings.mail_from).write(
        compose("thank_you", CONTENT, LINKS, "tok", settings.campaign()),
        recipient="ann@example.com",
        message_id="<1@clinics.example>",
    )
    message = message_from_bytes(raw, policy=policy.default)
    assert message["From"] == "Priya at Keep Our Clinics Open <hello@clinics.example>"
    assert message["Reply-To"] == "team@clinics.example"
    # MAILER_FROM still overrides the From alone.
    assert MailerSettings(MAILER_FROM="Ops <ops@x.example>").mail_from == "Ops <ops@x.example>"


def test_the_demo_identity_is_plainly_a_demo() -> None:
    demo = Organisation()
    assert demo.is_demo and demo.mail_from() == "Demo Campaign <no-reply@campaign.example>"
    assert "demo" in demo.postal_address


def test_a_name_over_lines_becomes_one_line() -> None:
    # A line break could start a new header: it never reaches one.
    assert Organisation(name="Evil\r\nBcc: x@y.z").mail_from() == (
        '"Evil, Bcc: x@y.z" <no-reply@campaign.example>'
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "Evil\x00"},
        {"name": "   "},
        {"sender_address": "a@b.c, d@e.f"},
        {"reply_to": "<a@b.c>"},
        {"brand_colour": "red; } body { display:none"},
        {"logo_url": "javascript:alert(1)"},
    ],
)
def test_an_identity_that_could_inject_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        Organisation(**fields)  # type: ignore[arg-type]
