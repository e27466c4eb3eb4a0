"""SMTP I/O: persistent connections that carry one message after another.

Each `SmtpConnection` is one SMTP session (aiosmtplib), opened on first use, reused for
every message after that and opened again when it was lost; the dispatcher runs one
per sender, so a pool of N senders is a pool of N connections. What to do about a
failure (retry, give up) is decided in domain/delivery.py, not here.

When the server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go in one write and
the message in a second (smtp_pipelining.py, which works around aiosmtplib's lack of
it); otherwise each command is its own round trip through aiosmtplib. Both paths fail
the same way for the same replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from email.utils import getaddresses, make_msgid
from functools import lru_cache

import aiosmtplib

from groundswell_mailer.adapters import smtp_pipelining
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import SmtpFailure, SmtpStage


@lru_cache(maxsize=16)  # one From per process: parsed once, not per email
def sender_domain(mail_from: str) -> str:
    addresses = getaddresses([mail_from])
    address = addresses[0][1] if addresses else ""
    return address.rpartition("@")[2] or "localhost"


def new_message_id(mail_from: str) -> str:
    return make_msgid(domain=sender_domain(mail_from))


_local_hostname: str | None = None


async def local_hostname() -> str:
    """The name this host gives in EHLO, looked up once per process.

    aiosmtplib looks it up (`socket.getfqdn`, a reverse lookup, in a thread) for every
    new client it is not given one: with a connection renewed every
    `smtp_messages_per_connection` messages, ~8 lookups a second at 800 emails/s, 1.2%
    of the mailer's CPU in a profile at 1,000 signatures/s. The name does not change
    while the process runs.
    """
    global _local_hostname
    if _local_hostname is None:
        _local_hostname = await asyncio.to_thread(socket.getfqdn)
    return _local_hostname


class _StaleConnection(Exception):
    """A reused connection turned out closed before this message's first command."""


class SmtpConnection:
    """One SMTP session reused across messages; `send` never raises for SMTP trouble."""

    def __init__(self, settings: MailerSettings) -> None:
        self._settings = settings
        self._client: aiosmtplib.SMTP | None = None
        self._carried = 0  # messages sent on the current connection

    @property
    def connected(self) -> bool:
        return self._client is not None and self._client.is_connected

    def _new_client(self, local_name: str) -> aiosmtplib.SMTP:
        settings = self._settings
        return aiosmtplib.SMTP(
            hostname=settings.smtp_host,
            port=settings.smtp_port,
            local_hostname=local_name,
            username=settings.smtp_username,
            password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
            start_tls=settings.smtp_starttls,
            use_tls=settings.smtp_use_tls,
            timeout=settings.smtp_timeout_seconds,
        )

    async def send(
        self, sender: str, recipient: str, message: bytes, *, utf8: bool = False
    ) -> SmtpFailure | None:
        """None when the server accepted the message; otherwise what went wrong.

        A reused connection the server closed while idle (timeouts, restarts) fails at
        MAIL, before anything of this message was said: the message then goes over a
        fresh connection at once, without counting as a failed attempt.
        """
        limit = self._settings.smtp_messages_per_connection
        if self._client is not None and limit and self._carried >= limit:
            await self.close()
        try:
            reused = self.connected
            client = await self._connection()
            try:
                await self._transaction(client, sender, recipient, message, utf8, reused)
            except _StaleConnection:
                self._drop()
                client = await self._connection()
                await self._transaction(client, sender, recipient, message, utf8, False)
        except Exception as exc:  # every failure is classified; none may kill the sender
            if not self.connected:
                self._drop()
            return classify(exc)
        self._carried += 1
        return None

    async def _connection(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        self._drop()
        client = self._new_client(await local_hostname())
        await client.connect()  # greeting, STARTTLS when offered or asked, AUTH
        self._client = client
        self._carried = 0
        return client

    async def _transaction(
        self,
        client: aiosmtplib.SMTP,
        sender: str,
        recipient: str,
        message: bytes,
        utf8: bool,
        reused: bool,
    ) -> None:
        encoding = "utf-8" if utf8 else "ascii"
        options: list[str] = []
        try:
            if client.is_ehlo_or_helo_needed:
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()  # a server that predates ESMTP
            if utf8:
                if not client.supports_extension("smtputf8"):
                    raise aiosmtplib.SMTPNotSupported("the server does not offer SMTPUTF8")
                options.append("SMTPUTF8")
            if client.supports_extension("size"):
                options.append(f"SIZE={len(message)}")
            pipelined = smtp_pipelining.usable(client)
            if not pipelined:
                await client.mail(sender, options=options, encoding=encoding)
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            if reused:
                raise _StaleConnection from exc
            raise
        except aiosmtplib.SMTPResponseException:
            await self._reset(client)
            raise
        if pipelined:
            try:
                await smtp_pipelining.send_pipelined(
                    client, sender, recipient, message, options=options, encoding=encoding
                )
            except smtp_pipelining.LostBeforeMailReply as exc:
                if reused:
                    raise _StaleConnection from exc
                raise exc.lost from None  # reported as the plain path reports it
            except aiosmtplib.SMTPResponseException:
                await self._reset(client)
                raise
            return
        try:
            await client.rcpt(recipient, encoding=encoding)
            await client.data(message)
        except aiosmtplib.SMTPResponseException:
            # RSET, so the next message on this connection starts a clean envelope.
            await self._reset(client)
            raise

    async def _reset(self, client: aiosmtplib.SMTP) -> None:
        if not client.is_connected:
            return
        try:
            await client.rset()
        except (aiosmtplib.SMTPException, ConnectionError):
            # A session that cannot even reset is not reused.
            self._drop()

    def _drop(self) -> None:
        if self._client is not None:
            self._client.close()
        self._client = None
        self._carried = 0

    async def close(self) -> None:
        """QUIT politely (briefly), then close."""
        client, self._client = self._client, None
        self._carried = 0
        if client is None:
            return
        if client.is_connected:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await client.quit()
        client.close()


def classify(exc: BaseException | None) -> SmtpFailure:
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
    if isinstance(exc, aiosmtplib.SMTPConnectError | ConnectionRefusedError):
        return SmtpFailure(None, SmtpStage.CONNECT, detail)
    if isinstance(exc, aiosmtplib.SMTPTimeoutError | asyncio.TimeoutError | TimeoutError):
        return SmtpFailure(None, SmtpStage.TRANSPORT, "timeout")
    return SmtpFailure(None, SmtpStage.TRANSPORT, detail)
