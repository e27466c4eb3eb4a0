"""Privacy end to end (issue 10): personal data only on the mailer's path, and erasure
that reaches every copy. The four services as processes, the real broker and database.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import asyncpg
import httpx
from groundswell_contracts.events import parse_event
from groundswell_contracts.sealed import SealedContact, Unreadable, associated_data, unseal
from groundswell_contracts.topics import all_topics
from groundswell_runtime.kafka import make_consumer

from .conftest import Stack, eventually
from .test_signature_flow import count_of, create_petition, link_in

SCHEMAS = ("signing", "mailer", "sharing")


def sign(stack: Stack, slug: object, name: str, email: str, leaderboard: bool) -> None:
    response = httpx.post(
        f"{stack.urls['signing']}/api/petitions/{slug}/signatures",
        json={
            "name": name,
            "email": email,
            "postcode": "OX1 2JD",
            "contact_consent": True,
            "leaderboard_consent": leaderboard,
        },
    )
    assert response.status_code == 202, response.text


async def every_record(bootstrap: str) -> list[Any]:
    """Every record of every topic and dead-letter topic, from the beginning."""
    consumer = make_consumer(bootstrap, None, *all_topics())
    await consumer.start()
    records: list[Any] = []
    quiet_since = time.monotonic()
    try:
        while time.monotonic() - quiet_since < 3:
            batch = await consumer.getmany(timeout_ms=300)
            for partition_records in batch.values():
                records.extend(partition_records)
                quiet_since = time.monotonic()
    finally:
        await consumer.stop()
    return records


async def rows_mentioning(database_url: str, needle: str) -> dict[str, int]:
    """Rows of any table of any service whose text (every column) contains `needle`."""
    found: dict[str, int] = {}
    conn = await asyncpg.connect(database_url)
    try:
        tables = await conn.fetch(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = ANY($1::text[]) AND table_type = 'BASE TABLE'",
            list(SCHEMAS),
        )
        for t in tables:
            name = f'"{t["table_schema"]}"."{t["table_name"]}"'
            n = await conn.fetchval(
                f"SELECT count(*) FROM {name} AS r WHERE strpos(lower(r::text), lower($1)) > 0",
                needle,
            )
            if n:
                found[name] = n
    finally:
        await conn.close()
    return found


def test_erasure_reaches_every_copy_and_topics_hold_nothing_in_clear(stack: Stack) -> None:
    petition = create_petition(stack, requires_confirmation=True)
    slug = petition["slug"]
    tag = uuid.uuid4().hex[:8]
    people = [(f"Quenby{tag}{i} Ashdown", f"p{i}-{tag}@example.org") for i in range(6)]
    victim_name, victim_email = people[2]

    # Others agree to show their first name on the organisers' leaderboard (it then
    # travels to sharing on the topic, by design); the victim does not.
    for name, email in people[:4]:
        sign(stack, slug, name, email, leaderboard=email != victim_email)
    # The victim's confirmation email went out: the mailer held their address and token.
    [confirmation] = eventually(lambda: stack.mail_to(victim_email), timeout=30)
    token_link = link_in(confirmation, r"http://\S+/confirm/[A-Za-z0-9_-]+")
    victim_token = token_link.rsplit("/", 1)[1]

    erased = httpx.post(
        f"{stack.urls['signing']}/api/admin/privacy/erasure",
        json={"email": victim_email.upper()},  # however they type it
        headers=stack.admin(),
    )
    assert erased.status_code == 200, erased.text
    assert erased.json()["erased_signatures"] == 1
    for name, email in people[4:]:  # signing goes on
        sign(stack, slug, name, email, leaderboard=True)
    eventually(lambda: count_of(stack, slug).get("pending") == 5, timeout=30)
    # The erased signer's link no longer works.
    assert httpx.get(f"{stack.urls['signing']}/confirm/{victim_token}").status_code == 404

    needles = (victim_email, victim_name.split()[0], victim_token)

    async def nothing_held() -> dict[str, int]:
        held: dict[str, int] = {}
        for needle in needles:
            held |= await rows_mentioning(stack.database_url, needle)
        return held

    # The mailer and sharing forget within seconds of the events (the issue asks < 1 min).
    deadline = time.monotonic() + 60
    while (held := asyncio.run(nothing_held())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert held == {}, held
    # The others are still held where they should be (the search itself works).
    assert asyncio.run(rows_mentioning(stack.database_url, people[3][1]))

    records = asyncio.run(every_record(stack.bootstrap))
    assert records
    seen_sealed = 0
    for record in records:
        raw = record.value or b""
        # No address or token in clear on any topic or dead-letter topic, ours or others'.
        for needle in (*needles, *(email for _, email in people)):
            assert needle.encode() not in raw, (record.topic, needle)
        document = json.loads(raw)
        if isinstance(document.get("contact"), dict):
            seen_sealed += 1
    assert seen_sealed >= len(people)

    # The victim's sealed contact opens with no key signing or the mailer still holds.
    async def keys_held() -> list[bytes]:
        conn = await asyncpg.connect(stack.database_url)
        try:
            rows = await conn.fetch(
                "SELECT data_key FROM mailer.data_keys WHERE data_key IS NOT NULL "
                "UNION ALL SELECT data_key FROM signing.signatures WHERE data_key IS NOT NULL"
            )
            return [r["data_key"] for r in rows]
        finally:
            await conn.close()

    keys = asyncio.run(keys_held())
    victims = [
        parse_event(r.value)
        for r in records
        if r.topic == "signatures" and b'"contact":{' in (r.value or b"")
    ]
    victim_events = []
    for event in victims:
        sealed = getattr(event, "contact", None)
        assert isinstance(sealed, SealedContact)
        aad = associated_data(event.event_type, event.event_id)
        opened = None
        for key in keys:
            try:
                opened = unseal(sealed, key, aad)
                break
            except Unreadable:
                continue
        if opened is None:
            victim_events.append(event)
        else:
            assert opened.email != victim_email
    assert len(victim_events) == 1  # the victim's, and only theirs, is unreadable
    # The latest word on the victim's key is its shredding: compaction (Apache Kafka)
    # drops the key record itself.
    shredded_id = victim_events[0].signature_id  # type: ignore[union-attr]
    latest = [
        json.loads(r.value)["event_type"]
        for r in records
        if r.topic == "signer-keys" and r.key == str(shredded_id).encode()
    ]
    assert latest[-1] == "DataKeyShredded"

    # No log line of any service names them.
    for log in stack.logs.glob("*.log"):
        text = log.read_text(errors="replace")
        for needle in needles:
            assert needle not in text, (log.name, needle)


def test_self_service_access_then_erasure_by_emailed_links(stack: Stack) -> None:
    petition = create_petition(stack, requires_confirmation=False)
    slug = petition["slug"]
    tag = uuid.uuid4().hex[:8]
    email = f"self-{tag}@example.org"
    sign(stack, slug, f"Ysolde{tag} Marchbanks", email, leaderboard=False)
    eventually(lambda: stack.mail_to(email), timeout=30)  # the thank-you
    signing = stack.urls["signing"]

    def ask(kind: str) -> str:
        before = len(stack.mail_to(email))
        asked = httpx.post(
            f"{signing}/api/privacy/requests", json={"email": email.upper(), "kind": kind}
        )
        assert asked.status_code == 202, asked.text
        # Asking about an address that never signed gets the very same answer.
        stranger = httpx.post(
            f"{signing}/api/privacy/requests",
            json={"email": f"nobody-{tag}@example.org", "kind": kind},
        )
        assert stranger.json() == asked.json()
        messages = eventually(lambda: stack.mail_to(email)[before:], timeout=30)
        return link_in(messages[-1], r"http://\S+/privacy/requests/[A-Za-z0-9_-]+")

    access_link = ask("access")
    page = httpx.get(access_link)
    assert page.status_code == 200 and "Download my data" in page.text
    report = httpx.post(access_link, headers={"Origin": signing})
    assert report.status_code == 200, report.text
    assert report.headers["content-disposition"].startswith("attachment")
    [held] = report.json()["signatures"]
    assert (held["email"], held["slug"], held["postcode"]) == (email, slug, "OX1 2JD")
    # Once: the link is used up, and the mailer forgets the link's email.
    assert httpx.post(access_link, headers={"Origin": signing}).status_code == 404

    erasure_link = ask("erasure")
    assert "Erase my data" in httpx.get(erasure_link).text
    erased = httpx.post(erasure_link, headers={"Origin": signing})
    assert erased.status_code == 200 and "1 signature" in erased.text

    async def held_anywhere() -> dict[str, int]:
        return await rows_mentioning(stack.database_url, email)

    deadline = time.monotonic() + 60
    while (held_rows := asyncio.run(held_anywhere())) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert held_rows == {}, held_rows
    assert count_of(stack, slug).get("signatures") == 1  # kept, anonymised (the default)
