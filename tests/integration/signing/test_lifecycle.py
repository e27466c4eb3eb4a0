"""Confirmation, withdrawal, invalidation, export and replay."""

from __future__ import annotations

import csv
import io

from groundswell_signing.service_layer.replay import replay_all

from .conftest import ADMIN, SigningHarness


async def pending_signature(
    signing: SigningHarness, **sign: object
) -> tuple[str, dict[str, object]]:
    petition = await signing.create_petition(requires_confirmation=True)
    assert (await signing.sign(petition["slug"], **sign)).status_code == 202
    created = (await signing.outbox_events("SignatureCreated"))[-1]
    return petition["slug"], created


async def test_scanner_get_confirms_nothing_and_post_confirms_once(signing: SigningHarness) -> None:
    slug, created = await pending_signature(signing)
    url = f"/confirm/{created['confirmation_token']}"
    for _ in range(3):  # link scanners fetch, sometimes repeatedly
        page = await signing.client.get(url)
        assert page.status_code == 200 and "<button" in page.text
    assert await signing.pool.fetchval("SELECT confirmed_at FROM signing.signatures") is None
    assert await signing.outbox_events("SignatureConfirmed") == []

    confirmed = await signing.client.post(url)
    assert confirmed.status_code == 200 and "confirmed" in confirmed.text
    assert await signing.pool.fetchval("SELECT confirmed_at FROM signing.signatures") is not None
    [event] = await signing.outbox_events("SignatureConfirmed")
    assert event["signature_id"] == created["signature_id"]
    # Single use: the token is gone.
    assert (await signing.client.post(url)).status_code == 404
    assert (await signing.client.get(url)).status_code == 404
    tally = await signing.client.get(f"/api/admin/petitions/{slug}/tally", headers=ADMIN)
    assert tally.json() == {"signatures": 1, "pending": 0}


async def test_expired_and_unknown_tokens(signing: SigningHarness) -> None:
    _, created = await pending_signature(signing)
    await signing.pool.execute(
        "UPDATE signing.signatures SET confirmation_expires_at = now() - interval '1 second'"
    )
    assert (
        await signing.client.post(f"/confirm/{created['confirmation_token']}")
    ).status_code == 404
    assert (await signing.client.post("/confirm/made-up")).status_code == 404


async def test_tokens_are_stored_hashed(signing: SigningHarness) -> None:
    _, created = await pending_signature(signing)
    row = await signing.pool.fetchrow("SELECT * FROM signing.signatures")
    stored = b"".join(bytes(v) for v in row.values() if isinstance(v, (bytes, bytearray)))
    for token in (created["confirmation_token"], created["withdraw_token"]):
        assert isinstance(token, str) and len(token) >= 40
        assert token.encode() not in stored
        assert token not in {str(v) for v in row.values()}


async def test_withdraw(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    await signing.sign(petition["slug"])
    [created] = await signing.outbox_events("SignatureCreated")
    url = f"/withdraw/{created['withdraw_token']}"
    assert (await signing.client.get(url)).status_code == 200
    assert await signing.pool.fetchval("SELECT withdrawn_at FROM signing.signatures") is None
    assert (await signing.client.post(url)).status_code == 200
    assert (await signing.client.post(url)).status_code == 404
    [event] = await signing.outbox_events("SignatureWithdrawn")
    assert event["signature_id"] == created["signature_id"]
    tally = await signing.client.get(
        f"/api/admin/petitions/{petition['slug']}/tally", headers=ADMIN
    )
    assert tally.json() == {"signatures": 0, "pending": 0}


async def test_invalidation_by_domain_and_postcode(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    for i in range(3):
        await signing.sign(slug, email=f"bot{i}@spam.example", postcode="E1 6AN")
    await signing.sign(slug, email="real@example.org", postcode="E1 6AN")
    await signing.sign(slug, email="other@example.org", postcode="OX1 2JD")
    url = f"/api/admin/petitions/{slug}/invalidations"
    by_domain = await signing.client.post(url, json={"email_domain": "spam.example"}, headers=ADMIN)
    assert by_domain.json() == {"invalidated": 3}
    by_postcode = await signing.client.post(url, json={"postcode": "e16an"}, headers=ADMIN)
    assert by_postcode.json() == {"invalidated": 1}
    assert len(await signing.outbox_events("SignatureInvalidated")) == 4
    tally = await signing.client.get(f"/api/admin/petitions/{slug}/tally", headers=ADMIN)
    assert tally.json()["signatures"] == 1
    by_ip = await signing.client.post(url, json={"ip": "203.0.113.0/24"}, headers=ADMIN)
    assert by_ip.json() == {"invalidated": 1}  # the test client's address
    assert (await signing.client.post(url, json={}, headers=ADMIN)).status_code == 422
    bad_ip = await signing.client.post(url, json={"ip": "not-an-ip"}, headers=ADMIN)
    assert bad_ip.status_code == 422


async def test_export_is_spreadsheet_safe(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    await signing.sign(slug, name="Normal Person")
    # Names are validated at the door, so plant hostile cells straight in the database:
    # the export must still neutralise them.
    await signing.sign(slug, name="Later Edited", email="edited@example.org", postcode="SW1A 1AA")
    await signing.pool.execute(
        "UPDATE signing.signatures SET name = '=cmd|'' /C calc''!A0', postcode = '+44' "
        "WHERE email = 'edited@example.org'"
    )
    await signing.sign(
        slug, name="Tab Start", email="tab@example.org", country="FR", postcode="\t75001"
    )
    response = await signing.client.get(
        f"/api/admin/petitions/{slug}/signatures.csv", headers=ADMIN
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["name", "postcode", "country", "signed_at"]
    assert len(rows) == 4
    for row in rows[1:]:
        for cell in row:
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), row
    assert "'=cmd|' /C calc'!A0" in {r[0] for r in rows}
    assert (
        await signing.client.get(f"/api/admin/petitions/{slug}/signatures.csv")
    ).status_code == 401


async def test_replay_requeues_the_same_events(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=True)
    slug = petition["slug"]
    await signing.sign(slug, email="one@example.org")
    await signing.sign(slug, email="two@example.org")
    [first, _] = await signing.outbox_events("SignatureCreated")
    await signing.client.post(f"/confirm/{first['confirmation_token']}")
    original = {e["event_id"]: e["event_type"] for e in await signing.outbox_events()}

    queued = await replay_all(signing.pool)
    # Petition state, two data keys (each before its signature), two created, one confirmed.
    assert queued == 6
    events = await signing.outbox_events()
    replayed = events[len(original) :]
    assert {e["event_id"]: e["event_type"] for e in replayed} == original
    created = [e for e in replayed if e["event_type"] == "SignatureCreated"]
    tokens = {e["signature_id"]: e.get("confirmation_token") for e in created}
    # The confirmed signer needs no token; the one still waiting gets a second valid one,
    # so a mailer that never saw the first event can still send the confirmation.
    assert tokens[first["signature_id"]] is None
    [second] = [e for e in await signing.outbox_events("SignatureCreated")][1:2]
    again = tokens[second["signature_id"]]
    assert again and again != second["confirmation_token"]
    for token in (second["confirmation_token"], again):  # both links work...
        assert (await signing.client.get(f"/confirm/{token}")).status_code == 200
    assert (await signing.client.post(f"/confirm/{again}")).status_code == 200
    # ...once: confirming with either uses both up.
    assert (
        await signing.client.post(f"/confirm/{second['confirmation_token']}")
    ).status_code == 404
