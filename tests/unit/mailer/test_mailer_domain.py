"""The mailer's rules, without I/O: recipients, delivery decisions, message content."""

from __future__ import annotations

import aiosmtplib
import pytest
from groundswell_mailer.adapters.smtp import build_message, classify, sender_domain
from groundswell_mailer.domain.delivery import (
    GiveUp,
    RetryLater,
    SmtpFailure,
    SmtpStage,
    after_failure,
    is_permanent,
    redact_addresses,
    retry_delay,
    should_suppress,
)
from groundswell_mailer.domain.messages import EmailContent, Links, compose, share_options
from groundswell_mailer.domain.recipients import canonical_address, first_name

LINKS = Links("https://sign.example/", "https://share.example", "https://mail.example")
CONTENT = EmailContent(
    first_name="Zoë",
    petition_title="Save the <Park> & pond",
    petition_slug="save-the-park",
    share_code="abc123",
    withdraw_token="wd/1",
    confirmation_token="ct+1",
)


# --- recipients --------------------------------------------------------------


def test_canonical_address_folds_case_and_whitespace() -> None:
    assert canonical_address("  Ann.Lee@Example.COM ") == "ann.lee@example.com"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("Zoë O'Brien", "Zoë"),
        ("  Ann\r\nBcc: x@evil.test", "Ann"),
        ("\x00\x07", ""),
        ("", ""),
        ("A" * 100, "A" * 40),
    ],
)
def test_first_name_keeps_one_clean_word(name: str, expected: str) -> None:
    assert first_name(name) == expected


# --- delivery decisions ------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "stage", "permanent"),
    [
        (550, SmtpStage.RECIPIENT, True),
        (554, SmtpStage.DATA, True),
        (553, SmtpStage.SENDER, True),
        (451, SmtpStage.RECIPIENT, False),
        (421, SmtpStage.CONNECT, False),
        (535, SmtpStage.AUTH, False),  # our credentials: an operator can fix it
        (554, SmtpStage.CONNECT, False),
        (None, SmtpStage.TRANSPORT, False),
    ],
)
def test_only_5xx_about_the_message_is_permanent(
    code: int | None, stage: SmtpStage, permanent: bool
) -> None:
    assert is_permanent(code, stage) is permanent


def test_permanent_failure_gives_up_at_once() -> None:
    failure = SmtpFailure(550, SmtpStage.RECIPIENT, "no such user")
    decision = after_failure(failure, 1, max_attempts=5, base_seconds=30, max_seconds=3600)
    assert decision == GiveUp(permanent=True)


def test_temporary_failure_backs_off_exponentially_then_gives_up() -> None:
    failure = SmtpFailure(451, SmtpStage.RECIPIENT, "busy")
    delays = [
        after_failure(failure, n, max_attempts=4, base_seconds=30, max_seconds=3600)
        for n in (1, 2, 3)
    ]
    assert delays == [RetryLater(30.0), RetryLater(60.0), RetryLater(120.0)]
    last = after_failure(failure, 4, max_attempts=4, base_seconds=30, max_seconds=3600)
    assert last == GiveUp(permanent=False)


def test_retry_delay_is_capped_and_jitter_only_lengthens_it() -> None:
    assert retry_delay(20, 30, 3600) == 3600
    assert retry_delay(1, 30, 3600, jitter=0.0) == 30
    assert 30 < retry_delay(1, 30, 3600, jitter=0.99) < 30 * 1.25


def test_unsubscribe_suppresses_everything_but_confirmations() -> None:
    assert should_suppress("thank_you", unsubscribed=True)
    assert should_suppress("already_signed", unsubscribed=True)
    assert not should_suppress("confirmation", unsubscribed=True)
    assert not should_suppress("thank_you", unsubscribed=False)


def test_errors_leaving_the_service_carry_no_address() -> None:
    text = "550 5.1.1 <bob.smith+x@mail.example.org>: unknown; cc ann@b.c"
    assert redact_addresses(text) == "550 5.1.1 <[address]>: unknown; cc [address]"
    failure = SmtpFailure(550, SmtpStage.RECIPIENT, "<bob@example.org> " + "x" * 500)
    described = failure.describe()
    assert described.startswith("550 recipient: <[address]>")
    assert len(described) == 300


# --- SMTP errors -> failures -------------------------------------------------


