"""Sending one message over SMTP, and telling a final failure from a passing one."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime, getaddresses, make_msgid

import aiosmtplib

from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import SmtpFailure, SmtpStage
from groundswell_mailer.domain.messages import ComposedEmail


def sender_domain(mail_from: str) -> str:
    addresses = getaddresses([mail_from])
    address = addresses[0][1] if addresses else ""
    return address.rpartition("@")[2] or "localhost"


def new_message_id(mail_from: str) -> str:
    return make_msgid(domain=sender_domain(mail_from))


def build_message(
    composed: ComposedEmail, *, mail_from: str, recipient: str, message_id: str
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = mail_from
    # Address() accepts exactly one mailbox (ValueError otherwise): nothing can be
    # smuggled into the headers through an address.
    message["To"] = Address(addr_spec=recipient)
    message["Subject"] = composed.subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = message_id
    message["Auto-Submitted"] = "auto-generated"
    for name, value in composed.headers:
        message[name] = value
    message.set_content(composed.text)
    message.add_alternative(composed.html, subtype="html")
    return message


class SmtpSender:
    def __init__(self, settings: MailerSettings) -> None:
        self._settings = settings

    async def send(self, message: EmailMessage) -> SmtpFailure | None:
        """None when the server accepted the message; otherwise what went wrong."""
        settings = self._settings
        try:
            await aiosmtplib.send(
                message,
                hostname=settings.smtp_host,
                port=settings.smtp_port,
                username=settings.smtp_username,
                password=(
                    settings.smtp_password.get_secret_value() if settings.smtp_password else None
                ),
                start_tls=settings.smtp_starttls,
                use_tls=settings.smtp_use_tls,
                timeout=settings.smtp_timeout_seconds,
            )
        except Exception as exc:  # every failure is classified; none may kill the sender
            return classify(exc)
        return None


def classify(exc: BaseException) -> SmtpFailure:
    """Map aiosmtplib's exceptions to the SMTP stage and reply code that decide retrying."""
    detail = type(exc).__name__
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        codes = [r.code for r in exc.recipients]
        # Every recipient refused; the mildest reply decides whether it may pass.
        code = min(codes) if codes else None
        messages = "; ".join(r.message for r in exc.recipients)
        return SmtpFailure(code, SmtpStage.RECIPIENT, messages or detail)
    if isinstance(exc, aiosmtplib.SMTPRecipientRefused):
        return SmtpFailure(exc.code, SmtpStage.RECIPIENT, exc.message)
    if isinstance(exc, aiosmtplib.SMTPSenderRefused):
        return SmtpFailure(exc.code, SmtpStage.SENDER, exc.message)
    if isinstance(exc, aiosmtplib.SMTPDataError):
        return SmtpFailure(exc.code, SmtpStage.DATA, exc.message)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return SmtpFailure(exc.code, SmtpStage.AUTH, exc.message)
    if isinstance(exc, aiosmtplib.SMTPHeloError):
        return SmtpFailure(exc.code, SmtpStage.HELO, exc.message)
    if isinstance(exc, aiosmtplib.SMTPConnectResponseError):
        return SmtpFailure(exc.code, SmtpStage.CONNECT, exc.message)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return SmtpFailure(exc.code, SmtpStage.TRANSPORT, exc.message)
    if isinstance(exc, aiosmtplib.SMTPConnectError | ConnectionError):
        return SmtpFailure(None, SmtpStage.CONNECT, detail)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError | TimeoutError):
        return SmtpFailure(None, SmtpStage.TRANSPORT, "timeout")
    return SmtpFailure(None, SmtpStage.TRANSPORT, detail)
