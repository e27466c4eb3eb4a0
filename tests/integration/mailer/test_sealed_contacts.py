"""Sealed contact details: keys arriving late, confirmations meanwhile, shredding, v1 events.

The real mailer on the real broker and PostgreSQL; the events are what signing's outbox
publishes (groundswell_contracts.testing builds them the same way).
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from groundswell_contracts.events import (
    DataKeyShredded,
    SignatureConfirmed,
    encode,
    topic_for,
)

from .test_mailer_flow import drain, email_rows, settled_rows, wait_for_mail


async def test_an_event_waits_for_its_key_then_is_mailed(mailer: Any, kit: Any) -> None:
    event = kit.signature()
    await kit.publish(event.event)  # the contact, sealed; its key not yet published
    waiting = await kit.eventually(
        lambda: mailer.db.fetchval(
            "SELECT count(*) FROM mailer.sealed_waiting WHERE key_id = $1", event.signature_id
        )
    )
    assert waiting == 1
    assert await email_rows(mailer, event.signature_id) == []

    await kit.publish(event.key)
    [message] = await wait_for_mail(kit, event.email)
    assert message["Subject"].startswith("Thank you for signing")
    assert (
        await mailer.db.fetchval(
            "SELECT count(*) FROM mailer.sealed_waiting WHERE key_id = $1", event.signature_id
        )
        == 0
    )


async def test_a_confirmation_while_the_contact_waits_releases_the_thank_you(
    mailer: Any, kit: Any
) -> None:
    event = kit.signature(status="pending", confirmation_token=f"c-{uuid.uuid4().hex}")
    await kit.publish(event.event)
    await kit.publish(
        SignatureConfirmed(petition_id=event.petition_id, signature_id=event.signature_id)
    )
    await drain(kit, mailer, event.petition_id)  # both handled: the contact still waits
    assert await email_rows(mailer, event.signature_id) == []

    await kit.publish(event.key)
    # Confirmed already: no confirmation email, the thank-you goes at once.
    [message] = await wait_for_mail(kit, event.email)
    assert message["Subject"].startswith("Thank you for signing")
    rows = await settled_rows(kit, mailer, event.signature_id)
    assert [(r["kind"], r["status"]) for r in rows] == [("thank_you", "sent")]


async def test_shredding_a_key_forgets_the_signer(mailer: Any, kit: Any) -> None:
    event = kit.signature()
    await kit.publish(event)
    await wait_for_mail(kit, event.email)
    await settled_rows(kit, mailer, event.signature_id)
    address = event.email.lower()
    assert await mailer.db.fetchval(
        "SELECT count(*) FROM mailer.recipients WHERE address_key = $1", address
    )

    await kit.publish(DataKeyShredded(key_id=event.signature_id))

    async def forgotten() -> bool:
        held = await mailer.db.fetchrow(
            "SELECT (SELECT count(*) FROM mailer.emails WHERE signature_id = $1) AS emails, "
            "(SELECT count(*) FROM mailer.recipients WHERE address_key = $2) AS recipients, "
            "(SELECT data_key IS NULL FROM mailer.data_keys WHERE key_id = $1) AS shredded",
            event.signature_id,
            address,
        )
        return bool(held["emails"] == 0 and held["recipients"] == 0 and held["shredded"])

    assert await kit.eventually(forgotten)
    # The same contact coming again (a replay from before the erasure) is not mailed.
    await kit.publish(event.again())
    await drain(kit, mailer, event.petition_id)
    assert await email_rows(mailer, event.signature_id) == []
    assert len(kit.mail_to(kit.infra.mail_dir, event.email)) == 1


async def test_a_version_1_event_with_the_contact_in_clear_is_still_mailed(
    mailer: Any, kit: Any, producer: Any
) -> None:
    """Records written before contacts were sealed stay on the topics; the upcaster
    lifts them, and the mailer still writes to the signer."""
    current = kit.signature().event
    document = json.loads(encode(current))
    document.pop("contact")
    address = f"v1-{uuid.uuid4().hex[:8]}@example.test"
    document.update(schema_version=1, email=address, name="Ada Lovelace", withdraw_token="wd-v1")
    await producer.send_and_wait(
        topic_for(current).value, json.dumps(document).encode(), key=current.key.encode()
    )
    [message] = await wait_for_mail(kit, address)
    assert "Ada" in message.get_body(("plain",)).get_content()
