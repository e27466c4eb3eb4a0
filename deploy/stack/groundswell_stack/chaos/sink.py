"""An SMTP sink that can be told to refuse: the chaos run's mail server.

Run: `python -m groundswell_stack.chaos.sink --port P --log mail.jsonl --control rules.json`.

Instead of `.eml` files it appends one JSON line per accepted message (recipient, kind
from the subject, and the confirm/withdraw/share links it carries) to `--log`, so the
checks read tens of thousands of messages in a second and the load can follow links
the way a signer does. `--control` names a JSON file `{"rules": {address: ["451",
"451", "550"]}}`: the n-th RCPT TO for that address is answered with the n-th code
(the last one repeats); each refusal is logged too. The file is re-read when it changes.
"""

from __future__ import annotations

import argparse
import json
import re
import time
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import IO, Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from groundswell_stack.smtp_sink import serve_until_signalled

KINDS = (
    ("Please confirm", "confirmation"),
    ("Thank you for signing", "thank_you"),
    ("You have already signed", "already_signed"),
)
LINKS = {
    "confirm": re.compile(r"/confirm/([A-Za-z0-9_\-]+)"),
    "withdraw": re.compile(r"/withdraw/([A-Za-z0-9_\-]+)"),
    "share": re.compile(r"/s/([A-Za-z0-9_\-]+)"),
}
REPLIES = {
    "451": "451 4.3.0 Try again later (chaos)",
    "550": "550 5.1.1 Mailbox unavailable (chaos)",
}


def kind_of(subject: str) -> str:
    for prefix, kind in KINDS:
        if subject.startswith(prefix):
            return kind
    return "other"


def links_in(message: EmailMessage) -> dict[str, str]:
    body = message.get_body(preferencelist=("plain", "html"))
    text = body.get_content() if body is not None else ""
    found = {}
    for name, pattern in LINKS.items():
        match = pattern.search(text)
        if match:
            found[name] = match.group(1)
    return found


class ChaosSink:
    def __init__(self, log: IO[str], control: Path | None) -> None:
        self._log = log
        self._control = control
        self._control_mtime = -1.0
        self._rules: dict[str, list[str]] = {}
        self._attempts: dict[str, int] = {}

    def _write(self, line: dict[str, Any]) -> None:
        self._log.write(json.dumps(line) + "\n")
        self._log.flush()

    def _reload(self) -> None:
        if self._control is None:
            return
        try:
            mtime = self._control.stat().st_mtime
        except FileNotFoundError:
            return
        if mtime != self._control_mtime:
            self._control_mtime = mtime
            self._rules = {
                k.lower(): list(v)
                for k, v in json.loads(self._control.read_text()).get("rules", {}).items()
            }

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        self._reload()
        codes = self._rules.get(address.lower())
        if codes:
            n = self._attempts.get(address.lower(), 0)
            self._attempts[address.lower()] = n + 1
            code = codes[min(n, len(codes) - 1)]
            self._write({"t": time.time(), "event": "refused", "to": address, "code": code})
            return REPLIES[code]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or b""
        message = message_from_bytes(raw, policy=policy.default)
        assert isinstance(message, EmailMessage)
        subject = str(message.get("Subject", ""))
        for to in envelope.rcpt_tos:
            self._write(
                {
                    "t": time.time(),
                    "event": "delivered",
                    "to": to,
                    "kind": kind_of(subject),
                    "message_id": str(message.get("Message-ID", "")),
                    **links_in(message),
                }
            )
        return "250 Message accepted for delivery"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--control", type=Path)
    args = parser.parse_args(argv)
    with args.log.open("a") as log:
        serve_until_signalled(
            ChaosSink(log, args.control),
            args.host,
            args.port,
            f"chaos sink: listening on {args.host}:{args.port}",
        )


if __name__ == "__main__":
    main()
