"""The campaign on signing's pages: its identity, the petition list, the privacy notice,
link previews and the country drop-down (issue 12)."""

from __future__ import annotations

import re
from collections.abc import Callable
from html import unescape
from typing import Any

from groundswell_runtime.organisation import Organisation
from groundswell_signing.config import SigningSettings

from .conftest import ADMIN, SigningHarness, start_harness

SettingsFactory = Callable[..., SigningSettings]


def meta(html: str, key: str) -> str:
    found = re.search(rf'<meta (?:property|name)="{re.escape(key)}" content="([^"]*)">', html)
    assert found, f"no {key} meta tag"
    return unescape(found.group(1))


async def test_home_lists_open_petitions_only(signing: SigningHarness) -> None:
    open_one = await signing.create_petition(title="Keep the library open")
    closed = await signing.create_petition(title="An old closed petition")
    await signing.client.patch(
        f"/api/admin/petitions/{closed['slug']}", json={"status": "closed"}, headers=ADMIN
    )
    page = await signing.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert f'href="/p/{open_one["slug"]}"' in page.text and "Keep the library open" in page.text
    assert closed["slug"] not in page.text
    assert "Demo Campaign" in page.text


async def test_every_page_carries_the_demo_organisation(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    for path in ("/", f"/p/{petition['slug']}", "/privacy", "/p/no-such-petition"):
        html = (await signing.client.get(path)).text
        assert "Demo Campaign" in html, path
        assert "(demo address)" in html, path  # the postal address, in the footer
        assert f'href="{signing.settings.public_base_url}/privacy"' in html, path


async def test_default_privacy_notice_names_the_organisation(signing: SigningHarness) -> None:
    page = await signing.client.get("/privacy")
    assert page.status_code == 200
    assert "Privacy notice" in page.text and "What we collect when you sign" in page.text
    assert "expires 72 hours after you sign" in page.text
    assert "This is the default notice of a demo" in page.text


async def test_a_campaign_sets_its_identity_text_and_logo(
    topics: None, signing_settings: SettingsFactory
) -> None:
    organisation = Organisation(
        name="Keep Our Clinics Open",
        sender_address="hello@clinics.example",
        postal_address="12 High Street\nLeeds LS1 1AA",
        privacy_policy_text="We keep your data safe.\n\nWrite to us to see it.",
        logo_url="https://cdn.clinics.example/logo.png",
        brand_colour="#AA0055",
    )
    async for harness in start_harness(signing_settings(organisation=organisation)):
        petition = await harness.create_petition()
        page = await harness.client.get(f"/p/{petition['slug']}")
        assert "Keep Our Clinics Open" in page.text and "12 High Street, Leeds LS1 1AA" in page.text
        assert "Demo Campaign" not in page.text
        assert '<img src="https://cdn.clinics.example/logo.png"' in page.text
        # The logo's origin is let through the page's CSP, for images only.
        policy = page.headers["content-security-policy"]
        assert "img-src 'self' data: https://cdn.clinics.example" in policy
        assert "script-src 'self';" in policy
        assert meta(page.text, "og:image") == "https://cdn.clinics.example/logo.png"
        assert meta(page.text, "og:site_name") == "Keep Our Clinics Open"
        privacy = await harness.client.get("/privacy")
        assert "<p>We keep your data safe.</p>" in privacy.text
        assert "<p>Write to us to see it.</p>" in privacy.text
        assert "What we collect" not in privacy.text
        css = await harness.client.get("/brand.css")
        assert css.headers["content-type"].startswith("text/css")
        assert "--accent: #aa0055;" in css.text


async def test_an_external_privacy_policy_is_linked_and_redirected_to(
    topics: None, signing_settings: SettingsFactory
) -> None:
    organisation = Organisation(privacy_policy_url="https://clinics.example/privacy")
    async for harness in start_harness(signing_settings(organisation=organisation)):
        petition = await harness.create_petition()
        page = await harness.client.get(f"/p/{petition['slug']}")
        assert 'href="https://clinics.example/privacy"' in page.text
        moved = await harness.client.get("/privacy")
        assert moved.status_code == 302
        assert moved.headers["location"] == "https://clinics.example/privacy"


async def test_petition_page_previews_well_when_shared(signing: SigningHarness) -> None:
    petition = await signing.create_petition(body="Local teams know their communities. " * 20)
    html = (await signing.client.get(f"/p/{petition['slug']}?ref=abc&ref_channel=x")).text
    url = f"{signing.settings.public_base_url}/p/{petition['slug']}"
    assert meta(html, "og:title") == petition["title"]
    assert meta(html, "twitter:title") == petition["title"]
    assert meta(html, "og:url") == url  # the canonical page, without the referral
    assert meta(html, "twitter:card") == "summary_large_image"
    description = meta(html, "og:description")
    assert description.startswith("Local teams know") and len(description) <= 200
    assert meta(html, "og:image") == f"{signing.settings.public_base_url}/static/preview.png"
    image = await signing.client.get("/static/preview.png")
    assert image.status_code == 200 and image.content.startswith(b"\x89PNG")


async def test_country_is_a_drop_down_with_names(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    html = (await signing.client.get(f"/p/{petition['slug']}")).text
    assert '<select id="country" name="country"' in html
    assert '<option value="GB" selected>United Kingdom</option>' in html
    assert '<option value="KR">South Korea</option>' in html
    assert html.count("<option ") == 249
    # The API still takes only ISO 3166-1 alpha-2 codes.
    refused = await signing.sign(petition["slug"], country="XX")
    assert refused.status_code == 422 and "country" in refused.text
    accepted = await signing.sign(petition["slug"], country="IE", postcode=None)
    assert accepted.status_code == 202, accepted.text


async def test_form_wording_follows_the_petition(signing: SigningHarness) -> None:
    double = await signing.create_petition(requires_confirmation=True)
    single = await signing.create_petition(requires_confirmation=False)
    with_confirmation = (await signing.client.get(f"/p/{double['slug']}")).text
    without = (await signing.client.get(f"/p/{single['slug']}")).text
    assert "link to confirm your signature" in with_confirmation
    assert "confirm" not in without.lower()


async def test_share_buttons_are_tagged_with_their_channel(signing: SigningHarness) -> None:
    petition = await signing.create_petition()
    html = (await signing.client.get(f"/p/{petition['slug']}")).text
    buttons: dict[str, Any] = dict(re.findall(r'data-channel="(\w+)" href="([^"]+)"', html))
    assert set(buttons) == {"whatsapp", "facebook", "x", "email"}
    for channel, href in buttons.items():
        assert f"ref_channel%3D{channel}" in unescape(href), channel
    assert "share this link with your friends and family so they can sign too" in html
