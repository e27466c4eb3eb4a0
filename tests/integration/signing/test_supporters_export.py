"""The supporters export: who may be emailed, streamed from PostgreSQL, and audited."""

from __future__ import annotations

import csv
import hashlib
import io
from datetime import UTC, datetime

import pytest
from groundswell_signing.entrypoints.http import supporters
from groundswell_signing.service_layer.erasure import erase_signatures

from .conftest import ADMIN, ADMIN_TOKEN, SigningHarness

FINGERPRINT = hashlib.sha256(ADMIN_TOKEN.encode()).hexdigest()[:8]


async def _signature_id(signing: SigningHarness, email: str) -> object:
    return await signing.pool.fetchval("SELECT id FROM signing.signatures WHERE email = $1", email)


async def test_only_consenting_live_supporters_are_exported_and_audited(
    signing: SigningHarness, monkeypatch: pytest.MonkeyPatch
) -> None:
    # One row per fetch from the cursor: the file is built from many pages.
    monkeypatch.setattr(supporters, "PAGE", 1)
    petition = await signing.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    people = {
        "keen": {"email": "keen@example.org", "name": "Keen Supporter"},
        "keen2": {"email": "keen2@example.org", "name": "Second Keen"},
        "quiet": {"email": "quiet@example.org", "contact_consent": False},
        "spam": {"email": "bot@spam.example"},
        "erased": {"email": "erased@example.org"},
        "withdrawn": {"email": "withdrawn@example.org"},
    }
    for person in people.values():
        assert (await signing.sign(slug, **person)).status_code == 202
    # Someone else's petition, and a consenting signer still to confirm: neither belongs.
    other = await signing.create_petition()
    assert (await signing.sign(other["slug"], email="elsewhere@example.org")).status_code == 202
    pending = await signing.create_petition(requires_confirmation=True)
    assert (await signing.sign(pending["slug"], email="pending@example.org")).status_code == 202

    invalidated = await signing.client.post(
        f"/api/admin/petitions/{slug}/invalidations",
        json={"email_domain": "spam.example"},
        headers=ADMIN,
    )
    assert invalidated.json() == {"invalidated": 1}
    async with signing.pool.acquire() as conn, conn.transaction():
        erased_id = await _signature_id(signing, "erased@example.org")
        assert await erase_signatures(conn, [erased_id], counted=True, now=datetime.now(UTC))
    await signing.pool.execute(
        "UPDATE signing.signatures SET withdrawn_at = now() WHERE email = $1",
        "withdrawn@example.org",
    )
    # A name a spreadsheet would run as a formula (the form refuses one; older rows or an
    # import might hold one): it comes out as text.
    await signing.pool.execute(
        "UPDATE signing.signatures SET name = '=HYPERLINK(\"x\")' WHERE email = $1",
        "keen2@example.org",
    )

    response = await signing.client.get(
        f"/api/admin/petitions/{slug}/supporters.csv", headers=ADMIN
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert f'filename="{slug}-supporters.csv"' in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0] == ["email", "name", "consent_wording_version", "consent_at"]
    body = {row[0]: row for row in rows[1:]}
    assert set(body) == {"keen@example.org", "keen2@example.org"}
    version = signing.settings.consent_wording_version
    assert body["keen@example.org"][1:3] == ["Keen Supporter", version]
    assert datetime.fromisoformat(body["keen@example.org"][3]).tzinfo is not None
    assert body["keen2@example.org"][1] == '\'=HYPERLINK("x")'

    audit = await signing.pool.fetch(
        "SELECT who, action, petition_slug, row_count, at FROM signing.audit_log "
        "WHERE action = 'supporters_export'"
    )
    assert [(a["who"], a["petition_slug"], a["row_count"]) for a in audit] == [
        (FINGERPRINT, slug, 2)
    ]
    assert ADMIN_TOKEN not in str(dict(audit[0]))


async def test_the_delivery_export_is_audited_too(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    for i in range(3):
        assert (await signing.sign(petition["slug"], email=f"s{i}@example.org")).status_code == 202
    response = await signing.client.get(
        f"/api/admin/petitions/{petition['slug']}/signatures.csv", headers=ADMIN
    )
    assert response.status_code == 200 and len(response.text.splitlines()) == 4
    row = await signing.pool.fetchrow(
        "SELECT who, petition_slug, row_count FROM signing.audit_log "
        "WHERE action = 'signatures_export'"
    )
    assert dict(row) == {"who": FINGERPRINT, "petition_slug": petition["slug"], "row_count": 3}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}])
async def test_supporters_export_needs_the_token(
    signing: SigningHarness, headers: dict[str, str]
) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    assert (await signing.sign(petition["slug"])).status_code == 202
    response = await signing.client.get(
        f"/api/admin/petitions/{petition['slug']}/supporters.csv", headers=headers
    )
    assert response.status_code == 401
    assert "example.org" not in response.text
    assert await signing.pool.fetchval("SELECT count(*) FROM signing.audit_log") == 0


async def test_unknown_petition_is_404_and_not_audited(signing: SigningHarness) -> None:
    response = await signing.client.get("/api/admin/petitions/nope/supporters.csv", headers=ADMIN)
    assert response.status_code == 404
    assert await signing.pool.fetchval("SELECT count(*) FROM signing.audit_log") == 0
