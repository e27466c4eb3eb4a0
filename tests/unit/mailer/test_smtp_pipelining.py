"""The pure parts of the pipelined path: what is written, and which reply fails a message."""

from __future__ import annotations

import aiosmtplib
import pytest
from aiosmtplib.response import SMTPResponse
from groundswell_mailer.adapters.smtp import classify
from groundswell_mailer.adapters.smtp_pipelining import data_payload, envelope_commands, refusal
from groundswell_mailer.domain.delivery import SmtpStage

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
