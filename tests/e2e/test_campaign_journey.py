"""Issue 12's walk, in a real headless Chromium against the four running services: a
supporter opens a shared link on a phone, signs, confirms from the email, sets their
preferences from the thank-you email, then unsubscribes; the organisers' mailing goes
to the others, and the signatures it brings count under its source. The mailing's
HTML is photographed for docs/."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from .conftest import Stack, eventually
from .test_petition_page import browser  # noqa: F401 - the module's Chromium fixture
from .test_signature_flow import count_of, create_petition, link_in

pytestmark = pytest.mark.browser

DOCS = Path(__file__).resolve().parents[2] / "docs"


def mailer_admin(stack: Stack, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(
        method, f"{stack.urls['mailer']}/api/admin/mailings{path}", headers=stack.admin(), **kwargs
    )
    assert response.status_code < 300, response.text
    return response.json()


def test_a_supporters_journey_and_the_campaigns_mailing(stack: Stack, browser: Any) -> None:  # noqa: F811
    from playwright.sync_api import expect

    petition = create_petition(stack, requires_confirmation=True)
    slug = petition["slug"]
    tag = uuid.uuid4().hex[:8]
    email = f"journey-{tag}@example.org"

    # A friend's WhatsApp message: the petition, tagged with its channel, on a phone.
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{stack.urls['signing']}/p/{slug}?ref_channel=whatsapp")
    page.get_by_label("Your name").fill("Jo Journey")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Postcode").fill("OX1 2JD")
    page.get_by_label("Yes, the campaign may email me").check()
    page.get_by_role("button", name="Sign the petition").click()
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    expect(page.locator("#thanks")).to_contain_text("friends and family")

    # The confirmation email, then its page and button.
    [confirmation] = eventually(lambda: stack.mail_to(email), timeout=30)
    page.goto(link_in(confirmation, r"http://\S+/confirm/[A-Za-z0-9_-]+"))
    page.get_by_role("button", name="Confirm my signature").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("confirmed")

    # The thank-you email's footer: the preference centre.
    thank_you = eventually(
        lambda: [m for m in stack.mail_to(email) if "Thank you" in str(m["Subject"])], timeout=30
    )[0]
    page.goto(link_in(thank_you, r"http://\S+/preferences/[A-Za-z0-9_-]+"))
    news = page.get_by_label("news", exact=False)
    expect(news).to_be_checked()  # consent given when signing
    news.uncheck()
    page.get_by_role("button", name="Save my choices").click()
    expect(page.locator("body")).to_contain_text("saved", ignore_case=True)
    page.get_by_role("button", name="Unsubscribe from all").click()
    expect(page.locator("body")).to_contain_text("unsubscribed", ignore_case=True)

    # Another supporter, still subscribed, signs without confirmation elsewhere.
    other = create_petition(stack, requires_confirmation=False)
    friend = f"friend-{tag}@example.org"
    signed = httpx.post(
        f"{stack.urls['signing']}/api/petitions/{other['slug']}/signatures",
        json={
            "name": "Fran Friend",
            "email": friend,
            "postcode": "OX1 2JD",
            "contact_consent": True,
        },
    )
    assert signed.status_code == 202
    eventually(lambda: stack.mail_to(friend), timeout=30)

    # The organisers mail both petitions' signers about the first petition.
    source = f"mail{tag}"
    mailing = mailer_admin(
        stack,
        "POST",
        "",
        json={
            "subject": "The Health Secretary decides this week",
            "body_markdown": "Dear {first_name},\n\nThe decision is **this week**. "
            "Please share this link with your friends and family so they can sign too.",
            "petition": slug,
            "source": source,
            "audience": {"signed": [slug, other["slug"]]},
        },
    )
    preview = mailer_admin(stack, "GET", f"/{mailing['id']}/preview", params={"first_name": "Jo"})
    shot = browser.new_page(viewport={"width": 700, "height": 480})
    shot.set_content(preview["html"])
    shot.screenshot(path=str(DOCS / "mailing.png"), full_page=True)
    assert "Dear Jo" in preview["text"] and "privacy notice" in preview["html"]

    mailer_admin(stack, "POST", f"/{mailing['id']}/send")
    [copy] = eventually(
        lambda: [m for m in stack.mail_to(friend) if "Health Secretary" in str(m["Subject"])],
        timeout=60,
    )
    text = copy.get_body(("plain",)).get_content()
    assert "Dear Fran" in text
    # Unsubscribed: nothing for the journey's supporter.
    progress = eventually(
        lambda: (lambda m: m if m["progress"].get("sent", 0) >= 1 else None)(
            mailer_admin(stack, "GET", f"/{mailing['id']}")
        ),
        timeout=60,
    )
    assert progress["progress"].get("sent") == 1, progress
    assert not [m for m in stack.mail_to(email) if "Health Secretary" in str(m["Subject"])]

    # The friend follows the mailing's link and signs: counted under its source.
    link = link_in(copy, rf"http://\S+/p/{slug}\S*source={source}\S*")
    page.goto(link)
    page.get_by_label("Your name").fill("Fran Friend")
    page.get_by_label("Email address").fill(friend)
    page.get_by_label("Postcode").fill("OX1 2JD")
    page.get_by_role("button", name="Sign the petition").click()
    expect(page.get_by_role("heading", name="Thank you")).to_be_visible()
    # This petition asks for confirmation: the friend confirms from their email.
    confirm = eventually(
        lambda: [m for m in stack.mail_to(friend) if "confirm" in str(m["Subject"]).lower()],
        timeout=30,
    )[0]
    page.goto(link_in(confirm, r"http://\S+/confirm/[A-Za-z0-9_-]+"))
    page.get_by_role("button", name="Confirm my signature").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("confirmed")
    eventually(lambda: count_of(stack, slug).get("by_source", {}).get(source) == 1, timeout=30)
