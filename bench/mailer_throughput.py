"""Mailer throughput: N pre-queued emails through the dispatcher to Postfix's smtp-sink.

    .venv/bin/python bench/mailer_throughput.py [--emails 5000] [--senders 8] [--loop uvloop]

Starts its own PostgreSQL (groundswell_stack.postgres.LocalPostgres, or DATABASE_URL) and
`/usr/sbin/smtp-sink` on a free port (it accepts and discards every message, so the sink
is never the bottleneck), then in one run:

1. the reference: raw aiosmtplib sending the same number of ready-made messages of a
   thank-you's size over --senders reused connections (and, for a tenth as many, one new
   connection per message, as `aiosmtplib.send` does);
2. the mailer: N thank-you emails inserted as `queued` rows, then the mailer's
   `Dispatcher` (claims, renders, sends, marks sent and writes EmailSent to the outbox)
   run in this process until every row is `sent`.

Everything runs on one event loop, uvloop by default as in the service
(groundswell_runtime.serving runs uvicorn with loop="uvloop"); `--loop asyncio` runs the
stdlib loop, which is what this bench used before that option existed.

Prints emails/s, this process's CPU per email (process_time; includes asyncpg and
aiosmtplib client work, not PostgreSQL's), PostgreSQL's CPU per email (its processes'
/proc counters, when it runs here) and the ratio mailer / reference. The outbox relay is
not run (no broker): publishing EmailSent is the relay's cost, not measured here.
Not a test: it prints figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import aiosmtplib
import asyncpg
import uvloop
from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.entrypoints.dispatcher import Dispatcher
from groundswell_runtime.db import migrate
from groundswell_runtime.logging import configure_logging
from groundswell_stack.postgres import LocalPostgres
from groundswell_stack.processes import free_port, wait_for_port

TITLE = "Keep local contact tracing in local hands: fund public health teams properly"
MAIL_FROM = "Groundswell <no-reply@groundswell.test>"


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def postgres_pids(data_dir: Path | None) -> list[int]:
    """The postmaster and its children (backends, checkpointer, WAL writer...)."""
    if data_dir is None:
        return []
    try:
        master = int((data_dir / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError):
        return []
    pids = [master]
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            pids.append(int(stat.parent.name))
    return pids


def sample_message() -> bytes:
    """A message of a thank-you's size, built once (the reference does no rendering)."""
    from email.message import EmailMessage

    message = EmailMessage()
    message["From"] = MAIL_FROM
    message["To"] = "signer@example.test"
    message["Subject"] = f"Thank you for signing “{TITLE}”"
    message.set_content("Thank you!\n" + "Share it: http://share.test/s/abcdef\n" * 40)
    message.add_alternative("<p>Thank you!</p>" + "<p><a href='x'>share</a></p>" * 80, "html")
    return message.as_bytes()


async def reference_reused(port: int, emails: int, connections: int) -> tuple[float, float]:
    data = sample_message()
    share = [
        emails // connections + (1 if i < emails % connections else 0) for i in range(connections)
    ]

    async def one(count: int) -> None:
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=15)
        await smtp.connect()
        for i in range(count):
            await smtp.sendmail("no-reply@groundswell.test", [f"r{i}@example.test"], data)
        await smtp.quit()

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(n) for n in share))
    return time.perf_counter() - wall, time.process_time() - cpu


async def reference_new_connection(port: int, emails: int, concurrency: int) -> tuple[float, float]:
    data = sample_message()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(emails):
        queue.put_nowait(i)

    async def worker() -> None:
        while not queue.empty():
            i = queue.get_nowait()
            await aiosmtplib.send(
                data,
                sender="no-reply@groundswell.test",
                recipients=[f"n{i}@example.test"],
                hostname="127.0.0.1",
                port=port,
                timeout=15,
            )

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - wall, time.process_time() - cpu


async def queue_emails(database_url: str, emails: int) -> None:
    await migrate(database_url, repo.SCHEMA, repo.migrations())
    conn = await asyncpg.connect(database_url)
    try:
        run = uuid.uuid4().hex[:8]
        keys = [f"signer-{run}-{i}@example.test" for i in range(emails)]
        signatures = [uuid.uuid4() for _ in range(emails)]
        petition = uuid.uuid4()
        await conn.execute(
            "INSERT INTO mailer.recipients (address_key, unsubscribe_token, last_signature_id, "
            "last_petition_id) SELECT k, 'tok' || md5(k), s, $3 "
            "FROM unnest($1::text[], $2::uuid[]) AS t(k, s)",
            keys,
            signatures,
            petition,
        )
        contents = [
            json.dumps(
                {
                    "first_name": "Zoë",
                    "petition_title": TITLE,
                    "petition_slug": "local-contact-tracing",
                    "share_code": f"sc{run}{i}",
                    "withdraw_token": f"wd-{run}-{i}",
                    "confirmation_token": None,
                }
            )
            for i in range(emails)
        ]
        await conn.execute(
            "INSERT INTO mailer.emails (signature_id, kind, petition_id, address_key, recipient, "
            "content, message_id, status) "
            "SELECT s, 'thank_you', $4, k, k, c::jsonb, '<' || md5(k) || '@groundswell.test>', "
            "'queued' FROM unnest($1::uuid[], $2::text[], $3::text[]) AS t(s, k, c)",
            signatures,
            keys,
            contents,
            petition,
        )
    finally:
        await conn.close()


