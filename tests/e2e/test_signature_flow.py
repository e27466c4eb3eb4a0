"""One signature through all four services, over HTTP, as separate processes."""

from __future__ import annotations

import asyncio
import re
import uuid

import asyncpg
import httpx
from groundswell_stack.infra import Infra
from groundswell_stack.reconcile import reconcile

from .conftest import ADMIN_TOKEN, Stack, eventually

BROWSER = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0"


def create_petition(stack: Stack, **fields: object) -> dict[str, object]:
    body = {
        "slug": f"e2e-{uuid.uuid4().hex[:8]}",
        "title": "Let local public health teams run contact tracing",
        "target": "The Secretary of State for Health",
        "body": "Local teams know their communities. Fund them, not contractors.",
    } | fields
    response = httpx.post(
        f"{stack.urls['signing']}/api/admin/petitions", json=body, headers=stack.admin()
    )
    assert response.status_code == 201, response.text
    return dict(response.json())


def count_of(stack: Stack, slug: object) -> dict[str, object]:
    response = httpx.get(f"{stack.urls['counter']}/api/petitions/{slug}/count")
    return dict(response.json()) if response.status_code == 200 else {}


def share_stats(stack: Stack, slug: object) -> dict[str, object]:
    response = httpx.get(f"{stack.urls['sharing']}/api/petitions/{slug}/shares")
    return dict(response.json()) if response.status_code == 200 else {}


def link_in(message: object, pattern: str) -> str:
    text = message.get_body(preferencelist=("plain",)).get_content()  # type: ignore[attr-defined]
    found = re.search(pattern, text)
    assert found, f"no link matching {pattern!r} in:\n{text}"
    return found.group(0)


def test_sign_count_thank_you_email_and_share_click(stack: Stack) -> None:
    petition = create_petition(stack, requires_confirmation=False)
    slug = petition["slug"]
    email = f"e2e-{uuid.uuid4().hex[:8]}@example.org"
    signed = httpx.post(
        f"{stack.urls['signing']}/api/petitions/{slug}/signatures",
        json={
            "name": "Flow Tester",
            "email": email,
            "postcode": "OX1 2JD",
            "contact_consent": True,
            "source": "e2e",
        },
    )
    assert signed.status_code == 202 and signed.json()["status"] == "signed"

    counted = eventually(
        lambda: count_of(stack, slug).get("signatures") == 1 and count_of(stack, slug)
    )
    assert counted["by_area"] == {"OX": 1} and counted["by_source"] == {"e2e": 1}

    [thank_you] = eventually(lambda: stack.mail_to(email))
    share_link = link_in(thank_you, re.escape(stack.urls["sharing"]) + r"/s/[A-Za-z0-9_-]+")
    # The personal link comes only by email; the API answer names just the petition.
    assert signed.json()["share_url"] == f"{stack.urls['signing']}/p/{slug}"
    assert share_link.rsplit("/", 1)[1] not in signed.text

    # A person's browser: link-preview robots and scripts are redirected but not counted.
    click = httpx.get(
        f"{share_link}?c=whatsapp", follow_redirects=False, headers={"User-Agent": BROWSER}
    )
    assert click.status_code == 302
    assert click.headers["location"].startswith(f"{stack.urls['signing']}/p/{slug}?ref=")
    page = httpx.get(click.headers["location"])
    assert page.status_code == 200 and petition["title"] in page.text

    eventually(lambda: share_stats(stack, slug).get("clicks") == 1)

    # A friend signs through the link: the referral is attributed and counted.
    query = dict(httpx.URL(click.headers["location"]).params)
    assert query["ref_channel"] == "whatsapp"
    friend = httpx.post(
        f"{stack.urls['signing']}/api/petitions/{slug}/signatures",
        json={
            "name": "Friend Of",
            "email": f"friend-{email}",
            "postcode": "E1 6AN",
            "contact_consent": False,
            "ref": query["ref"],
            "ref_channel": query["ref_channel"],
        },
    )
    assert friend.status_code == 202
    eventually(lambda: count_of(stack, slug).get("signatures") == 2)
    eventually(lambda: share_stats(stack, slug).get("signatures_via_referrals") == 1)
    assert share_stats(stack, slug)["by_channel"]["whatsapp"] == {"clicks": 1, "signatures": 1}


