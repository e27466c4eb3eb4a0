from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest

from .conftest import SigningHarness


async def count_rows(signing: SigningHarness, slug: str) -> int:
    return int(
        await signing.pool.fetchval(
            "SELECT count(*) FROM signing.signatures s JOIN signing.petitions p "
            "ON p.id = s.petition_id WHERE p.slug = $1",
            slug,
        )
    )


async def test_signature_is_recorded_with_consent_and_event(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    response = await signing.sign(petition["slug"], postcode="ox12jd", source="newsletter")
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "signed"
    assert body["share_url"] == f"{signing.settings.public_base_url}/p/{petition['slug']}"
    row = await signing.pool.fetchrow("SELECT * FROM signing.signatures")
    assert row["postcode"] == "OX1 2JD" and row["postcode_area"] == "OX"
    assert row["consent_wording_version"] == signing.settings.consent_wording_version
    assert row["contact_consent"] is True and row["consent_at"] is not None
    [event] = await signing.outbox_events("SignatureCreated")
    assert event["status"] == "signed" and event["postcode_area"] == "OX"
    assert event["source"] == "newsletter" and event["name"] == "Ada"
    assert event["share_code"] not in response.text  # the personal link goes by email only
    assert event["_correlation_id"]  # the request id travels with the event


async def test_pending_when_confirmation_required(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=True)
    response = await signing.sign(petition["slug"])
    assert response.json()["status"] == "pending_confirmation"
    [event] = await signing.outbox_events("SignatureCreated")
    assert event["status"] == "pending" and event["confirmation_token"]


BAD_FIELDS: list[tuple[str, dict[str, Any]]] = [
    ("name", {"name": ""}),
    ("name", {"name": "x" * 10_000}),
    ("name", {"name": '=HYPERLINK("http://evil")'}),
    ("name", {"name": "Buy pills at www.example.com"}),
    ("name", {"name": 42}),
    ("email", {"email": "not-an-email"}),
    ("email", {"email": "a@b"}),
    ("email", {"email": ["a@example.org"]}),
    ("postcode", {"postcode": "NOT A POSTCODE"}),
    ("postcode", {"postcode": None}),
    ("country", {"country": "XX"}),
    ("contact_consent", {"contact_consent": "yes"}),
    ("ref", {"ref": "<script>"}),
]


@pytest.mark.parametrize(("field", "change"), BAD_FIELDS)
async def test_each_bad_field_is_named(
    signing: SigningHarness, field: str, change: dict[str, Any]
) -> None:
    petition = await signing.create_petition()
    response = await signing.sign(petition["slug"], **change)
    assert response.status_code == 422, response.text
    named = {d["loc"][-1] for d in response.json()["detail"]}
    assert field in named
    assert all(d["msg"] for d in response.json()["detail"])
    assert await count_rows(signing, petition["slug"]) == 0


async def test_missing_fields_are_all_named(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    response = await signing.client.post(f"/api/petitions/{petition['slug']}/signatures", json={})
    assert response.status_code == 422
    named = {d["loc"][-1] for d in response.json()["detail"]}
    assert {"name", "email", "contact_consent"} <= named


async def test_several_domain_errors_at_once(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    response = await signing.sign(petition["slug"], name="@admin", email="nope", postcode="??")
    assert {d["loc"][-1] for d in response.json()["detail"]} == {"name", "email", "postcode"}


async def test_not_json_and_oversize_bodies(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    url = f"/api/petitions/{petition['slug']}/signatures"
    garbage = await signing.client.post(
        url, content=b"{not json", headers={"content-type": "application/json"}
    )
    assert garbage.status_code == 422
    huge = await signing.client.post(url, json={"name": "x" * 50_000, "email": "a@example.org"})
    assert huge.status_code == 413
    assert "too large" in huge.json()["detail"]


async def test_unknown_petition_is_404(signing: SigningHarness) -> None:
    response = await signing.sign("no-such-petition")
    assert response.status_code == 404
    assert "no-such-petition" in response.json()["detail"]


async def test_disposable_email_is_refused(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    response = await signing.sign(petition["slug"], email="someone@mailinator.com")
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "email"]


async def test_fifty_concurrent_identical_signatures_count_once(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    email = f"same-{uuid.uuid4().hex[:6]}@example.org"
    responses = await asyncio.gather(
        *(signing.sign(petition["slug"], email=email) for _ in range(50))
    )
    assert {r.status_code for r in responses} == {202}
    assert len({r.text for r in responses}) == 1  # every caller gets the same answer
    assert await count_rows(signing, petition["slug"]) == 1
    assert len(await signing.outbox_events("SignatureCreated")) == 1
    assert len(await signing.outbox_events("SignatureDuplicateAttempted")) == 49


async def test_gmail_variants_are_one_person(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    variants = [
        "Jane.Doe@gmail.com",
        "janedoe@gmail.com",
        "jane.doe+petitions@googlemail.com",
        "JANEDOE+x@GMAIL.COM",
    ]
    answers = [await signing.sign(petition["slug"], email=v) for v in variants]
    assert [a.status_code for a in answers] == [202] * 4
    assert len({a.json()["status"] for a in answers}) == 1
    assert await count_rows(signing, petition["slug"]) == 1
    stored = await signing.pool.fetchval("SELECT email FROM signing.signatures")
    assert stored == "Jane.Doe@gmail.com"  # what the person typed


async def test_duplicate_tells_the_owner_not_the_caller(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=True)
    first = await signing.sign(petition["slug"], email="owner@example.org")
    second = await signing.sign(petition["slug"], email="Owner@Example.org", name="Someone Else")
    assert first.status_code == second.status_code == 202
    assert first.json()["status"] == second.json()["status"] == "pending_confirmation"
    [duplicate] = await signing.outbox_events("SignatureDuplicateAttempted")
    assert duplicate["email"] == "Owner@Example.org"


async def test_public_petition_json(signing: SigningHarness) -> None:
    petition = await signing.create_petition(goal=500)
    response = await signing.client.get(f"/api/petitions/{petition['slug']}")
    assert response.status_code == 200
    body = response.json()
    assert body["goal"] == 500 and body["accepting_signatures"] is True
    assert "organiser_email" not in body


async def test_cors_allow_list(signing: SigningHarness) -> None:
    petition = await signing.create_petition(cors_origins=["https://campaign.example"])
    url = f"/api/petitions/{petition['slug']}/signatures"
    allowed = await signing.client.options(
        url, headers={"Origin": "https://campaign.example", "Access-Control-Request-Method": "POST"}
    )
    assert allowed.headers["access-control-allow-origin"] == "https://campaign.example"
    other = await signing.client.options(
        url, headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"}
    )
    assert "access-control-allow-origin" not in other.headers
    signed = await signing.client.post(
        url,
        json={
            "name": "Cors Person",
            "email": "cors@example.org",
            "postcode": "SW1A 1AA",
            "contact_consent": False,
        },
        headers={"Origin": "https://campaign.example"},
    )
    assert signed.headers["access-control-allow-origin"] == "https://campaign.example"


async def test_hostile_slugs_are_404_not_500(signing: SigningHarness) -> None:
    for slug in ["a%00b", "%E2%80%AE", "UPPER", "x" * 300]:
        assert (await signing.client.get(f"/api/petitions/{slug}")).status_code == 404
        assert (await signing.client.get(f"/p/{slug}")).status_code == 404


async def test_metrics_are_labelled_by_route_template(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    assert (await signing.sign(petition["slug"])).status_code == 202
    await signing.client.get(f"/p/{petition['slug']}")
    metrics = (await signing.client.get("/metrics")).text
    assert 'route="/api/petitions/{slug}/signatures"' in metrics
    assert 'route="/p/{slug}"' in metrics
    assert petition["slug"] not in metrics  # never the raw path
