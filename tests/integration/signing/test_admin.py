from __future__ import annotations

import pytest

from .conftest import ADMIN, SigningHarness


async def test_create_petition_emits_petition_created(signing: SigningHarness) -> None:
    petition = await signing.create_petition(goal=10_000)
    assert petition["goal"] == 10_000
    assert petition["url"].endswith(f"/p/{petition['slug']}")
    [event] = await signing.outbox_events("PetitionCreated")
    assert event["slug"] == petition["slug"]
    assert event["schema_version"] == 1 and event["event_id"] and event["occurred_at"]


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "x"}])
async def test_admin_needs_the_token(signing: SigningHarness, headers: dict[str, str]) -> None:
    response = await signing.client.post(
        "/api/admin/petitions",
        json={"slug": "x1", "title": "A title", "target": "Someone", "body": "Long enough body"},
        headers=headers,
    )
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    # The same answer for an existing petition: no hint of what exists.
    petition = await signing.create_petition()
    other = await signing.client.patch(
        f"/api/admin/petitions/{petition['slug']}", json={"status": "closed"}, headers=headers
    )
    assert other.status_code == 401


async def test_slug_taken_is_409_naming_slug(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    again = await signing.client.post(
        "/api/admin/petitions",
        json={
            "slug": petition["slug"],
            "title": "Another title",
            "target": "X Y",
            "body": "Something else entirely",
        },
        headers=ADMIN,
    )
    assert again.status_code == 409
    assert again.json()["detail"][0]["loc"] == ["body", "slug"]


async def test_close_reopen_and_expiry(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    slug = petition["slug"]
    closed = await signing.client.patch(
        f"/api/admin/petitions/{slug}", json={"status": "closed"}, headers=ADMIN
    )
    assert closed.json()["status"] == "closed"
    assert (await signing.sign(slug)).status_code == 409
    await signing.client.patch(
        f"/api/admin/petitions/{slug}", json={"status": "open"}, headers=ADMIN
    )
    assert (await signing.sign(slug)).status_code == 202
    await signing.client.patch(
        f"/api/admin/petitions/{slug}", json={"closes_at": "2020-01-01T00:00:00Z"}, headers=ADMIN
    )
    assert (await signing.sign(slug)).status_code == 409
    types = [e["event_type"] for e in await signing.outbox_events() if e.get("slug") == slug]
    assert types == ["PetitionCreated", "PetitionClosed", "PetitionUpdated", "PetitionUpdated"]


async def test_patch_rejects_unknown_fields_and_nulls(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    url = f"/api/admin/petitions/{petition['slug']}"
    unknown = await signing.client.patch(url, json={"colour": "red"}, headers=ADMIN)
    assert unknown.status_code == 422 and unknown.json()["detail"][0]["loc"] == ["body", "colour"]
    null_title = await signing.client.patch(url, json={"title": None}, headers=ADMIN)
    assert null_title.status_code == 422
    assert (
        await signing.client.patch("/api/admin/petitions/nope", json={}, headers=ADMIN)
    ).status_code == 404


async def test_list_petitions(signing: SigningHarness) -> None:
    first = await signing.create_petition()
    second = await signing.create_petition()
    listed = await signing.client.get("/api/admin/petitions", headers=ADMIN)
    assert [p["slug"] for p in listed.json()] == [first["slug"], second["slug"]]


async def test_long_petition_texts_fit_but_not_on_public_routes(signing: SigningHarness) -> None:
    # 10,000 two-byte characters: over the public body limit, within the admin one.
    petition = await signing.create_petition(body="\u00e9" * 10_000)
    assert len(petition["body"]) == 10_000
    too_long = await signing.client.post(
        "/api/admin/petitions",
        json={"slug": "too-long", "title": "Title", "target": "Someone", "body": "x" * 10_001},
        headers=ADMIN,
    )
    assert too_long.status_code == 422
    assert too_long.json()["detail"][0]["loc"] == ["body", "body"]


async def test_control_characters_are_refused_not_stored(signing: SigningHarness) -> None:
    for field, value in [
        ("cors_origins", ["https://0\u0000E"]),
        ("title", "Title \u0005 here"),
        ("body", "A long enough body \u0000 with a NUL"),
    ]:
        response = await signing.client.post(
            "/api/admin/petitions",
            json={
                "slug": "ctl",
                "title": "A title",
                "target": "Someone",
                "body": "Long enough body",
            }
            | {field: value},
            headers=ADMIN,
        )
        assert response.status_code == 422, (field, response.text)
        assert response.json()["detail"][0]["loc"][:2] == ["body", field]
