"""PIPELINING (RFC 2920) on aiosmtplib's own connection: MAIL, RCPT and DATA in one write.

Without it every message costs four writes and four round trips (MAIL, RCPT, DATA, then
the message), and under load the mailer spent ~27% of its CPU in SMTP, ~19% in
`SMTPProtocol.write` alone. aiosmtplib (5.x) does not implement PIPELINING, and its
protocol cannot simply be handed three commands and asked three times for a reply: it
parses one reply per `data_received` call into a one-shot future and *drops* whatever
arrives while that future is resolved but not yet picked up, so the second and third
replies of a pipelined group would be lost or left unparsed in its buffer. Writing our
own SMTP client for that would be far more code than this; this module instead borrows
the connection aiosmtplib already set up (greeting, EHLO, STARTTLS, AUTH) for one
transaction and relies on these internals of `aiosmtplib.protocol.SMTPProtocol`:

- `_command_lock`, held for the whole exchange, as aiosmtplib's own commands hold it;
- `write(bytes)`, the raw transport write its commands use;
- `_response_waiter`, `_response_pending`, `_buffer`, `_read_response_from_buffer()`:
  while the exchange runs, `_response_waiter` is a `_ReplyQueue` instead of a future.
  It never reports itself done, so `data_received` keeps every byte, and each time a
  reply is parsed it drains any further complete replies already in `_buffer`. A lost
  connection or EOF reaches it through the same `set_exception` the protocol calls on
  its future. Afterwards a fresh future is put back, exactly as `read_response` does.

The message is dot-stuffed and CRLF-normalised as `SMTP.data` does: with aiosmtplib's
own helpers, or by a plain `replace` when the message is proven CRLF-clean (see
`data_payload`). `usable()` checks that these internals exist, so a future aiosmtplib
that changes them gets the plain path (smtp.py), never a half-working one; the
integration tests (tests/integration/mailer/test_smtp_pipelining.py) run both paths
against real servers.

Error semantics are those of the plain path, which smtp.py turns into the same
failures: every reply of the group is read before deciding (RFC 2920 section 3.1), the
earliest failing command decides (MAIL -> SMTPSenderRefused, RCPT ->
SMTPRecipientRefused, DATA -> SMTPDataError, the final reply -> SMTPDataError); if DATA
was answered 354 although MAIL or RCPT failed, the data is ended with a lone "." at once
and the message still fails; a 421 to MAIL or RCPT closes the connection, as aiosmtplib's
`execute_command` does; a lost connection or a read timeout closes it too and is raised,
unless an earlier reply already failed the message. The caller sends RSET after a
refused message, as on the plain path. The one case that differs from the plain path is
a malformed reply line: the plain path tries RSET on a session it cannot parse, here the
connection is closed (the failure reported is the same).
"""

from __future__ import annotations

import asyncio
import collections
import functools
from typing import cast

import aiosmtplib
from aiosmtplib.email import quote_address
from aiosmtplib.protocol import (
    COMMAND_INJECTION_REGEX,
    PERIOD_REGEX,
    SMTPProtocol,
    normalize_message_line_endings,
)
from aiosmtplib.response import SMTPResponse
from aiosmtplib.typing import SMTPStatus

_INTERNALS = ("_command_lock", "_response_waiter", "_response_pending", "_buffer")


class LostBeforeMailReply(aiosmtplib.SMTPServerDisconnected):
    """The connection was gone before the server answered MAIL: nothing of this message
    was accepted (smtp.py retries it at once on a fresh connection if this one was reused,
    and otherwise reports `lost`, the error the plain path would have raised)."""

    def __init__(self, lost: aiosmtplib.SMTPServerDisconnected | ConnectionError) -> None:
        super().__init__(str(lost))
        self.lost = lost


def usable(client: aiosmtplib.SMTP) -> bool:
    """The server offers PIPELINING and the protocol has the internals used here."""
    protocol = client.protocol
    return (
        client.supports_extension("pipelining")
        and protocol is not None
        and all(hasattr(protocol, name) for name in _INTERNALS)
        and callable(getattr(protocol, "_read_response_from_buffer", None))
    )


