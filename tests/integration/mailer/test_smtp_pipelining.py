"""SmtpConnection against real servers, with and without PIPELINING (RFC 2920).

aiosmtpd does not offer PIPELINING; its EHLO hook adds it for one server and not the
other, so each test runs both paths (smtp_pipelining.py and plain aiosmtplib) and must
see the same outcome. Postfix's smtp-sink (offers PIPELINING) checks the bytes against
a second implementation when it is installed. A relay between client and server records
what the client wrote in each segment, to show which path was taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import MISSING
from aiosmtplib.protocol import normalize_message_line_endings
from groundswell_mailer.adapters import smtp
from groundswell_mailer.adapters.smtp import SmtpConnection
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import SmtpStage
from groundswell_stack.processes import free_port, wait_for_port

SENDER = "Groundswell <no-reply@groundswell.test>"

# Lines that dot-stuffing and line-ending normalisation must carry through unchanged:
# leading dots, a lone dot, bare LF and bare CR, no final line break.
TRICKY = (
    b"From: no-reply@groundswell.test\r\nSubject: dots\r\n\r\n"
    b".starts with a dot\r\n..two dots\r\n.\r\nbare lf\nbare cr\r"
    b"\r\n. dot space\r\nlast line without a break"
)


def message(n: int) -> bytes:
    return b"Subject: m%d\r\n\r\nbody %d\r\n.%d\r\n" % (n, n, n)


@dataclass
class Recorder:
    """An aiosmtpd handler: scripted replies by local part, everything it saw recorded.

    - `reject-*` recipient: 550 at RCPT;
    - `odd-*` recipient: 550 at RCPT but kept in the envelope, so DATA is answered 354
      (a server may do that; the client must end the data and still fail the message);
    - `later-*` sender: 451 at MAIL.
    """

    pipelining: bool
    sessions: int = 0
    contents: list[bytes] = field(default_factory=list)
    mail_options: list[list[str]] = field(default_factory=list)
    resets: int = 0
    hosts: list[str] = field(default_factory=list)  # the name each EHLO gave
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        self.sessions += 1
        self.hosts.append(hostname)
        session.host_name = hostname
        if self.pipelining:
            responses.insert(-1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> Any:
        self.mail_options.append(list(options))
        if address.startswith("later-"):
            return "451 4.3.0 sender busy, try again later"
        return MISSING

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> Any:
        if address.startswith("reject-"):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if address.startswith("odd-"):
            envelope.rcpt_tos.append(address)
            return "550 5.1.1 refused, but DATA will be opened anyway"
        return MISSING

    async def handle_RSET(self, server: Any, session: Any, envelope: Any) -> Any:
        self.resets += 1
        return MISSING

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.lock:
            self.contents.append(envelope.original_content)
        return "250 Message accepted"


class Relay:
    """A TCP relay that keeps each segment the client sent, as read."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.segments: list[bytes] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, keep: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while chunk := await src.read(65536):
                    if keep:
                        self.segments.append(chunk)
                    dst.write(chunk)
                    await dst.drain()
            dst.close()

        both = asyncio.gather(pipe(reader, up_writer, True), pipe(up_reader, writer, False))
        task = asyncio.ensure_future(both)
        self._tasks.add(task)
        await task

    def pipelined(self) -> bool:
        """Some segment carried MAIL, RCPT and DATA together."""
        return any(
            b"MAIL FROM:" in s and b"RCPT TO:" in s and s.endswith(b"DATA\r\n")
            for s in self.segments
        )

    def lockstep(self) -> bool:
        """MAIL went out, and never with RCPT in the same segment."""
        mails = [s for s in self.segments if b"MAIL FROM:" in s]
        return bool(mails) and not any(b"RCPT TO:" in s for s in mails)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)


def settings(port: int) -> MailerSettings:
    return MailerSettings(
        DATABASE_URL="postgresql://unused.invalid/none",  # never connected to here
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=port,
        smtp_timeout_seconds=5,
        smtp_messages_per_connection=0,
    )


@dataclass
class Server:
    recorder: Recorder
    relay: Relay
    connection: SmtpConnection
    controller: Controller

    def restart(self) -> None:
        self.controller.stop()  # closes every open connection too
        self.controller = controller(self.recorder, self.relay.target_port)
        self.controller.start()


