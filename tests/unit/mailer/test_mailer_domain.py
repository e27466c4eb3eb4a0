"""The mailer's rules, without I/O: recipients, delivery decisions, message content."""

from __future__ import annotations

import uuid
from email import message_from_bytes, policy
from email.message import EmailMessage

import aiosmtplib
import asyncpg
import pytest
from groundswell_contracts.events import SignatureConfirmed
from groundswell_mailer.adapters.smtp import classify, sender_domain
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import (
    Deferred,
    Failed,
    GiveUp,
    Lease,
    RetryLater,
    SmtpFailure,
    SmtpStage,
    after_failure,
    backoff,
    is_permanent,
    outcome_of_failure,
    redact_addresses,
    retry_delay,
    should_suppress,
    storable,
)
from groundswell_mailer.domain.messages import EmailContent, Links, compose, share_options
from groundswell_mailer.domain.mime import MessageWriter, encode_text_header, utf8_mailbox
from groundswell_mailer.domain.recipients import canonical_address, first_name
from groundswell_mailer.entrypoints.handlers import SignatureHandler
from groundswell_runtime.consumer import TRANSIENT_ERRORS, InTransaction

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


WRITER = MessageWriter("Groundswell <hi@gs.example>")


def parsed(raw: bytes) -> EmailMessage:
    message = message_from_bytes(raw, policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


def body(message: EmailMessage, subtype: str) -> str:
    part = message.get_body((subtype,))
    assert part is not None
    # The bytes travel with CRLF line ends; the stdlib keeps them in decoded parts.
    return str(part.get_content()).replace("\r\n", "\n")


def test_written_message_parses_as_multipart_alternative_with_its_headers() -> None:
    composed = compose("thank_you", CONTENT, LINKS, "tok_123")
    raw = WRITER.write(composed, recipient="ann@example.com", message_id="<1@gs.example>")
    message = parsed(raw)
    assert message.defects == []
    assert message.get_content_type() == "multipart/alternative"
    parts = list(message.iter_parts())
    assert [p.get_content_type() for p in parts] == ["text/plain", "text/html"]
    assert all(p.get_content_charset() == "utf-8" and p.defects == [] for p in parts)
    assert body(message, "plain") == composed.text
    assert body(message, "html") == composed.html
    assert message["From"] == "Groundswell <hi@gs.example>"
    assert message["To"] == "ann@example.com"
    assert message["Subject"] == composed.subject  # non-ASCII, so RFC 2047 encoded
    assert b"\xe2\x80\x9c" not in raw.split(b"\r\n\r\n")[0]  # headers are pure ASCII
    assert message["Message-ID"] == "<1@gs.example>"
    assert message["MIME-Version"] == "1.0"
    assert message["Date"].datetime is not None
    assert message["List-Unsubscribe"] == "<https://mail.example/unsubscribe/tok_123>"
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert max(len(line) for line in raw.split(b"\r\n")) <= 998
    assert b"\n" not in raw.replace(b"\r\n", b"")  # CRLF line ends only
    assert sender_domain("Groundswell <hi@gs.example>") == "gs.example"
    assert WRITER.envelope_from == "hi@gs.example"


def test_a_confirmation_has_no_list_headers_and_a_long_subject_is_folded() -> None:
    title = "Ünïcode " * 30 + "<b>&"
    content = EmailContent("Zoë", title, "s", "c", confirmation_token="ct")
    composed = compose("confirmation", content, LINKS, None)
    raw = WRITER.write(composed, recipient="ann@example.com", message_id="<2@gs.example>")
    message = parsed(raw)
    assert message["List-Unsubscribe"] is None
    assert message["Subject"] == composed.subject
    assert max(len(line) for line in raw.split(b"\r\n\r\n")[0].split(b"\r\n")) <= 78
    assert "&lt;b&gt;&amp;" in body(message, "html")


def test_an_address_cannot_smuggle_headers() -> None:
    composed = compose("confirmation", CONTENT, LINKS, None)
    with pytest.raises(ValueError):
        WRITER.write(
            composed,
            recipient="ann@example.com\r\nBcc: x@evil.test",
            message_id="<1@b.c>",
        )


def test_a_subject_cannot_smuggle_headers() -> None:
    assert "\n" not in encode_text_header("Hi\r\nBcc: x@evil.test")
    hostile = EmailContent("A", "T\r\nBcc: x@evil.test", "t", "c", confirmation_token="x")
    raw = WRITER.write(
        compose("confirmation", hostile, LINKS, None), recipient="a@b.c", message_id="<1@b.c>"
    )
    assert parsed(raw)["Bcc"] is None


@pytest.mark.parametrize("address", ["noatsign", "a@b@c", "", "a b@c.d", "<a@b.c>", "a@b.c,d@e.f"])
def test_unusable_addresses_raise_what_the_sender_treats_as_unsendable(address: str) -> None:
    composed = compose("confirmation", CONTENT, LINKS, None)
    with pytest.raises(ValueError):
        WRITER.write(composed, recipient=address, message_id="<1@b.c>")


def test_an_international_address_is_written_as_utf8() -> None:
    composed = compose("confirmation", CONTENT, LINKS, None)
    raw = WRITER.write(composed, recipient="zoë@example.com", message_id="<1@b.c>")
    assert utf8_mailbox("zoë@example.com") and not utf8_mailbox("zoe@example.com")
    assert "zoë@example.com".encode() in raw


# --- claims: the lease and the outcomes ----------------------------------------


def test_a_sender_stops_starting_conversations_well_before_its_lease_can_lapse() -> None:
    lease = Lease(10.0)
    assert not lease.may_start(0.0)  # never renewed
    lease.renewed(100.0)
    assert lease.may_start(104.9)
    assert not lease.may_start(105.0)  # half the lease: long before anyone may take over
    lease.renewed(90.0)  # a late answer to an older renewal does not move it back
    assert lease.may_start(104.9)
    with pytest.raises(ValueError):
        Lease(10.0, margin=1.0)


def test_failures_become_outcomes_by_the_same_rules() -> None:
    rules = {"max_attempts": 3, "base_seconds": 30, "max_seconds": 3600}
    refused = SmtpFailure(550, SmtpStage.RECIPIENT, "<bob@example.org> unknown")
    assert outcome_of_failure(7, refused, 1, **rules) == Failed(
        7, True, "550 recipient: <[address]> unknown"
    )
    busy = SmtpFailure(451, SmtpStage.RECIPIENT, "busy")
    assert outcome_of_failure(7, busy, 1, **rules) == Deferred(7, 30.0, "451 recipient: busy")
    assert outcome_of_failure(7, busy, 3, **rules) == Failed(7, False, "451 recipient: busy")


def test_connection_failures_are_told_from_message_failures() -> None:
    assert SmtpFailure(None, SmtpStage.CONNECT, "refused").about_connection
    assert SmtpFailure(None, SmtpStage.TRANSPORT, "timeout").about_connection
    assert SmtpFailure(535, SmtpStage.AUTH, "bad").about_connection
    assert not SmtpFailure(451, SmtpStage.RECIPIENT, "busy").about_connection
    assert not SmtpFailure(550, SmtpStage.DATA, "spam").about_connection


def test_errors_are_stored_without_control_characters() -> None:
    assert storable("bad\x00reply\udcff") == "bad reply?"
    failure = SmtpFailure(451, SmtpStage.DATA, "x\x00y")
    assert "\x00" not in failure.describe()


def test_backoff_doubles_up_to_its_cap_spread_by_a_quarter_at_most() -> None:
    for n, base in ((1, 0.2), (2, 0.4), (3, 0.8), (10, 5.0)):
        pauses = {backoff(n) for _ in range(200)}
        assert all(base <= p <= base * 1.25 for p in pauses), (n, sorted(pauses)[:3])
        assert len(pauses) > 1  # spread: loops failing together do not retry together


# --- a database that is restarting is an outage, not a bad event -------------------


class _StartingUp:
    """A pool whose server answers 57P03, as PostgreSQL does while it starts up."""

    def acquire(self) -> None:
        raise asyncpg.CannotConnectNowError("the database system is starting up")


async def test_a_database_starting_up_is_retried_by_the_consumer_not_dead_lettered() -> None:
    handler = InTransaction(_StartingUp(), handle_batch=SignatureHandler(MailerSettings()))  # type: ignore[arg-type]
    confirmed = SignatureConfirmed(petition_id=uuid.uuid4(), signature_id=uuid.uuid4())
    with pytest.raises(asyncpg.CannotConnectNowError) as caught:
        await handler(confirmed)
    # The consumer loop retries these without limit (and dead-letters other errors).
    assert isinstance(caught.value, TRANSIENT_ERRORS)


def test_item14_starttls_is_required_off_this_machine() -> None:
    assert MailerSettings(SMTP_HOST="smtp.example.org").smtp_starttls is True
    assert MailerSettings(SMTP_HOST="10.0.0.5").smtp_starttls is True
    assert MailerSettings(SMTP_HOST="127.0.0.1").smtp_starttls is None  # opportunistic
    assert MailerSettings(SMTP_HOST="localhost").smtp_starttls is None
    # An explicit choice wins (a trusted sink on a private network).
    assert MailerSettings(SMTP_HOST="mailpit", smtp_starttls=False).smtp_starttls is False
    assert MailerSettings(SMTP_HOST="smtp.example.org", smtp_use_tls=True).smtp_starttls is None