def envelope_commands(sender: str, recipient: str, options: list[str], encoding: str) -> bytes:
    """MAIL FROM, RCPT TO and DATA as one write, checked as aiosmtplib checks a command."""
    mail = [b"MAIL", b"FROM:" + _quoted_sender(sender, encoding)]
    mail += [option.encode("ascii") for option in options]
    rcpt = [b"RCPT", b"TO:" + quote_address(recipient).encode(encoding)]
    for arg in (*mail, *rcpt):
        if COMMAND_INJECTION_REGEX.search(arg):
            raise ValueError("Command arg contains a prohibited control character")
    return b" ".join(mail) + b"\r\n" + b" ".join(rcpt) + b"\r\nDATA\r\n"


@functools.lru_cache(maxsize=8)
def _quoted_sender(sender: str, encoding: str) -> bytes:
    # Always our own address: parsed once, not per email (~10 us each). Recipients are
    # not cached, so no address of a person stays in memory.
    return quote_address(sender).encode(encoding)


def data_payload(message: bytes) -> bytes:
    """The message as `SMTPProtocol.execute_data_command` sends it after the 354.

    aiosmtplib's two regex passes (CRLF normalisation, dot-stuffing) were ~7% of the
    mailer's CPU under load. The messages we write (domain/mime.py) already end every
    line with CRLF: when three counts (each one pass in C) prove that, normalising would
    change nothing, and in such a message a line starts only at the beginning or after
    an LF, so dot-stuffing is a plain `replace`. Any other message takes aiosmtplib's
    own path; the bytes sent are the same either way (unit-tested against it).
    """
    crlf = message.count(b"\r\n")
    if message.endswith(b"\r\n") and message.count(b"\n") == message.count(b"\r") == crlf:
        lead = b"." if message.startswith(b".") else b""
        return lead + message.replace(b"\n.", b"\n..") + b".\r\n"
    message = normalize_message_line_endings(message)
    return PERIOD_REGEX.sub(b"..", message) + b".\r\n"


def refusal(
    sender: str, recipient: str, mail: SMTPResponse, rcpt: SMTPResponse | None
) -> aiosmtplib.SMTPResponseException | None:
    """The failure the plain path would raise for these envelope replies, if any."""
    if mail.code != SMTPStatus.completed:
        return aiosmtplib.SMTPSenderRefused(mail.code, mail.message, sender)
    if rcpt is not None and rcpt.code not in (SMTPStatus.completed, SMTPStatus.will_forward):
        return aiosmtplib.SMTPRecipientRefused(rcpt.code, rcpt.message, recipient)
    return None


class _ReplyQueue:
    """Takes the place of `SMTPProtocol._response_waiter` during a pipelined exchange.

    The protocol calls `done()`, `set_result()`, `set_exception()` and `exception()` on
    its waiter; this object answers them so that no reply is dropped or left unparsed.
    """

    def __init__(self, protocol: SMTPProtocol, timeout: float | None) -> None:
        self._protocol = protocol
        self._timeout = timeout  # for each reply, as aiosmtplib waits for each
        self._replies: collections.deque[SMTPResponse] = collections.deque()
        self._error: BaseException | None = None
        self._wakeup: asyncio.Future[None] | None = None

    def done(self) -> bool:
        # Never "done" while the connection lives: data_received keeps every byte.
        return self._error is not None

    def set_result(self, response: SMTPResponse) -> None:
        self._replies.append(response)
        self._drain()
        self._wake()

    def set_exception(self, exc: BaseException) -> None:
        if self._error is None:
            self._error = exc
        self._wake()

    def exception(self) -> BaseException | None:
        return self._error

    def _drain(self) -> None:
        # data_received parses one reply per call; the others of a group that came in
        # the same segment wait in the buffer.
        try:
            while (reply := self._protocol._read_response_from_buffer()) is not None:
                self._replies.append(reply)
        except Exception as exc:  # a malformed reply, as the protocol would report it
            self.set_exception(exc)

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    async def next(self) -> SMTPResponse:
        """The next reply in order; replies that arrived before an error come first."""
        while not self._replies:
            if self._error is not None:
                raise self._error
            self._wakeup = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(self._timeout):
                    await self._wakeup
            except TimeoutError as exc:
                raise aiosmtplib.SMTPReadTimeoutError(
                    "Timed out waiting for server response"
                ) from exc
            finally:
                self._wakeup = None
        return self._replies.popleft()