def controller(recorder: Recorder, port: int) -> Controller:
    # The server's own name given, so it looks up none (the client's lookups are counted).
    return Controller(
        recorder,
        hostname="127.0.0.1",
        port=port,
        enable_SMTPUTF8=True,
        server_hostname="sink.groundswell.test",
    )


@pytest.fixture(params=[True, False], ids=["pipelining", "lockstep"])
async def server(request: pytest.FixtureRequest) -> AsyncIterator[Server]:
    recorder = Recorder(pipelining=request.param)
    port = free_port()
    sink = controller(recorder, port)
    sink.start()
    relay = Relay(port)
    await relay.start()
    connection = SmtpConnection(settings(relay.port))
    server = Server(recorder, relay, connection, sink)
    try:
        yield server
    finally:
        await connection.close()
        await relay.stop()
        server.controller.stop()


async def test_messages_arrive_intact_on_either_path(server: Server) -> None:
    messages = [TRICKY, message(1), message(2)]
    for body in messages:
        assert await server.connection.send(SENDER, "ok@example.test", body) is None
    assert await server.connection.send(SENDER, "zoë@example.test", message(3), utf8=True) is None

    expected = [normalize_message_line_endings(m) for m in [*messages, message(3)]]
    assert server.recorder.contents == expected
    assert server.recorder.sessions == 1  # one connection carried them all
    sizes = [f"SIZE={len(m)}" for m in [*messages, message(3)]]
    assert [o for opts in server.recorder.mail_options for o in opts if "SIZE" in o] == sizes
    assert "SMTPUTF8" in server.recorder.mail_options[-1]
    if server.recorder.pipelining:
        assert server.relay.pipelined()
    else:
        assert server.relay.lockstep() and not server.relay.pipelined()


