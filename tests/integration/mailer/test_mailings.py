"""Mailings, the preference centre and milestone notes, end to end in the mailer: real
broker, PostgreSQL and an SMTP server (aiosmtpd) that keeps what it receives.

The volume case (`MAILING_TEST_SIZE`, default 600 supporters; run it with 5000 by hand,
see docs/campaign.md) kills the sender mid-send and resumes it in a new app on the same
database: each supporter gets one copy, except those whose conversation was under way
or whose outcome was not yet written at the kill (counted and printed).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import httpx
import pytest
from aiosmtpd.controller import Controller
from groundswell_contracts.events import MilestoneReached, PreferencesChanged
from groundswell_mailer.adapters import supporters
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.intake import Supporter
from groundswell_mailer.entrypoints.http import create_app
from groundswell_runtime.organisation import Organisation
from groundswell_stack.infra import Infra
from groundswell_stack.processes import free_port

from ...conftest import TEST_PARTITIONS, scratch_database

ADMIN = "test-admin-token-0123456789"
AUTH = {"Authorization": f"Bearer {ADMIN}"}
NOTIFY = "organiser@campaign.test"
POSTAL = "1 Campaign Row, Leeds, LS1 1AA"
SIZE = int(os.environ.get("MAILING_TEST_SIZE", "600"))


class KeepingSmtp:
    """A real SMTP server keeping every message by recipient."""

    def __init__(self) -> None:
        self.port = free_port()
        self.messages: dict[str, list[bytes]] = collections.defaultdict(list)
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        for address in envelope.rcpt_tos:
            self.messages[address.lower()].append(bytes(envelope.content))
        return "250 Message accepted"

    def parsed(self, address: str) -> list[EmailMessage]:
        return [
            message_from_bytes(raw, policy=policy.default)  # type: ignore[misc]
            for raw in self.messages.get(address.lower(), [])
        ]


@pytest.fixture
def smtp() -> Any:
    server = KeepingSmtp()
    server._controller.start()
    try:
        yield server
    finally:
        server._controller.stop()


def settings_for(
    infra: Infra, database_url: str, smtp_port: int, **overrides: Any
) -> MailerSettings:
    fields: dict[str, Any] = {
        "DATABASE_URL": database_url,
        "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
        "KAFKA_TOPIC_PARTITIONS": TEST_PARTITIONS,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": smtp_port,
        "PUBLIC_BASE_URL": "http://signing.test",
        "SHARE_BASE_URL": "http://share.test",
        "ADMIN_TOKEN": ADMIN,
        "public_url": "http://mailer.test",
        "organisation": Organisation(
            name="Test Campaign", postal_address=POSTAL, notify_address=NOTIFY
        ),
        "poll_interval_seconds": 0.2,
        "smtp_timeout_seconds": 5,
        "send_lease_seconds": 2.0,
        "lease_renew_seconds": 0.5,
        "consumer_group": f"mailer-test-{uuid.uuid4().hex[:8]}",
    }
    fields.update(overrides)
    return MailerSettings(**fields)


@asynccontextmanager
async def app_on(settings: MailerSettings) -> AsyncIterator[tuple[httpx.AsyncClient, Any]]:
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://mailer.test") as c:
            yield c, app.state.service


@pytest.fixture
async def database(infra: Infra) -> AsyncIterator[str]:
    async with scratch_database(infra, "mailings") as url:
        yield url


async def until(check: Any, timeout: float = 60.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = await check()
        if value:
            return value
        if loop.time() > deadline:
            raise AssertionError(f"not reached in {timeout}s (last: {value!r})")
        await asyncio.sleep(0.1)


async def mailing_done(client: httpx.AsyncClient, mailing_id: int) -> dict[str, Any] | None:
    view = (await client.get(f"/api/admin/mailings/{mailing_id}", headers=AUTH)).json()
    return view if view["status"] == "sent" else None


def mailings_to(smtp: KeepingSmtp, address: str) -> list[EmailMessage]:
    """What the mailings brought, leaving out the thank-you and confirmation emails."""
    return [
        m
        for m in smtp.parsed(address)
        if not str(m["Subject"]).startswith(("Thank you", "Please confirm"))
    ]


def links_in(message: EmailMessage) -> list[str]:
    html = message.get_body(("html",)).get_content()  # type: ignore[union-attr]
    return re.findall(r'href="([^"]+)"', html)


# --- supporters from real events, preferences, a mailing -----------------------------


async def test_mailing_reaches_who_asked_and_the_preference_centre_holds(
    infra: Infra, topics: None, database: str, smtp: KeepingSmtp, kit: Any
) -> None:
    settings = settings_for(infra, database, smtp.port)
    unique = uuid.uuid4().hex[:8]
    petition, other = uuid.uuid4(), uuid.uuid4()

    def person(name: str, **fields: Any) -> Any:
        return kit.signature(
            petition_id=petition,
            petition_slug=f"p-{unique}",
            petition_title="Local contact tracing",
            email=f"{name}-{unique}@example.test",
            name=f"{name.title()} Tester",
            postcode_area="LS",
            **fields,
        )

    wanted = [person(n) for n in ("ada", "bob", "cy")]
    no_consent = person("dee", contact_consent=False)
    unsubscribed = person("eve")
    signed_other = person("fay")
    fay_other = kit.signature(
        petition_id=other,
        petition_slug=f"o-{unique}",
        petition_title="Other",
        email=signed_other.email,
        name="Fay Tester",
    )
    news_off = person("gus")
    pending = person("hal", status="pending", confirmation_token=f"ct-{unique}")
    everyone = [*wanted, no_consent, unsubscribed, signed_other, fay_other, news_off, pending]

    async with app_on(settings) as (client, runtime):
        for one in everyone:
            await kit.publish(one)
        db: asyncpg.Pool = runtime.require_pool()

        async def recorded() -> bool:
            # The topic is the session's: other tests' signers arrive here too.
            n = await db.fetchval(
                "SELECT count(*) FROM mailer.supporters WHERE signature_id = ANY($1::uuid[])",
                [one.signature_id for one in everyone],
            )
            return bool(n == len(everyone))

        await until(recorded)
        token_of = {
            r["address_key"]: r["unsubscribe_token"]
            for r in await db.fetch("SELECT address_key, unsubscribe_token FROM mailer.recipients")
        }
        # One-click unsubscribe (RFC 8058) still works beside the preference centre.
        eve = token_of[unsubscribed.email.lower()]
        assert (await client.post(f"/unsubscribe/{eve}")).status_code == 200
        # Gus keeps updates, drops news.
        gus = token_of[news_off.email.lower()]
        page = await client.get(f"/preferences/{gus}")
        assert page.status_code == 200 and "checked" in page.text
        assert page.headers["cache-control"] == "no-store"
        changed = await client.post(
            f"/preferences/{gus}", data={"updates": "yes", "action": "save"}
        )
        assert changed.status_code == 200 and "Saved" in changed.text
        assert (await client.get("/preferences/not-a-token-we-sent-0000")).status_code == 404

        draft = await client.post(
            "/api/admin/mailings",
            headers=AUTH,
            json={
                "subject": "{first_name}, one more push",
                "body_markdown": "Dear {first_name},\n\n"
                "Please [sign here](/p/p-" + unique + ") and tell a friend. <b>not bold</b>",
                "petition": f"p-{unique}",
                "audience": {"not_signed": [f"o-{unique}"], "areas": ["ls"]},
            },
        )
        assert draft.status_code == 201, draft.text
        mailing = draft.json()
        assert mailing["audience"] == {"would_receive": 3, "would_skip": 3}
        assert (await client.post("/api/admin/mailings", json={})).status_code == 401
        bad = await client.post(
            "/api/admin/mailings",
            headers=AUTH,
            json={"subject": "Hi {firstname}", "body_markdown": "x", "petition": f"p-{unique}"},
        )
        assert bad.status_code == 422 and "{firstname}" in bad.text

        preview = await client.get(
            f"/api/admin/mailings/{mailing['id']}/preview?first_name=Sam", headers=AUTH
        )
        assert preview.json()["subject"] == "Sam, one more push"
        assert "&lt;b&gt;not bold&lt;/b&gt;" in preview.json()["html"]
        test = await client.post(
            f"/api/admin/mailings/{mailing['id']}/test", headers=AUTH, json={"email": NOTIFY}
        )
        assert test.status_code == 200
        assert smtp.parsed(NOTIFY)[0]["Subject"].startswith("[Test] Sam")

        sent = await client.post(f"/api/admin/mailings/{mailing['id']}/send", headers=AUTH)
        assert sent.status_code == 202 and sent.json()["recipients"] == 3
        again = await client.post(f"/api/admin/mailings/{mailing['id']}/send", headers=AUTH)
        assert again.status_code == 409
        done = await until(lambda: mailing_done(client, mailing["id"]))
        assert done["progress"] == {"sent": 3}

        for one in wanted:
            [message] = mailings_to(smtp, one.email)
            first = one.name.split()[0]
            assert message["Subject"] == f"{first}, one more push"
            text = message.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert f"Dear {first}," in text and POSTAL in text
            assert "http://signing.test/privacy" in text
            token = token_of[one.email.lower()]
            assert f"http://mailer.test/preferences/{token}" in text
            assert message["List-Unsubscribe"] == f"<http://mailer.test/unsubscribe/{token}>"
            petition_links = [u for u in links_in(message) if "/p/" in u]
            assert petition_links, "a call to action"
            for url in petition_links:
                assert parse_qs(urlsplit(url).query)["source"] == [mailing["source"]]
        for nobody in (no_consent, unsubscribed, signed_other, pending):
            assert mailings_to(smtp, nobody.email) == []
        # Gus asked for updates only: a news mailing skips him, an updates one reaches him.
        assert mailings_to(smtp, news_off.email) == []
        updates = await client.post(
            "/api/admin/mailings",
            headers=AUTH,
            json={
                "subject": "News of the petition",
                "body_markdown": "It is going well, {first_name}.",
                "category": "updates",
                "petition": f"p-{unique}",
                "audience": {"signed": [f"p-{unique}"]},
            },
        )
        update_id = updates.json()["id"]
        # Ada unsubscribes from everything in the preference centre before it goes.
        ada = token_of[wanted[0].email.lower()]
        left = await client.post(f"/preferences/{ada}", data={"action": "unsubscribe"})
        assert "unsubscribed" in left.text
        await client.post(f"/api/admin/mailings/{update_id}/send", headers=AUTH)
        await until(lambda: mailing_done(client, update_id))
        assert len(mailings_to(smtp, news_off.email)) == 1
        assert len(mailings_to(smtp, wanted[0].email)) == 1  # only the first mailing
        assert len(mailings_to(smtp, wanted[1].email)) == 2

    changes = [
        e
        for e in await kit.topic_events(infra.kafka_bootstrap, "email-events")
        if isinstance(e, PreferencesChanged)
        and e.signature_id in {news_off.signature_id, wanted[0].signature_id}
    ]
    assert {(e.news, e.updates, e.unsubscribed) for e in changes} == {
        (False, True, False),
        (False, False, True),
    }


# --- milestone notes -----------------------------------------------------------------------


async def test_a_milestone_note_goes_once_under_redelivery(
    infra: Infra, topics: None, database: str, smtp: KeepingSmtp, kit: Any
) -> None:
    settings = settings_for(infra, database, smtp.port)
    signer = kit.signature()
    reached = MilestoneReached(
        petition_id=signer.petition_id, slug=signer.petition_slug, threshold=1000, signatures=1003
    )
    async with app_on(settings) as (_client, runtime):
        await kit.publish(signer)
        db: asyncpg.Pool = runtime.require_pool()
        await until(
            lambda: db.fetchval(
                "SELECT true FROM mailer.supporters WHERE signature_id = $1", signer.signature_id
            )
        )
        await kit.publish(reached)
        await kit.publish(reached)  # redelivered
        # The counter rebuilt: the same milestone under a new event id.
        await kit.publish(reached.model_copy(update={"event_id": uuid.uuid4()}))
        # (Other tests' milestones may be on the session's topic: only this petition's.)
        ours = "FROM mailer.emails WHERE kind = 'milestone' AND petition_id = $1"
        await until(
            lambda: db.fetchval(
                f"SELECT count(*) = 1 {ours} AND status = 'sent'", signer.petition_id
            )
        )
        await asyncio.sleep(1.0)  # room for a second copy to show up, if one were coming
        assert await db.fetchval(f"SELECT count(*) {ours}", signer.petition_id) == 1
    [note] = [m for m in smtp.parsed(NOTIFY) if signer.petition_slug in m.as_string()]
    assert note["Subject"] == f"“{signer.petition_title}” reached 1,000 signatures"
    assert "List-Unsubscribe" not in note


# --- volume, with the sender killed and resumed ---------------------------------------------


async def test_a_mailing_survives_a_killed_sender_without_second_copies(
    infra: Infra, topics: None, database: str, smtp: KeepingSmtp
) -> None:
    petition = uuid.uuid4()
    addresses = [f"s{i:05d}@example.test" for i in range(SIZE)]
    unsubscribed = set(addresses[::50])
    settings = settings_for(
        infra, database, smtp.port, mailing_rate_per_second=float(max(SIZE // 4, 50))
    )
    async with app_on(settings) as (client, runtime):
        db: asyncpg.Pool = runtime.require_pool()
        async with db.acquire() as conn, conn.transaction():
            rows: list[Supporter] = []
            for i, address in enumerate(addresses):
                signature = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO mailer.recipients (address_key, unsubscribe_token, "
                    "last_signature_id, last_petition_id, unsubscribed_at) "
                    "VALUES ($1, $2, $3, $4, $5)",
                    address,
                    f"tok{i:05d}{uuid.uuid4().hex[:16]}",
                    signature,
                    petition,
                    None,
                )
                rows.append(
                    Supporter(
                        signature_id=signature,
                        petition_id=petition,
                        address_key=address,
                        recipient=address,
                        first_name=f"N{i}",
                        postcode_area="LS",
                        contact_consent=True,
                        confirmed=True,
                    )
                )
            await supporters.record_supporter(conn, {petition: ("volume", "Volume")}, rows)
            await conn.execute(
                "UPDATE mailer.recipients SET unsubscribed_at = now() "
                "WHERE address_key = ANY($1::text[])",
                sorted(unsubscribed),
            )
        created = await client.post(
            "/api/admin/mailings",
            headers=AUTH,
            json={
                "subject": "Hello {first_name}",
                "body_markdown": "Hi {first_name}",
                "petition": "volume",
            },
        )
        mailing_id = created.json()["id"]
        started = await client.post(f"/api/admin/mailings/{mailing_id}/send", headers=AUTH)
        assert started.json() == {
            "id": mailing_id,
            "recipients": SIZE - len(unsubscribed),
            "skipped": len(unsubscribed),
        }

        async def a_third_sent() -> bool:
            return sum(len(v) for v in smtp.messages.values()) >= SIZE // 3

        await until(a_third_sent)
        # Kill: the sender and the pacer stop dead, whatever they held in memory is lost.
        dispatcher = runtime.dispatcher
        at_kill = dispatcher.unrecorded
        for name in ("dispatcher", "pacer"):
            task = runtime.task(name)
            task.cancel()
            with contextlib.suppress(BaseException):
                await task
        at_kill = max(at_kill, dispatcher.unrecorded)
        delivered_at_kill = sum(len(v) for v in smtp.messages.values())

    # Resumed: a new process on the same database takes the lapsed claims over.
    resumed = settings_for(
        infra, database, smtp.port, mailing_rate_per_second=float(max(SIZE // 4, 50))
    )
    async with app_on(resumed) as (client, _runtime):
        done = await until(lambda: mailing_done(client, mailing_id), timeout=240)

    counts = {a: len(smtp.messages.get(a, [])) for a in addresses}
    seconds = [a for a, n in counts.items() if n > 1]
    print(
        f"\nmailing of {SIZE}: delivered {delivered_at_kill} before the kill, "
        f"{at_kill} unrecorded at the kill, {len(seconds)} second copies, "
        f"progress {done['progress']}"
    )
    assert all(counts[a] == 0 for a in unsubscribed)
    assert all(counts[a] >= 1 for a in addresses if a not in unsubscribed)
    assert all(n <= 2 for n in counts.values())
    assert len(seconds) <= at_kill
    assert done["progress"] == {"sent": SIZE - len(unsubscribed)}
    sample = message_from_bytes(smtp.messages[addresses[1]][0], policy=policy.default)
    assert sample["Subject"] == "Hello N1"
