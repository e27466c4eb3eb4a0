"""Privacy requests and erasure in signing (the flow end to end is tests/e2e/test_privacy.py)."""

from __future__ import annotations

from typing import Any

from groundswell_signing.service_layer.replay import replay_all

from .conftest import ADMIN, SigningHarness


async def requests_queued(signing: SigningHarness) -> list[dict[str, Any]]:
    return await signing.outbox_events("PrivacyRequested")


async def test_a_request_answers_the_same_and_is_capped_per_address(
    signing: SigningHarness,
) -> None:
    body = {"email": "Ada@Example.org", "kind": "erasure"}
    answers = [await signing.client.post("/api/privacy/requests", json=body) for _ in range(4)]
    assert {a.status_code for a in answers} == {202}
    assert len({a.text for a in answers}) == 1
    # Three links a day at most; the fourth is answered alike but sends nothing.
    sealed = await requests_queued(signing)
    assert len(sealed) == 3
    for event in sealed:
        assert event["email"] == "Ada@Example.org"  # opened with its key: it is sealed...
        assert "Example.org" not in event["contact"]["ciphertext"]  # ...on the wire

    bad = await signing.client.post(
        "/api/privacy/requests", json={"email": "not an address", "kind": "access"}
    )
    assert bad.status_code == 422 and "email" in bad.text
    wrong_kind = await signing.client.post(
        "/api/privacy/requests", json={"email": "ada@example.org", "kind": "everything"}
    )
    assert wrong_kind.status_code == 422


async def test_a_get_changes_nothing_and_a_used_link_is_refused(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    assert (await signing.sign(petition["slug"], email="grace@example.org")).status_code == 202
    await signing.client.post(
        "/api/privacy/requests", json={"email": "grace@example.org", "kind": "erasure"}
    )
    [request] = await requests_queued(signing)
    link = f"/privacy/requests/{request['verification_token']}"
    for _ in range(2):
        page = await signing.client.get(link)
        assert page.status_code == 200 and "Erase my data" in page.text
        assert page.headers["cache-control"] == "no-store"
    held = await signing.pool.fetchval(
        "SELECT count(*) FROM signing.signatures WHERE email = 'grace@example.org'"
    )
    assert held == 1

    done = await signing.client.post(link)
    assert done.status_code == 200, done.text
    assert (
        await signing.pool.fetchval(
            "SELECT count(*) FROM signing.signatures WHERE erased_at IS NOT NULL "
            "AND email IS NULL AND name IS NULL AND ip IS NULL AND data_key IS NULL"
        )
        == 1
    )
    assert (await signing.client.post(link)).status_code == 404
    assert (await signing.client.get(link)).status_code == 404
    # The request forgot the address and its key; its key is shredded for the mailer.
    kept = await signing.pool.fetchrow(
        "SELECT email_canonical, token_hash, data_key FROM signing.privacy_requests"
    )
    assert tuple(kept) == (None, None, None)
    shredded = {e["key_id"] for e in await signing.outbox_events("DataKeyShredded")}
    assert request["request_id"] in shredded


async def test_admin_erasure_and_a_replay_afterwards(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=True)
    for email in ("erase-me@example.org", "keep-me@example.org"):
        assert (await signing.sign(petition["slug"], email=email)).status_code == 202
    bad = await signing.client.post(
        "/api/admin/privacy/erasure", json={"email": "nope"}, headers=ADMIN
    )
    assert bad.status_code == 422
    refused = await signing.client.post(
        "/api/admin/privacy/erasure", json={"email": "erase-me@example.org"}
    )
    assert refused.status_code == 401
    erased = await signing.client.post(
        "/api/admin/privacy/erasure", json={"email": "ERASE-ME@example.org"}, headers=ADMIN
    )
    assert erased.status_code == 200 and erased.json()["erased_signatures"] == 1
    again = await signing.client.post(
        "/api/admin/privacy/erasure", json={"email": "erase-me@example.org"}, headers=ADMIN
    )
    assert again.json()["erased_signatures"] == 0
    # Still pending when erased: it can never be confirmed now, so it is withdrawn.
    [withdrawn] = await signing.outbox_events("SignatureWithdrawn")
    [erasure] = await signing.outbox_events("SignatureErased")
    assert withdrawn["signature_id"] == erasure["signature_id"]
    assert erasure["counted"] is False

    before = len(await signing.outbox_events())
    await replay_all(signing.pool)
    replayed = (await signing.outbox_events())[before:]
    erased_id = erasure["signature_id"]
    about_erased = [e["event_type"] for e in replayed if e.get("signature_id") == erased_id]
    assert about_erased == ["SignatureCreated", "SignatureWithdrawn", "SignatureErased"]
    [created] = [
        e
        for e in replayed
        if e["event_type"] == "SignatureCreated" and e["signature_id"] == erased_id
    ]
    assert created["contact"] is None  # nothing left to seal
    keys = [e["key_id"] for e in replayed if e["event_type"] == "DataKeyIssued"]
    assert erased_id not in keys and len(keys) == 1
    audit = await signing.pool.fetch("SELECT action, row_count FROM signing.audit_log")
    assert [(r["action"], r["row_count"]) for r in audit] == [("erasure", 1), ("erasure", 0)]
