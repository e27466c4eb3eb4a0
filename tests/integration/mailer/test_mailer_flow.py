"""The mailer end to end: events on the real broker -> emails in the real SMTP sink.

Each test uses its own petition and address (the sink and topics are shared by the
session). "Nothing more arrived" is checked after a marker signature on the same
petition (same partition, so handled after everything before it) has been mailed.
"""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote_plus

from groundswell_contracts.events import (
    EmailSent,
    SignatureConfirmed,
    SignatureDuplicateAttempted,
    SignatureWithdrawn,
    Unsubscribed,
)
from groundswell_contracts.testing import duplicate_of

PUBLIC_BASE_URL = "http://signing.test"
SHARE_BASE_URL = "http://share.test"
UNSUBSCRIBE = re.compile(r"^<http://mailer\.test/unsubscribe/([A-Za-z0-9_-]{16,64})>$")


def header(message: Any, name: str) -> str | None:
    """A header's value; a long one arrives folded, and unfolding leaves leading space."""
    value = message[name]
    return None if value is None else str(value).strip()


async def wait_for_mail(kit: Any, address: str, count: int = 1) -> list[Any]:
    async def arrived() -> list[Any]:
        messages = kit.mail_to(kit.infra.mail_dir, address)
        return messages if len(messages) >= count else []

    return list(await kit.eventually(arrived))


async def drain(kit: Any, mailer: Any, *petition_ids: uuid.UUID) -> None:
    """Wait until everything published so far for these petitions has been handled and
    sent. A marker is taken in after everything before it, but the sender sends several
    emails at once, so its mail can reach the sink before an earlier one's: once it has
    arrived, wait too until no email of these petitions is queued or mid-send (an email
    is marked sent only after the server took it)."""
    markers = [kit.signature(petition_id=pid) for pid in petition_ids]
    for marker in markers:
        await kit.publish(marker)
    for marker in markers:
        await wait_for_mail(kit, marker.email)

    async def nothing_unsent() -> bool:
        unsent = await mailer.db.fetchval(
            "SELECT count(*) FROM mailer.emails "
            "WHERE petition_id = ANY($1::uuid[]) AND status IN ('queued', 'sending')",
            list(petition_ids),
        )
        return unsent == 0

    await kit.eventually(nothing_unsent)


def parts(message: Any) -> tuple[str, str]:
    return (
        message.get_body(("plain",)).get_content(),
        message.get_body(("html",)).get_content(),
    )


async def email_rows(mailer: Any, signature_id: uuid.UUID) -> list[Any]:
    return list(
        await mailer.db.fetch(
            "SELECT kind, sequence, status, attempts, recipient, content::text AS content "
            "FROM mailer.emails WHERE signature_id = $1 ORDER BY kind, sequence",
            signature_id,
        )
    )


async def settled_rows(kit: Any, mailer: Any, signature_id: uuid.UUID) -> list[Any]:
    """The rows once no email is mid-send: outcomes are written in batches, just after
    the server took the message, so a message can arrive a moment before its mark."""

    async def settled() -> list[Any]:
        rows = await email_rows(mailer, signature_id)
        return rows if rows and all(r["status"] != "sending" for r in rows) else []

    return list(await kit.eventually(settled))


async def test_signed_signature_gets_exactly_one_thank_you(mailer: Any, kit: Any) -> None:
    event = kit.signature(name="<b>Zoë</b> O'Brien")
    await kit.publish(event)
    await kit.publish(event)  # redelivered
    await kit.publish(event.again())  # the same signature again, under another event id
    await drain(kit, mailer, event.petition_id)

    messages = kit.mail_to(kit.infra.mail_dir, event.email)
    assert len(messages) == 1
    message = messages[0]
    assert message["Subject"] == "Thank you for signing “Save the <Park> & pond”"
    assert message["From"] == "Groundswell <no-reply@groundswell.test>"
    assert re.match(r"^<[^<>@\s]+@groundswell\.test>$", message["Message-ID"])
    assert message.get_content_type() == "multipart/alternative"
    text, html = parts(message)

    share = f"{SHARE_BASE_URL}/s/{event.share_code}"
    withdraw = f"{PUBLIC_BASE_URL}/withdraw/{event.withdraw_token}"
    for body in (text, html):
        assert share in body
        assert withdraw in body
        assert quote_plus(f"{share}?c=whatsapp") in body
    assert quote_plus(f"{share}?c=facebook") in html
    assert quote_plus(f"{share}?c=x") in html

    # User input is escaped in HTML; only the first word of the name is used.
    assert "&lt;b&gt;Zoë&lt;/b&gt;" in html
    assert "<b>Zoë</b>" not in html
    assert "O'Brien" not in text and "O&#39;Brien" not in html
    assert "Save the &lt;Park&gt; &amp; pond" in html

    match = UNSUBSCRIBE.match(header(message, "List-Unsubscribe"))
    assert match, header(message, "List-Unsubscribe")
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe_url = f"http://mailer.test/unsubscribe/{match.group(1)}"
    assert unsubscribe_url in text and unsubscribe_url in html

    rows = await settled_rows(kit, mailer, event.signature_id)
    assert [(r["kind"], r["status"], r["attempts"]) for r in rows] == [("thank_you", "sent", 1)]
    # Once sent, the address and the tokens are no longer kept with the email.
    assert rows[0]["recipient"] is None and rows[0]["content"] == "{}"

    async def sent_events() -> list[Any]:
        events = await kit.topic_events(kit.infra.kafka_bootstrap, "email-events")
        return [
            e for e in events if isinstance(e, EmailSent) and e.signature_id == event.signature_id
        ]

    sent = await kit.eventually(sent_events)
    assert [(e.kind, e.petition_id) for e in sent] == [("thank_you", event.petition_id)]


