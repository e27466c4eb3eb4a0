"""The petition pages without JavaScript: plain form posts."""

from __future__ import annotations

from .conftest import ADMIN, SigningHarness

FORM = {
    "name": "Grace Hopper",
    "email": "grace@example.org",
    "postcode": "sw1a1aa",
    "country": "GB",
    "contact_consent": "yes",
}


async def test_petition_page_has_an_accessible_form(signing: SigningHarness) -> None:
    petition = await signing.create_petition(goal=1000)
    page = await signing.client.get(f"/p/{petition['slug']}?ref=abc123")
    assert page.status_code == 200
    html = page.text
    assert petition["title"] in html and "To: The Secretary of State for Health" in html
    for field in ("name", "email", "postcode", "country"):
        assert f'<label for="{field}">' in html
        assert f'aria-describedby="{field}-error' in html
    assert 'name="ref" value="abc123"' in html
    assert page.headers["x-frame-options"] == "DENY"
    assert "https://" not in html.split("<main")[0]  # nothing from an external CDN in <head>


async def test_form_post_signs_without_javascript(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    response = await signing.client.post(f"/p/{petition['slug']}", data=FORM)
    assert response.status_code == 200
    assert "Thank you for signing." in response.text
    # The page offers the petition's own link; the personal link goes only by email.
    assert f"{signing.settings.public_base_url}/p/{petition['slug']}" in response.text
    assert signing.settings.share_base_url + "/s/" not in response.text
    assert "wa.me" in response.text  # share buttons
    [event] = await signing.outbox_events("SignatureCreated")
    assert event["postcode_area"] == "SW" and event["contact_consent"] is True


async def test_form_errors_are_tied_to_fields(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    response = await signing.client.post(
        f"/p/{petition['slug']}", data=FORM | {"email": "broken", "name": "=1+1"}
    )
    assert response.status_code == 422
    html = response.text
    assert 'id="email-error"' in html and "valid email" in html
    assert 'id="name" name="name"' in html and 'aria-invalid="true"' in html
    assert 'value="broken"' in html  # what they typed is kept
    assert await signing.outbox_events("SignatureCreated") == []


async def test_honeypot_records_nothing(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    response = await signing.client.post(
        f"/p/{petition['slug']}", data=FORM | {"website": "http://spam.example"}
    )
    assert response.status_code == 200 and "Thank you" in response.text
    assert await signing.pool.fetchval("SELECT count(*) FROM signing.signatures") == 0


async def test_closed_and_unknown_petition_pages(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    await signing.client.patch(
        f"/api/admin/petitions/{petition['slug']}",
        json={"status": "closed"},
        headers=ADMIN,
    )
    page = await signing.client.get(f"/p/{petition['slug']}")
    assert "closed" in page.text and 'id="sign-form"' not in page.text
    post = await signing.client.post(f"/p/{petition['slug']}", data=FORM)
    assert post.status_code == 409
    assert (await signing.client.get("/p/nothing-here")).status_code == 404


async def test_embed_page_may_be_framed(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    page = await signing.client.get(f"/embed/{petition['slug']}")
    assert page.status_code == 200
    assert "frame-ancestors *" in page.headers["content-security-policy"]
    assert "x-frame-options" not in page.headers
    assert 'class="embed"' in page.text and 'id="sign-form"' in page.text


async def test_the_page_shows_the_count_before_any_script_runs(signing: SigningHarness) -> None:
    petition = await signing.create_petition(requires_confirmation=False, goal=10)
    for n in range(2):
        assert (await signing.sign(petition["slug"], email=f"c{n}@example.org")).status_code == 202
    page = await signing.client.get(f"/p/{petition['slug']}")
    assert page.status_code == 200
    assert '<strong id="count">2</strong> <span id="count-label">signatures</span>' in page.text
    assert '<progress id="progress" max="10" value="2">' in page.text
