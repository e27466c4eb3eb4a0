"""The pure parts of the pipelined path: what is written, and which reply fails a message."""

from __future__ import annotations

import random

import aiosmtplib
import pytest
from aiosmtplib.protocol import PERIOD_REGEX, normalize_message_line_endings
from aiosmtplib.response import SMTPResponse
from groundswell_mailer.adapters.smtp import classify
from groundswell_mailer.adapters.smtp_pipelining import data_payload, envelope_commands, refusal
from groundswell_mailer.domain.delivery import SmtpStage
from groundswell_mailer.domain.messages import ComposedEmail
from groundswell_mailer.domain.mime import MessageWriter

OK = SMTPResponse(250, "OK")


def test_envelope_is_mail_rcpt_and_data_in_one_buffer() -> None:
    written = envelope_commands(
        "Groundswell <no-reply@groundswell.test>", "a@example.test", ["SIZE=42"], "ascii"
    )
    assert written == (
        b"MAIL FROM:<no-reply@groundswell.test> SIZE=42\r\nRCPT TO:<a@example.test>\r\nDATA\r\n"
    )


def test_envelope_encodes_addresses_as_asked() -> None:
    written = envelope_commands("n@g.test", "zoë@example.test", ["SMTPUTF8"], "utf-8")
    assert b"RCPT TO:<zo\xc3\xab@example.test>\r\n" in written
    with pytest.raises(UnicodeEncodeError):
        envelope_commands("n@g.test", "zoë@example.test", [], "ascii")


def test_envelope_refuses_control_characters_as_aiosmtplib_does() -> None:
    with pytest.raises(ValueError, match="prohibited control character"):
        envelope_commands("n@g.test", "a@example.test", ["SIZE=1\r\nRSET"], "ascii")


def test_payload_is_dot_stuffed_crlf_and_terminated() -> None:
    assert data_payload(b".a\n..b\rc\r\n.\r\nd") == b"..a\r\n...b\r\nc\r\n..\r\nd\r\n.\r\n"


def _as_aiosmtplib_sends(message: bytes) -> bytes:
    return PERIOD_REGEX.sub(b"..", normalize_message_line_endings(message)) + b".\r\n"


@pytest.mark.parametrize(
    "message",
    [
        b"",
        b".",
        b"a\r\n",
        b".a\r\n.\r\n..b\r\n",  # CRLF-clean: the replace path, dots at line starts
        b"a\r\n.\r\n.",  # clean but not ending in CRLF
        b"a\r\nb\n.c\r\n",  # one lone LF
        b"a\r.b\r\n",  # one lone CR
        b"a\n\r.b\r\n",  # LF then CR: as many of each as CRLFs, yet not clean
        b"\r\n\r\n.\r\n\r\n",
    ],
)
def test_payload_is_what_aiosmtplib_would_send(message: bytes) -> None:
    assert data_payload(message) == _as_aiosmtplib_sends(message)


def test_payload_of_random_bytes_is_what_aiosmtplib_would_send() -> None:
    pieces = [b"a", b".", b"\r", b"\n", b"\r\n", b"..", b"\n.", b"\r\n."]
    rng = random.Random(7)  # fixed: a failure can be reproduced
    for _ in range(20_000):
        message = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 10)))
        assert data_payload(message) == _as_aiosmtplib_sends(message), message


def test_a_written_message_with_a_dot_after_a_soft_break_is_stuffed() -> None:
    # Quoted-printable breaks long lines anywhere, so a URL's "." can start a line.
    line = "x" * 75 + ".html"  # 75 characters, "=", then the rest on the next line
    composed = ComposedEmail(subject="Hi", text=f"{line}\n", html=f"<p>{line}</p>", headers=())
    message = MessageWriter("G <n@g.test>").write(
        composed, recipient="a@example.test", message_id="<m@g.test>"
    )
    assert b"\r\n." in message
    assert data_payload(message) == _as_aiosmtplib_sends(message)


@pytest.mark.parametrize(
    ("mail", "rcpt", "stage", "code"),
    [
        (SMTPResponse(451, "busy"), SMTPResponse(503, "need MAIL"), SmtpStage.SENDER, 451),
        (SMTPResponse(550, "no"), OK, SmtpStage.SENDER, 550),
        (OK, SMTPResponse(550, "unknown user"), SmtpStage.RECIPIENT, 550),
        (OK, SMTPResponse(452, "full"), SmtpStage.RECIPIENT, 452),
    ],
)
def test_the_earliest_failing_reply_decides(
    mail: SMTPResponse, rcpt: SMTPResponse, stage: SmtpStage, code: int
) -> None:
    failure = refusal("n@g.test", "a@example.test", mail, rcpt)
    assert isinstance(failure, aiosmtplib.SMTPResponseException)
    classified = classify(failure)
    assert (classified.stage, classified.code) == (stage, code)


def test_accepted_and_forwarded_recipients_pass() -> None:
    assert refusal("n@g.test", "a@example.test", OK, OK) is None
    assert refusal("n@g.test", "a@example.test", OK, SMTPResponse(251, "will forward")) is None
    assert refusal("n@g.test", "a@example.test", OK, None) is None