def test_double_opt_in_through_the_email_link(stack: Stack) -> None:
    petition = create_petition(stack, requires_confirmation=True)
    slug = petition["slug"]
    email = f"optin-{uuid.uuid4().hex[:8]}@example.org"
    signed = httpx.post(
        f"{stack.urls['signing']}/api/petitions/{slug}/signatures",
        json={"name": "Opt In", "email": email, "postcode": "SW1A 1AA", "contact_consent": True},
    )
    assert signed.json()["status"] == "pending_confirmation"
    eventually(lambda: count_of(stack, slug).get("pending") == 1)
    assert count_of(stack, slug)["signatures"] == 0

    [confirmation] = eventually(lambda: stack.mail_to(email))
    confirm_url = link_in(
        confirmation, re.escape(stack.urls["signing"]) + r"/confirm/[A-Za-z0-9_-]+"
    )
    assert httpx.get(confirm_url).status_code == 200  # what a link scanner does
    assert count_of(stack, slug)["signatures"] == 0
    assert httpx.post(confirm_url).status_code == 200
    eventually(lambda: count_of(stack, slug).get("signatures") == 1)
    assert count_of(stack, slug)["pending"] == 0
    # Then the thank-you with the share link.
    eventually(lambda: len(stack.mail_to(email)) == 2)


def test_every_service_reports_health_and_metrics(stack: Stack) -> None:
    for name, url in stack.urls.items():
        assert httpx.get(f"{url}/healthz").status_code == 200, name
        assert httpx.get(f"{url}/readyz").status_code == 200, name
        metrics = httpx.get(f"{url}/metrics")
        assert metrics.status_code == 200 and "# TYPE" in metrics.text, name
        assert httpx.get(f"{url}/openapi.json").status_code == 200, name


def test_logs_carry_no_personal_data(stack: Stack) -> None:
    email = f"private-{uuid.uuid4().hex[:8]}@example.org"
    petition = create_petition(stack, requires_confirmation=False)
    httpx.post(
        f"{stack.urls['signing']}/api/petitions/{petition['slug']}/signatures",
        json={
            "name": "Secretive Person",
            "email": email,
            "postcode": "OX1 2JD",
            "contact_consent": True,
        },
    )
    eventually(lambda: stack.mail_to(email))
    for log in stack.logs.glob("*.log"):
        text = log.read_text()
        assert email not in text and "Secretive" not in text, log.name


def run_sql(url: str, sql: str) -> None:
    """Run SQL from a synchronous test (asyncpg in a private event loop)."""

    async def execute() -> None:
        conn = await asyncpg.connect(url)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(execute())


def test_reconciliation_finds_no_drift_then_finds_drift(stack: Stack, infra: Infra) -> None:
    petition = create_petition(stack, requires_confirmation=True)
    slug = petition["slug"]
    for i in range(3):
        httpx.post(
            f"{stack.urls['signing']}/api/petitions/{slug}/signatures",
            json={
                "name": "Reconcile Me",
                "email": f"rec{i}-{uuid.uuid4().hex[:6]}@example.org",
                "postcode": "OX1 2JD",
                "contact_consent": False,
            },
        )
    eventually(lambda: count_of(stack, slug).get("pending") == 3)

    def no_drift() -> int:
        checked, drifts = reconcile(stack.urls["signing"], stack.urls["counter"], ADMIN_TOKEN)
        assert drifts == [], drifts
        return checked

    assert eventually(no_drift) >= 1

    # It notices drift: change PostgreSQL behind the outbox's back, as a bug would.
    run_sql(
        infra.database_url,
        "UPDATE signing.signatures SET invalidated_at = now() WHERE id = ("
        "SELECT s.id FROM signing.signatures s JOIN signing.petitions p "
        f"ON p.id = s.petition_id WHERE p.slug = '{slug}' LIMIT 1)",
    )
    _, drifts = reconcile(stack.urls["signing"], stack.urls["counter"], ADMIN_TOKEN)
    assert [(d.slug, d.figure, d.expected, d.actual) for d in drifts] == [(slug, "pending", 2, 3)]