def test_classify_maps_aiosmtplib_errors() -> None:
    refused = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(550, "no such user", "a@b.c")]
    )
    assert classify(refused).permanent
    deferred = aiosmtplib.SMTPRecipientsRefused(
        [aiosmtplib.SMTPRecipientRefused(450, "greylisted", "a@b.c")]
    )
    assert not classify(deferred).permanent
    assert classify(aiosmtplib.SMTPDataError(552, "too big")).permanent
    assert classify(aiosmtplib.SMTPSenderRefused(553, "no", "x@y.z")).stage == SmtpStage.SENDER
    assert not classify(aiosmtplib.SMTPAuthenticationError(535, "bad creds")).permanent
    assert not classify(aiosmtplib.SMTPConnectError("refused")).permanent
    assert not classify(aiosmtplib.SMTPServerDisconnected("gone")).permanent
    assert classify(aiosmtplib.SMTPReadTimeoutError("slow")).detail == "timeout"
    assert not classify(ConnectionRefusedError()).permanent


# --- message content ---------------------------------------------------------


def test_confirmation_links_to_the_button_page_and_has_no_unsubscribe() -> None:
    email = compose("confirmation", CONTENT, LINKS, None)
    assert email.subject == "Please confirm your signature on “Save the <Park> & pond”"
    # Tokens are path-quoted; the base URL's trailing slash is not doubled.
    assert "https://sign.example/confirm/ct%2B1" in email.text
    assert "https://sign.example/confirm/ct%2B1" in email.html
    assert "button" in email.text
    assert email.headers == ()
    assert "unsubscribe" not in email.text.lower()


def test_thank_you_carries_share_withdraw_and_unsubscribe_links() -> None:
    email = compose("thank_you", CONTENT, LINKS, "tok_123")
    assert email.subject == "Thank you for signing “Save the <Park> & pond”"
    assert dict(email.headers) == {
        "List-Unsubscribe": "<https://mail.example/unsubscribe/tok_123>",
        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
    }
    for body in (email.text, email.html):
        assert "https://share.example/s/abc123" in body
        assert "https://sign.example/withdraw/wd%2F1" in body
        assert "https://mail.example/unsubscribe/tok_123" in body
    assert "Save the &lt;Park&gt; &amp; pond" in email.html
    assert "<Park>" not in email.html
    assert "ct+1" not in email.text + email.html


def test_names_are_escaped_in_html() -> None:
    hostile = EmailContent("<img src=x onerror=alert(1)>", "T", "t", "c")
    email = compose("already_signed", hostile, LINKS, "tok")
    assert "<img" not in email.html
    assert "&lt;img src=x onerror=alert(1)&gt;" in email.html


def test_share_options_name_each_channel() -> None:
    options = share_options(LINKS, "abc123", "Title")
    assert options.link == "https://share.example/s/abc123"
    assert "https%3A%2F%2Fshare.example%2Fs%2Fabc123%3Fc%3Dwhatsapp" in options.whatsapp
    assert options.facebook.endswith("u=https%3A%2F%2Fshare.example%2Fs%2Fabc123%3Fc%3Dfacebook")
    assert "url=https%3A%2F%2Fshare.example%2Fs%2Fabc123%3Fc%3Dx" in options.x
    assert options.email.startswith("mailto:?subject=Title&body=")


def test_emails_that_cannot_be_rendered_are_refused() -> None:
    with pytest.raises(ValueError, match="unsubscribe token"):
        compose("thank_you", CONTENT, LINKS, None)
    no_token = EmailContent("A", "T", "t", "c")
    with pytest.raises(ValueError, match="confirmation token"):
        compose("confirmation", no_token, LINKS, None)


def test_content_round_trips_through_json() -> None:
    assert EmailContent.from_json(CONTENT.to_json()) == CONTENT


def test_built_message_is_multipart_with_its_headers() -> None:
    composed = compose("thank_you", CONTENT, LINKS, "tok_123")
    message = build_message(
        composed,
        mail_from="Groundswell <hi@gs.example>",
        recipient="ann@example.com",
        message_id="<1@gs.example>",
    )
    assert message.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in message.iter_parts()] == ["text/plain", "text/html"]
    assert message["Message-ID"] == "<1@gs.example>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert sender_domain("Groundswell <hi@gs.example>") == "gs.example"


def test_an_address_cannot_smuggle_headers() -> None:
    composed = compose("confirmation", CONTENT, LINKS, None)
    with pytest.raises(ValueError):
        build_message(
            composed,
            mail_from="a@b.c",
            recipient="ann@example.com\r\nBcc: x@evil.test",
            message_id="<1@b.c>",
        )


@pytest.mark.parametrize("address", ["noatsign", "a@b@c", "", "a b@c.d"])
def test_unusable_addresses_raise_what_the_sender_treats_as_unsendable(address: str) -> None:
    from email.errors import MessageError

    composed = compose("confirmation", CONTENT, LINKS, None)
    with pytest.raises((ValueError, IndexError, MessageError)):
        build_message(composed, mail_from="a@b.c", recipient=address, message_id="<1@b.c>")
