"""The limits of the parts, each measured alone on the same machine in the same run.

- batched asyncpg inserts: signature rows and their outbox rows, 100 signatures per
  transaction, 4 connections, into copies of the signing tables (`LIKE ... INCLUDING
  ALL`: same columns, checks, unique indexes);
- raw aiokafka produce: encoded SignatureCreated events with the project's producer
  settings (acks=all, linger 5 ms), as fast as the producer takes them;
- raw SMTP: a pre-built thank-you sized message to the same sink, 8 at a time (the
  mailer's default concurrency), one connection per message as `aiosmtplib.send` does,
  and again over 8 reused connections.

The bare endpoint is measured with the load generator (see surge.py). Each function
returns figures, or {"error": ...} when the part could not be measured, so one broken
part never costs the rest of the run.
"""

from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import asyncpg
from groundswell_contracts.events import SignatureCreated, encode
from groundswell_contracts.testing import signed
from groundswell_runtime.kafka import ensure_topics, make_producer


def _signature_row(n: int, petition_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "petition_id": petition_id,
        "name": "Ada Lovelace",
        "email": f"ada.lovelace{n}@example.org",
        "email_canonical": f"ada.lovelace{n}@example.org",
        "email_domain": "example.org",
        "postcode": "OX1 2JD",
        "postcode_area": "OX",
        "country": "GB",
        "contact_consent": n % 2 == 0,
        "consent_wording_version": "bench",
        "consent_at": now,
        "source": None,
        "ref": None,
        "ref_channel": None,
        "share_code": uuid.uuid4().hex[:10],
        "initial_status": "signed",
        "status": "signed",
        "confirmation_token_hash": None,
        "confirmation_expires_at": None,
        "withdraw_token_hash": uuid.uuid4().bytes + uuid.uuid4().bytes,
        "ip": f"81.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255}",
        "created_at": now,
    }


_FALLBACK = {
    "uuid": lambda n: uuid.uuid4(),
    "text": lambda n: f"bench{n}",
    "character": lambda n: "GB",
    "character varying": lambda n: f"bench{n}",
    "boolean": lambda n: False,
    "integer": lambda n: 1,
    "bigint": lambda n: 1,
    "smallint": lambda n: 1,
    "timestamp with time zone": lambda n: datetime.now(UTC),
    "bytea": lambda n: uuid.uuid4().bytes,
    "inet": lambda n: "81.0.0.1",
    "jsonb": lambda n: "{}",
}


async def asyncpg_inserts(database_url: str, seconds: float) -> dict[str, Any]:
    setup = await asyncpg.connect(database_url)
    try:
        await setup.execute(
            "DROP SCHEMA IF EXISTS bench_parts CASCADE; CREATE SCHEMA bench_parts; "
            "CREATE TABLE bench_parts.signatures (LIKE signing.signatures INCLUDING ALL); "
            "CREATE TABLE bench_parts.outbox (LIKE signing.outbox INCLUDING ALL);"
        )
        columns = await setup.fetch(
            "SELECT column_name, data_type, is_nullable, column_default "
            "FROM information_schema.columns "
            "WHERE table_schema = 'bench_parts' AND table_name = 'signatures' "
            "ORDER BY ordinal_position"
        )
    finally:
        await setup.close()
    # Every column the real insert fills, plus any other one that has to be filled.
    names = [
        c["column_name"]
        for c in columns
        if c["column_name"] in _signature_row(0, uuid.uuid4(), datetime.now(UTC))
        or (c["is_nullable"] == "NO" and c["column_default"] is None)
    ]
    types = {c["column_name"]: c["data_type"] for c in columns}
    insert = (
        f"INSERT INTO bench_parts.signatures ({', '.join(names)}) "
        f"VALUES ({', '.join(f'${i + 1}' for i in range(len(names)))})"
    )
    outbox = (
        "INSERT INTO bench_parts.outbox (event_id, event_type, topic, message_key, payload) "
        "VALUES ($1, 'SignatureCreated', 'signatures', $2, $3)"
    )
    payload = encode(_event()).decode()
    counter = itertools.count()
    petition_id = uuid.uuid4()
    deadline = time.monotonic() + seconds
    done = 0

    async def worker(pool: asyncpg.Pool) -> None:
        nonlocal done
        while time.monotonic() < deadline:
            now = datetime.now(UTC)
            rows = [_signature_row(next(counter), petition_id, now) for _ in range(100)]
            values = [
                tuple(
                    row[name] if name in row else _FALLBACK.get(types[name], str)(i)
                    for name in names
                )
                for i, row in enumerate(rows)
            ]
            async with pool.acquire() as conn, conn.transaction():
                await conn.executemany(insert, values)
                await conn.executemany(
                    outbox, [(uuid.uuid4(), str(petition_id), payload) for _ in rows]
                )
            done += len(rows)

    try:
        pool = await asyncpg.create_pool(database_url, min_size=4, max_size=4)
        started = time.monotonic()
        try:
            await asyncio.gather(*(worker(pool) for _ in range(4)))
        finally:
            await pool.close()
        elapsed = time.monotonic() - started
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"per_s": done / elapsed, "what": "signatures (+ outbox rows), 100 per transaction"}