async def test_pending_gets_confirmation_then_thank_you_on_confirmed(mailer: Any, kit: Any) -> None:
    token = f"confirm-{uuid.uuid4().hex}"
    event = kit.signature(status="pending", confirmation_token=token)
    await kit.publish(event)
    [confirmation] = await wait_for_mail(kit, event.email)

    assert confirmation["Subject"] == "Please confirm your signature on “Save the <Park> & pond”"
    text, html = parts(confirmation)
    confirm_url = f"{PUBLIC_BASE_URL}/confirm/{token}"
    assert confirm_url in text and confirm_url in html
    assert "button" in text and "button" in html
    # A confirmation is not list mail and ignores unsubscribes: no unsubscribe header.
    assert confirmation["List-Unsubscribe"] is None
    assert event.withdraw_token not in text

    await drain(kit, mailer, event.petition_id)
    early = kit.mail_to(kit.infra.mail_dir, event.email)
    assert len(early) == 1, "thank-you sent before confirmation"

    confirmed = SignatureConfirmed(petition_id=event.petition_id, signature_id=event.signature_id)
    await kit.publish(confirmed)
    await kit.publish(confirmed)
    messages = await wait_for_mail(kit, event.email, 2)
    await drain(kit, mailer, event.petition_id)
    messages = kit.mail_to(kit.infra.mail_dir, event.email)
    assert [m["Subject"] for m in messages] == [
        "Please confirm your signature on “Save the <Park> & pond”",
        "Thank you for signing “Save the <Park> & pond”",
    ]
    thank_text, _ = parts(messages[1])
    assert f"{SHARE_BASE_URL}/s/{event.share_code}" in thank_text
    assert f"{PUBLIC_BASE_URL}/withdraw/{event.withdraw_token}" in thank_text
    assert messages[1]["List-Unsubscribe"] is not None


async def test_fraudulent_signature_gets_nothing(mailer: Any, kit: Any) -> None:
    event = kit.signature(status="fraudulent")
    await kit.publish(event)
    await drain(kit, mailer, event.petition_id)
    assert kit.mail_to(kit.infra.mail_dir, event.email) == []
    assert await email_rows(mailer, event.signature_id) == []


async def test_withdrawn_before_confirmation_cancels_the_thank_you(mailer: Any, kit: Any) -> None:
    event = kit.signature(status="pending", confirmation_token=f"c-{uuid.uuid4().hex}")
    await kit.publish(event)
    await wait_for_mail(kit, event.email)
    await kit.publish(
        SignatureWithdrawn(petition_id=event.petition_id, signature_id=event.signature_id)
    )
    await kit.publish(
        SignatureConfirmed(petition_id=event.petition_id, signature_id=event.signature_id)
    )
    await drain(kit, mailer, event.petition_id)
    assert len(kit.mail_to(kit.infra.mail_dir, event.email)) == 1
    rows = await settled_rows(kit, mailer, event.signature_id)
    assert [(r["kind"], r["status"]) for r in rows] == [
        ("confirmation", "sent"),
        ("thank_you", "cancelled"),
    ]
    assert rows[1]["recipient"] is None