async def test_the_host_name_is_looked_up_once_for_every_connection(
    server: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    lookups: list[str] = []

    def getfqdn(name: str = "") -> str:
        lookups.append(name)
        return "mailer.groundswell.test"

    monkeypatch.setattr(smtp, "_local_hostname", None)
    monkeypatch.setattr(smtp.socket, "getfqdn", getfqdn)
    renewing = SmtpConnection(
        settings(server.relay.port).model_copy(update={"smtp_messages_per_connection": 1})
    )
    try:
        for n in range(3):
            assert await renewing.send(SENDER, "ok@example.test", message(n)) is None
    finally:
        await renewing.close()
    assert server.recorder.sessions == 3  # a new connection, and EHLO, for each message
    assert server.recorder.hosts == ["mailer.groundswell.test"] * 3
    assert len(lookups) == 1


async def test_refused_recipient_is_permanent_and_the_next_message_goes(server: Server) -> None:
    assert await server.connection.send(SENDER, "ok@example.test", message(1)) is None
    failure = await server.connection.send(SENDER, "reject-me@example.test", message(2))
    assert failure is not None
    assert (failure.code, failure.stage, failure.permanent) == (550, SmtpStage.RECIPIENT, True)
    assert server.recorder.resets == 1  # the envelope was reset before the next message

    assert await server.connection.send(SENDER, "ok@example.test", message(3)) is None
    assert server.recorder.contents == [
        normalize_message_line_endings(message(1)),
        normalize_message_line_endings(message(3)),
    ]
    assert server.recorder.sessions == 1


async def test_refused_sender_4xx_is_temporary(server: Server) -> None:
    failure = await server.connection.send(
        "later-x@groundswell.test", "ok@example.test", message(1)
    )
    assert failure is not None
    assert (failure.code, failure.stage, failure.permanent) == (451, SmtpStage.SENDER, False)
    assert server.recorder.resets == 1

    assert await server.connection.send(SENDER, "ok@example.test", message(2)) is None
    assert server.recorder.contents == [normalize_message_line_endings(message(2))]
    assert server.recorder.sessions == 1


async def test_data_opened_after_a_refused_recipient_is_ended_and_fails(server: Server) -> None:
    failure = await server.connection.send(SENDER, "odd-one@example.test", message(1))
    assert failure is not None
    assert (failure.code, failure.stage, failure.permanent) == (550, SmtpStage.RECIPIENT, True)

    assert await server.connection.send(SENDER, "ok@example.test", message(2)) is None
    sent = normalize_message_line_endings(message(2))
    if server.recorder.pipelining:
        # DATA was pipelined and answered 354: the client ended it with a lone ".".
        assert server.recorder.contents == [b"", sent]
    else:
        assert server.recorder.contents == [sent]  # lockstep stops at the RCPT reply
    assert server.recorder.resets == 1
    assert server.recorder.sessions == 1


async def test_a_connection_lost_while_idle_is_replaced_without_a_failure(server: Server) -> None:
    assert await server.connection.send(SENDER, "ok@example.test", message(1)) is None
    server.restart()  # as a relay restarting: the idle connection is dropped, and the
    # client only finds out when it writes the next message's commands
    assert await server.connection.send(SENDER, "ok@example.test", message(2)) is None
    assert server.recorder.contents == [
        normalize_message_line_endings(message(1)),
        normalize_message_line_endings(message(2)),
    ]
    assert server.recorder.sessions == 2


SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"


@contextlib.contextmanager
def running_sink(*flags: str) -> Iterator[tuple[int, Path]]:
    if not os.access(SMTP_SINK, os.X_OK):
        pytest.skip("Postfix's smtp-sink is not installed")
    # Not under pytest's tmp_path: smtp-sink writes as the user it drops to, who must
    # be able to reach the directory (it hangs up on a client when it cannot dump).
    dump = Path(tempfile.mkdtemp(prefix="smtp-sink-dump-"))
    dump.chmod(0o777)
    port = free_port()
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(  # offers PIPELINING unless told -p
        [SMTP_SINK, *user, *flags, "-d", f"{dump}/%M.", f"127.0.0.1:{port}", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 10, sink)
        yield port, dump
    finally:
        sink.terminate()
        sink.wait(timeout=10)
        shutil.rmtree(dump, ignore_errors=True)


def sink_body(dumped: str) -> str:
    """The message of a smtp-sink dump: after its X-* and Received headers, less the
    empty line it appends (its lines end in LF, dots un-stuffed)."""
    lines = dumped.split("\n")
    start = 0
    while lines[start].startswith(("X-", "Received:", "\t")):
        start += 1
    assert lines[-2:] == ["", ""]
    return "\n".join(lines[start:-2]) + "\n"


@pytest.fixture
def smtp_sink() -> Iterator[tuple[int, Path]]:
    with running_sink() as sink:
        yield sink


async def test_smtp_sink_receives_the_same_bytes_pipelined(smtp_sink: tuple[int, Path]) -> None:
    port, dump = smtp_sink
    relay = Relay(port)
    await relay.start()
    connection = SmtpConnection(settings(relay.port))
    messages = [TRICKY, message(1), message(2)]
    try:
        for body in messages:
            assert await connection.send(SENDER, "ok@example.test", body) is None
    finally:
        await connection.close()
        await relay.stop()
    assert relay.pipelined()

    async def dumped() -> list[str]:
        # smtp-sink writes each file when it has answered "."; read once all are there.
        for _ in range(100):
            files = sorted(dump.iterdir(), key=lambda p: p.stat().st_mtime_ns)
            if len(files) == len(messages):
                return [p.read_text() for p in files]
            await asyncio.sleep(0.05)
        raise AssertionError(f"smtp-sink dumped {len(files)} of {len(messages)} messages")

    bodies = sorted(sink_body(text) for text in await dumped())
    expected = sorted(
        normalize_message_line_endings(m).replace(b"\r\n", b"\n").decode() for m in messages
    )
    assert bodies == expected


@pytest.mark.parametrize("pipelining", [True, False], ids=["pipelining", "lockstep"])
async def test_421_at_rcpt_is_temporary_and_the_next_message_reconnects(pipelining: bool) -> None:
    # -Q RCPT: smtp-sink answers RCPT with 421 and hangs up; -p: no PIPELINING offered.
    with running_sink("-Q", "RCPT", *([] if pipelining else ["-p"])) as (port, _):
        relay = Relay(port)
        await relay.start()
        connection = SmtpConnection(settings(relay.port))
        try:
            for n in (1, 2):
                failure = await connection.send(SENDER, "ok@example.test", message(n))
                assert failure is not None
                assert (failure.code, failure.stage) == (421, SmtpStage.RECIPIENT)
                assert not failure.permanent
                assert not connection.connected  # a 421 ends the session
        finally:
            await connection.close()
            await relay.stop()
        assert relay.pipelined() is pipelining