async def send_pipelined(
    client: aiosmtplib.SMTP,
    sender: str,
    recipient: str,
    message: bytes,
    *,
    options: list[str],
    encoding: str,
) -> None:
    """One message over `client` with MAIL, RCPT and DATA pipelined (see module doc).

    Raises what the plain path would (SMTPSenderRefused, SMTPRecipientRefused,
    SMTPDataError, SMTPServerDisconnected, SMTPReadTimeoutError, ValueError), or
    LostBeforeMailReply when the connection was found lost before MAIL was answered.
    """
    commands = envelope_commands(sender, recipient, options, encoding)
    payload = data_payload(message)
    protocol = client.protocol
    lock = protocol._command_lock if protocol is not None else None
    if protocol is None or lock is None:
        raise LostBeforeMailReply(aiosmtplib.SMTPServerDisconnected("Server not connected"))
    try:
        async with lock:
            await _exchange(client, protocol, sender, recipient, commands, payload)
    except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
        client.close()  # as aiosmtplib does: a desynced session is never reused
        raise


async def _exchange(
    client: aiosmtplib.SMTP,
    protocol: SMTPProtocol,
    sender: str,
    recipient: str,
    commands: bytes,
    payload: bytes,
) -> None:
    replies = _ReplyQueue(protocol, client.timeout)
    protocol._response_waiter = cast("asyncio.Future[SMTPResponse]", replies)
    protocol._response_pending = True
    try:
        try:
            protocol.write(commands)
            mail = await replies.next()
        except (aiosmtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise LostBeforeMailReply(exc) from exc
        failure = refusal(sender, recipient, mail, None)
        if mail.code == SMTPStatus.domain_unavailable:
            client.close()  # the server is going away: as aiosmtplib's execute_command
            raise cast(aiosmtplib.SMTPResponseException, failure)
        try:
            rcpt = await replies.next()
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            if failure is not None:
                client.close()
                raise failure from None
            raise
        failure = refusal(sender, recipient, mail, rcpt)
        if rcpt.code == SMTPStatus.domain_unavailable:
            client.close()
            raise cast(aiosmtplib.SMTPResponseException, failure)
        try:
            data = await replies.next()
        except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
            if failure is not None:
                client.close()
                raise failure from None
            raise
        if failure is not None:
            if data.code == SMTPStatus.start_input:
                # The server opened the data although the envelope failed: end it empty
                # so the session can go on, and the message still fails.
                try:
                    protocol.write(b".\r\n")
                    await replies.next()
                except (aiosmtplib.SMTPServerDisconnected, aiosmtplib.SMTPTimeoutError):
                    client.close()
            raise failure
        if data.code != SMTPStatus.start_input:
            raise aiosmtplib.SMTPDataError(data.code, data.message)
        protocol.write(payload)
        final = await replies.next()
        if final.code != SMTPStatus.completed:
            raise aiosmtplib.SMTPDataError(final.code, final.message)
    except aiosmtplib.SMTPResponseException as exc:
        if exc.code == SMTPStatus.invalid_response:
            client.close()  # a reply we could not parse: the session is out of step
        raise
    finally:
        _restore(client, protocol)


def _restore(client: aiosmtplib.SMTP, protocol: SMTPProtocol) -> None:
    """Give the protocol back a one-shot future, as `read_response` leaves it."""
    protocol._response_pending = False
    if protocol.transport is None:
        protocol._response_waiter = None
        return
    protocol._response_waiter = asyncio.get_running_loop().create_future()
    if protocol._buffer:
        # Bytes beyond the replies we expected: the server is out of step with us.
        client.close()
