"""A local SMTP server that keeps every message as a `.eml` file (`make up`, tests).

Run: `python -m groundswell_stack.smtp_sink --port 1025 --dir .run/mail`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session


class MaildirSink:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.mkdir(parents=True, exist_ok=True)
        self._sequence = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self._sequence += 1
        raw = envelope.original_content or b""
        name = f"{time.time_ns()}-{self._sequence:06d}.eml"
        path = self.directory / name
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(raw)
        tmp.rename(path)  # readers never see half a message
        subject = message_from_bytes(raw, policy=policy.default).get("Subject", "")
        print(f"smtp-sink: {name} subject={subject!r}", flush=True)
        return "250 Message accepted for delivery"


def serve_until_signalled(handler: object, host: str, port: int, banner: str) -> None:
    """Run an aiosmtpd handler on host:port until SIGINT or SIGTERM."""
    controller = Controller(handler, hostname=host, port=port)
    controller.start()
    print(banner, flush=True)
    stop = asyncio.Event()

    async def wait() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()

    try:
        asyncio.run(wait())
    finally:
        controller.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=1025)
    parser.add_argument("--dir", type=Path, required=True)
    args = parser.parse_args(argv)
    serve_until_signalled(
        MaildirSink(args.dir),
        args.host,
        args.port,
        f"smtp-sink: listening on {args.host}:{args.port}, saving to {args.dir}",
    )


def read_messages(directory: Path) -> list[Any]:
    """Parsed messages in arrival order (helper for tests and tooling)."""
    return [
        message_from_bytes(p.read_bytes(), policy=policy.default)
        for p in sorted(directory.glob("*.eml"))
    ]


if __name__ == "__main__":
    main()