async def run_mailer(
    database_url: str, port: int, emails: int, senders: int, pg_data: Path | None
) -> tuple[float, float, float]:
    settings = MailerSettings(
        DATABASE_URL=database_url,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=port,
        MAILER_FROM=MAIL_FROM,
        send_concurrency=senders,
    )
    pool = await asyncpg.create_pool(database_url, min_size=2, max_size=10)
    watcher = await asyncpg.connect(database_url)
    dispatcher = Dispatcher(pool, settings)
    pg_pids = postgres_pids(pg_data)  # now that the pool's backends exist
    cpu, pg_cpu, wall = time.process_time(), cpu_of(pg_pids), time.perf_counter()
    task = asyncio.create_task(dispatcher.run())
    try:
        while True:
            await asyncio.sleep(0.05)
            if task.done():
                task.result()
            sent = await watcher.fetchval(
                "SELECT count(*) FROM mailer.emails WHERE status = 'sent'"
            )
            if sent >= emails:
                break
        elapsed = time.perf_counter() - wall
        used, pg_used = time.process_time() - cpu, cpu_of(pg_pids) - pg_cpu
    finally:
        dispatcher.request_stop()
        await asyncio.wait({task}, timeout=20)
        task.cancel()
        await watcher.close()
        await pool.close()
    return elapsed, used, pg_used


async def main_async(args: argparse.Namespace, database_url: str, pg_data: Path | None) -> None:
    port = free_port()
    # smtp-sink refuses to run as root without a user to drop privileges to.
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [args.smtp_sink, *user, "-c", f"127.0.0.1:{port}", "1000"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, 10, sink)
        print(
            f"machine: {platform.platform()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} cores; load average at start {os.getloadavg()}"
        )
        n_new = max(args.emails // 10, 100)
        wall, cpu = await reference_new_connection(port, n_new, args.senders)
        print(
            f"raw aiosmtplib, new connection per message ({args.senders} at once): "
            f"{n_new / wall:7.0f} emails/s, {1000 * cpu / n_new:.2f} ms CPU/email"
        )
        wall, cpu = await reference_reused(port, args.emails, args.senders)
        reference = args.emails / wall
        print(
            f"raw aiosmtplib, {args.senders} reused connections:                "
            f"{reference:7.0f} emails/s, {1000 * cpu / args.emails:.2f} ms CPU/email"
        )

        await queue_emails(database_url, args.emails)
        wall, cpu, pg = await run_mailer(database_url, port, args.emails, args.senders, pg_data)
        rate = args.emails / wall
        print(
            f"mailer dispatcher ({args.senders} senders), {args.emails} emails:       "
            f"{rate:7.0f} emails/s, {1000 * cpu / args.emails:.2f} ms CPU/email "
            f"(+ PostgreSQL {1000 * pg / args.emails:.2f} ms/email)"
        )
        print(f"ratio mailer / raw reused connections: {rate / reference:.2f}")
        print(f"load average at end {os.getloadavg()}")
    finally:
        sink.terminate()
        sink.wait(timeout=10)


def quiet_service_logging() -> None:
    """The service's own JSON logging (its cost is part of the mailer's), into /dev/null."""
    configure_logging("mailer", "INFO")
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(open(os.devnull, "w"))  # noqa: SIM115 - lives as long as the run


def main() -> None:
    quiet_service_logging()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--emails", type=int, default=5000)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--smtp-sink", default=shutil.which("smtp-sink") or "/usr/sbin/smtp-sink")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    os.environ.setdefault("GROUNDSWELL_EPHEMERAL_DB", "1")
    loop_factory = uvloop.new_event_loop if args.loop == "uvloop" else None
    print(f"event loop: {args.loop}")
    if os.environ.get("DATABASE_URL"):
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main_async(args, os.environ["DATABASE_URL"], None))
        return
    root = Path(tempfile.mkdtemp(prefix="groundswell-bench-mailer-"))
    root.chmod(0o755)
    postgres = LocalPostgres(root / "postgres", free_port()).start()
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(main_async(args, postgres.url, postgres.data))
    finally:
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