def _event() -> SignatureCreated:
    """A signature event as signing publishes it: the contact sealed (its key apart)."""
    return signed(
        petition_id=uuid.uuid4(),
        signature_id=uuid.uuid4(),
        petition_slug="surge-0",
        petition_title="Keep local public health teams running contact tracing",
        status="signed",
        email="ada.lovelace@example.org",
        name="Ada",
        contact_consent=True,
        postcode_area="OX",
        country="GB",
        share_code="a1b2c3d4e5",
        withdraw_token="w" * 32,
    ).event


async def kafka_produce(bootstrap: str, partitions: int, seconds: float) -> dict[str, Any]:
    topic = f"bench-parts-{uuid.uuid4().hex[:6]}"
    try:
        await ensure_topics(bootstrap, partitions, 1, [topic])
        producer = make_producer(bootstrap)
        await producer.start()
        try:
            payloads = [(encode(e), e.key.encode()) for e in (_event() for _ in range(1000))]
            sent = 0
            started = time.monotonic()
            deadline = started + seconds
            pending: list[asyncio.Future[Any]] = []
            while time.monotonic() < deadline:
                value, key = payloads[sent % len(payloads)]
                pending.append(await producer.send(topic, value, key=key))
                sent += 1
                if len(pending) >= 5000:
                    await asyncio.gather(*pending)
                    pending.clear()
            await asyncio.gather(*pending)
            elapsed = time.monotonic() - started
        finally:
            await producer.stop()
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    return {"per_s": sent / elapsed, "what": f"SignatureCreated ({len(payloads[0][0])} bytes)"}


def thank_you_message() -> EmailMessage:
    message = EmailMessage()
    message["From"] = "Groundswell <no-reply@groundswell.localhost>"
    message["To"] = "ada.lovelace@example.org"
    message["Subject"] = "Thank you for signing: Keep local public health teams on tracing"
    message["Date"] = "Tue, 01 Dec 2026 12:00:00 +0000"
    message["Message-ID"] = "<bench@groundswell.localhost>"
    message["List-Unsubscribe"] = "<http://127.0.0.1:8003/unsubscribe/abcdefghijklmnop>"
    message["List-Unsubscribe-Post"] = "List-Unsubscribe=One-Click"
    text = ("Thank you for signing. Share this petition with the people you know.\n" * 12) + (
        "http://127.0.0.1:8004/s/a1b2c3d4e5\n"
    )
    message.set_content(text)
    message.add_alternative(f"<html><body><p>{text}</p></body></html>" * 2, subtype="html")
    return message


async def smtp_send(host: str, port: int, seconds: float, reuse: bool) -> dict[str, Any]:
    message = thank_you_message()
    size = len(message.as_bytes())
    deadline = time.monotonic() + seconds
    sent = 0

    async def per_message() -> None:
        nonlocal sent
        while time.monotonic() < deadline:
            await aiosmtplib.send(message, hostname=host, port=port, timeout=15)
            sent += 1

    async def reused() -> None:
        nonlocal sent
        async with aiosmtplib.SMTP(hostname=host, port=port, timeout=15) as smtp:
            while time.monotonic() < deadline:
                await smtp.send_message(message)
                sent += 1

    started = time.monotonic()
    try:
        await asyncio.gather(*((reused if reuse else per_message)() for _ in range(8)))
    except Exception as exc:
        return {"error": f"{type(exc).__name__}: {exc}"[:300]}
    how = "8 reused connections" if reuse else "a connection per message, 8 at a time"
    return {"per_s": sent / (time.monotonic() - started), "what": f"{size}-byte message, {how}"}
