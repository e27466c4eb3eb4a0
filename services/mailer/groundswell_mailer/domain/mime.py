"""A composed email as the bytes of an RFC 5322 / MIME message, written directly.

Building a stdlib `EmailMessage` tree and serialising it was a quarter of the mailer's
CPU per email; the shape of our messages is fixed, so they are written as bytes:

    From, To, Subject, Date, Message-ID, MIME-Version, Auto-Submitted,
    [List-Unsubscribe, List-Unsubscribe-Post,] Content-Type: multipart/alternative
      text/plain; charset="utf-8"   quoted-printable
      text/html; charset="utf-8"    quoted-printable

Why it is safe: every header value is either ours (From, Message-ID, Date, the
unsubscribe URL: checked to be one printable ASCII line) or the recipient, which must
be exactly one mailbox (no spaces, brackets, commas or control characters), or the
subject, which is written as RFC 2047 encoded words whenever it is not short printable
ASCII (so no line break can come through). The bodies are quoted-printable, so no line
exceeds 76 characters and no `=` appears unencoded; the boundary starts with `=_`,
which quoted-printable output can never contain.
"""

from __future__ import annotations

import re
import secrets
import time
from base64 import b64encode
from binascii import b2a_qp
from email.utils import formatdate, getaddresses
from functools import lru_cache

from groundswell_mailer.domain.messages import ComposedEmail

# One mailbox, nothing else: no whitespace, brackets, quotes, commas, semicolons,
# colons, backslashes or control characters, exactly one "@" with something each side.
_MAILBOX = re.compile(r"[^\s@<>()\[\]\\,;:\"\x00-\x1f\x7f]+@[^\s@<>()\[\]\\,;:\"\x00-\x1f\x7f]+")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")
# Lines should stay within 78 characters: 39 bytes of UTF-8 make a 64-character word,
# which fits after "Subject: ".
_WORD_BYTES = 39
_SHORT_HEADER = 69  # "Subject: " + 69 characters = 78


def check_mailbox(address: str) -> str:
    """The address itself, or ValueError when it is not exactly one plain mailbox."""
    if not _MAILBOX.fullmatch(address):
        raise ValueError("not a single mailbox")
    return address


def _header_line(value: str) -> str:
    """One of our own header values, refused unless it is one printable ASCII line."""
    if not _PRINTABLE_ASCII.fullmatch(value):
        raise ValueError("header value must be printable ASCII on one line")
    return value


@lru_cache(maxsize=4096)  # subjects repeat: one per petition and kind
def encode_text_header(value: str) -> str:
    """Free text (the subject) as a header value: plain when short printable ASCII,
    otherwise RFC 2047 base64 encoded words, folded one per line."""
    if len(value) <= _SHORT_HEADER and _PRINTABLE_ASCII.fullmatch(value):
        return value
    words: list[str] = []
    chunk = bytearray()
    for char in value:
        encoded = char.encode("utf-8", "replace")
        if len(chunk) + len(encoded) > _WORD_BYTES:
            words.append(f"=?utf-8?b?{b64encode(chunk).decode()}?=")
            chunk.clear()
        chunk.extend(encoded)
    if chunk or not words:
        words.append(f"=?utf-8?b?{b64encode(chunk).decode()}?=")
    return "\r\n ".join(words)


def quoted_printable(text: str) -> bytes:
    """A body part, UTF-8 then quoted-printable, with CRLF line ends."""
    encoded = b2a_qp(text.encode("utf-8"), quotetabs=False, istext=True, header=False)
    return encoded.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


class MessageWriter:
    """Writes messages from one sender address; what depends only on it is done once."""

    def __init__(self, mail_from: str) -> None:
        addresses = getaddresses([mail_from])
        address = addresses[0][1] if addresses else ""
        if "@" not in address:
            raise ValueError("the sender must contain an address")
        self.envelope_from = address
        self._from_header = f"From: {_from_value(mail_from)}\r\n".encode()
        self._date_second = -1
        self._date = ""

    def _date_header(self) -> str:
        # Formatting the date costs more than the rest of the headers; once a second.
        now = int(time.time())
        if now != self._date_second:
            self._date_second, self._date = now, formatdate(now, usegmt=True)
        return self._date

    def write(self, composed: ComposedEmail, *, recipient: str, message_id: str) -> bytes:
        """The message as sent. ValueError when the recipient is not one plain mailbox."""
        check_mailbox(recipient)
        boundary = f"=_gs_{secrets.token_hex(8)}"
        lines = [
            f"To: <{recipient}>",
            f"Subject: {encode_text_header(composed.subject)}",
            f"Date: {self._date_header()}",
            f"Message-ID: {_header_line(message_id)}",
            "MIME-Version: 1.0",
            "Auto-Submitted: auto-generated",
        ]
        lines.extend(f"{name}: {_header_line(value)}" for name, value in composed.headers)
        lines.append(f'Content-Type: multipart/alternative; boundary="{boundary}"')
        head = "\r\n".join(lines).encode("utf-8")
        delimiter = f"\r\n--{boundary}\r\n".encode()
        return b"".join(
            (
                self._from_header,
                head,
                b"\r\n\r\nThis is a multipart message in MIME format.\r\n",
                delimiter,
                b'Content-Type: text/plain; charset="utf-8"\r\n'
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                quoted_printable(composed.text),
                delimiter,
                b'Content-Type: text/html; charset="utf-8"\r\n'
                b"Content-Transfer-Encoding: quoted-printable\r\n\r\n",
                quoted_printable(composed.html),
                f"\r\n--{boundary}--\r\n".encode(),
            )
        )


def _from_value(mail_from: str) -> str:
    """The configured From as a header value (done once, so the stdlib's folding is fine)."""
    from email.message import EmailMessage
    from email.policy import SMTP

    message = EmailMessage(policy=SMTP)
    message["From"] = mail_from
    folded = str(SMTP.fold("From", message["From"]))
    return folded.partition(":")[2].strip()


def utf8_mailbox(recipient: str) -> bool:
    """A non-ASCII address needs the server's SMTPUTF8 (RFC 6531)."""
    return not recipient.isascii()