async def test_already_signed_notice_is_capped_per_day(mailer: Any, kit: Any) -> None:
    original = kit.signature()
    await kit.publish(original)
    await wait_for_mail(kit, original.email)
    start = datetime.now(UTC)

    def attempt(after: timedelta) -> SignatureDuplicateAttempted:
        return duplicate_of(
            original,
            email=original.email.upper(),  # the same mailbox, typed differently
            name="Zoë",
            occurred_at=start + after,
        )

    for after in (timedelta(0), timedelta(minutes=5), timedelta(hours=23, minutes=59)):
        await kit.publish(attempt(after))
    await drain(kit, mailer, original.petition_id)
    messages = kit.mail_to(kit.infra.mail_dir, original.email)
    assert [m["Subject"] for m in messages] == [
        "Thank you for signing “Save the <Park> & pond”",
        "You have already signed “Save the <Park> & pond”",
    ]
    notice = messages[1]
    assert UNSUBSCRIBE.match(header(notice, "List-Unsubscribe"))
    assert notice["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    text, _ = parts(notice)
    assert f"{SHARE_BASE_URL}/s/{original.share_code}" in text

    # A day after the last notice, the owner may be told again.
    await kit.publish(attempt(timedelta(hours=24, seconds=1)))
    await drain(kit, mailer, original.petition_id)
    assert len(kit.mail_to(kit.infra.mail_dir, original.email)) == 3


async def test_one_click_unsubscribe_stops_thank_yous_at_once(mailer: Any, kit: Any) -> None:
    first = kit.signature()
    await kit.publish(first)
    [thank_you] = await wait_for_mail(kit, first.email)
    match = UNSUBSCRIBE.match(header(thank_you, "List-Unsubscribe"))
    assert match
    path = f"/unsubscribe/{match.group(1)}"

    page = await mailer.client.get(path)
    assert page.status_code == 200
    assert '<form method="post"' in page.text and "<button" in page.text
    assert page.headers["cache-control"] == "no-store"
    unsubscribed_at = await mailer.db.fetchval(
        "SELECT unsubscribed_at FROM mailer.recipients WHERE address_key = $1", first.email.lower()
    )
    assert unsubscribed_at is None, "a GET must not unsubscribe (link scanners)"

    # What Gmail and Yahoo send (RFC 8058).
    one_click = await mailer.client.post(
        path,
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert one_click.status_code == 200
    again = await mailer.client.post(path)
    assert again.status_code == 200
    assert "unsubscribed" in (await mailer.client.get(path)).text

    async def unsubscribed_events() -> list[Any]:
        events = await kit.topic_events(kit.infra.kafka_bootstrap, "email-events")
        return [
            e
            for e in events
            if isinstance(e, Unsubscribed) and e.signature_id == first.signature_id
        ]

    events = await kit.eventually(unsubscribed_events)
    assert len(events) == 1 and events[0].petition_id == first.petition_id

    # Another petition: no thank-you; a confirmation is still sent (the signature needs it).
    second = kit.signature(email=first.email.upper())
    third = kit.signature(
        email=first.email, status="pending", confirmation_token=f"c-{uuid.uuid4().hex}"
    )
    await kit.publish(second)
    await kit.publish(third)
    await drain(kit, mailer, second.petition_id, third.petition_id)
    subjects = [m["Subject"] for m in kit.mail_to(kit.infra.mail_dir, first.email)]
    assert subjects == [
        "Thank you for signing “Save the <Park> & pond”",
        "Please confirm your signature on “Save the <Park> & pond”",
    ]
    rows = await settled_rows(kit, mailer, second.signature_id)
    assert [(r["kind"], r["status"]) for r in rows] == [("thank_you", "suppressed")]


async def test_unusable_events_are_dead_lettered_and_the_stream_moves_on(
    mailer: Any, kit: Any
) -> None:
    petition_id = uuid.uuid4()
    malformed = (
        b'{"event_type": "SignatureCreated", "petition_id": "%s"}' % str(petition_id).encode()
    )
    await kit.producer.send_and_wait("signatures", malformed, key=str(petition_id).encode())
    # Pending, but without the token its confirmation must carry: only a replay sends that,
    # for a signature that can no longer be confirmed. Nothing to send, nothing to dead-letter.
    tokenless = kit.signature(petition_id=petition_id, status="pending")
    await kit.publish(tokenless)
    await drain(kit, mailer, petition_id)

    async def dead_letters() -> list[Any]:
        records = await kit.topic_records(kit.infra.kafka_bootstrap, "mailer.dlq")
        return [r for r in records if r.key == str(petition_id).encode()]

    records = await kit.eventually(dead_letters)
    assert [r.value for r in records] == [malformed]
    assert dict(records[0].headers)["dlq_error"].decode().startswith("invalid event")
    assert kit.mail_to(kit.infra.mail_dir, tokenless.email) == []
    handled = await mailer.db.fetchval(
        "SELECT count(*) FROM mailer.processed_events WHERE event_id = $1", tokenless.event_id
    )
    assert handled == 1  # claimed, so a redelivery is dropped by id


async def test_unknown_unsubscribe_token_is_a_404_page(mailer: Any) -> None:
    for method in ("GET", "POST"):
        response = await mailer.client.request(method, "/unsubscribe/" + "A" * 32)
        assert response.status_code == 404
        assert "not recognised" in response.text
        assert response.headers["content-type"].startswith("text/html")
    assert (await mailer.client.post("/unsubscribe/%3Cscript%3E")).status_code == 404


async def test_ops_endpoints(mailer: Any) -> None:
    assert (await mailer.client.get("/healthz")).json() == {"status": "ok"}
    ready = await mailer.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {
        "database": True,
        "broker": True,
        "outbox_relay": True,
        "campaign_consumer": True,
        "consumer": True,
    }
    metrics = await mailer.client.get("/metrics")
    assert "groundswell_mailer_emails_total" in metrics.text
    assert "/unsubscribe/{token}" in (await mailer.client.get("/openapi.json")).text
