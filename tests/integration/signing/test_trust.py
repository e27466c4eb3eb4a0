"""Issue 8's attacks on signing, each reproduced: they must fail to work.

The harness's socket peer is 203.0.113.7; with it as a trusted proxy, the tests choose
each request's client address through X-Forwarded-For, as a real proxy would set it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from .conftest import ADMIN, SettingsFactory, SigningHarness, start_harness

PROXY = "203.0.113.7"
# Windows are fixed (aligned to multiples of their length): windows this long never
# roll over in the middle of a test.
FOREVER = 1_000_000_000


async def sign_from(
    harness: SigningHarness, slug: str, address: str, **overrides: Any
) -> httpx.Response:
    body = {
        "name": "Ada Lovelace",
        "email": f"ada-{uuid.uuid4().hex[:8]}@example.org",
        "postcode": "OX1 2JD",
        "country": "GB",
        "contact_consent": True,
    } | overrides
    return await harness.client.post(
        f"/api/petitions/{slug}/signatures", json=body, headers={"X-Forwarded-For": address}
    )


@pytest.fixture
async def limited(topics: None, signing_settings: SettingsFactory) -> AsyncIterator[SigningHarness]:
    settings = signing_settings(
        rate_burst_count=2,
        rate_burst_seconds=FOREVER,
        rate_sustained_count=100,
        rate_global_count=100,
        rate_site_count=5,
        rate_site_seconds=FOREVER,
        trusted_proxies=PROXY,
    )
    async for harness in start_harness(settings):
        yield harness


@pytest.fixture
async def defaults(
    topics: None, signing_settings: SettingsFactory
) -> AsyncIterator[SigningHarness]:
    # The shipped rate-limit policy, not the suite's relaxed one.
    settings = signing_settings(
        rate_burst_count=3, rate_sustained_count=5, rate_global_count=20, trusted_proxies=PROXY
    )
    async for harness in start_harness(settings):
        yield harness


async def test_item1_duplicate_answer_reveals_nothing(limited: SigningHarness) -> None:
    petition = await limited.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    victim = await sign_from(limited, slug, "198.51.100.1", email="victim@example.org")
    probe = await sign_from(limited, slug, "198.51.100.2", email="Victim+x@Example.org")
    stranger = await sign_from(limited, slug, "198.51.100.3", email="new@example.org")
    assert victim.status_code == probe.status_code == stranger.status_code == 202
    # A duplicate's answer is byte for byte a first signature's answer.
    assert probe.content == stranger.content == victim.content
    share_codes = await limited.pool.fetch("SELECT share_code FROM signing.signatures")
    for row in share_codes:
        assert row["share_code"] not in probe.text


async def test_item2_rate_limiter_is_not_an_oracle(limited: SigningHarness) -> None:
    petition = await limited.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    await sign_from(limited, slug, "198.51.100.10", email="signed@example.org")
    # From fresh addresses: "signed address, then throwaway" and "unsigned address, then
    # throwaway" must look the same.
    a = [
        (await sign_from(limited, slug, "198.51.100.20", email=email)).status_code
        for email in ("signed@example.org", "throwaway1@example.org", "throwaway2@example.org")
    ]
    b = [
        (await sign_from(limited, slug, "198.51.100.30", email=email)).status_code
        for email in ("unsigned@example.org", "throwaway3@example.org", "throwaway4@example.org")
    ]
    assert a == b == [202, 202, 429]


async def test_item2_duplicates_are_throttled(limited: SigningHarness) -> None:
    petition = await limited.create_petition(requires_confirmation=False)
    answers = [
        (await sign_from(limited, petition["slug"], "198.51.100.40", email="a@example.org"))
        for _ in range(30)
    ]
    assert [a.status_code for a in answers].count(202) == 2
    duplicates = await limited.outbox_events("SignatureDuplicateAttempted")
    assert len(duplicates) == 1  # the second of the two let through


async def test_item4_parallel_requests_do_not_pass_the_limit(limited: SigningHarness) -> None:
    petition = await limited.create_petition(requires_confirmation=False)
    answers = await asyncio.gather(
        *(sign_from(limited, petition["slug"], "198.51.100.50") for _ in range(20))
    )
    statuses = [a.status_code for a in answers]
    assert statuses.count(202) == 2 and statuses.count(429) == 18
    stored = await limited.pool.fetchval("SELECT count(*) FROM signing.signatures")
    assert stored == 2


async def test_item5_ipv6_is_limited_by_its_64_and_48(limited: SigningHarness) -> None:
    petition = await limited.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    same_64 = [f"2001:db8:aa:1::{i:x}" for i in range(1, 5)]
    statuses = [(await sign_from(limited, slug, a)).status_code for a in same_64]
    assert statuses == [202, 202, 429, 429]  # one /64 is one client (burst 2)
    # Other /64s of the same /48 have their own burst but share the site budget of 5,
    # which the four attempts above already used 4 of.
    other = [(await sign_from(limited, slug, f"2001:db8:aa:{n}::1")).status_code for n in (2, 3)]
    assert other == [202, 429]


async def test_item6_forwarded_for_uses_the_right_most_untrusted_hop(
    limited: SigningHarness,
) -> None:
    petition = await limited.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    # The client writes any address it likes on the left; the proxy appends the real one.
    statuses = [
        (await sign_from(limited, slug, f"10.9.9.{i}, 198.51.100.60")).status_code for i in range(4)
    ]
    assert statuses == [202, 202, 429, 429]
    stored = await limited.pool.fetch("SELECT DISTINCT host(ip) AS ip FROM signing.signatures")
    assert [r["ip"] for r in stored] == ["198.51.100.60"]


async def test_item6_a_forwarded_for_that_is_not_an_address_is_not_a_500(
    limited: SigningHarness,
) -> None:
    petition = await limited.create_petition(requires_confirmation=False)
    response = await sign_from(limited, petition["slug"], "not-an-ip, <script>")
    assert response.status_code == 202
    stored = await limited.pool.fetchval("SELECT host(ip) FROM signing.signatures")
    assert stored == PROXY  # fell back to the socket peer


async def test_item9_confirming_after_the_petition_closed_does_not_count(
    limited: SigningHarness,
) -> None:
    petition = await limited.create_petition(requires_confirmation=True)
    slug = petition["slug"]
    assert (await sign_from(limited, slug, "198.51.100.70")).status_code == 202
    [created] = await limited.outbox_events("SignatureCreated")
    closed = await limited.client.patch(
        f"/api/admin/petitions/{slug}", json={"status": "closed"}, headers=ADMIN
    )
    assert closed.status_code == 200
    page = await limited.client.post(f"/confirm/{created['confirmation_token']}")
    assert page.status_code == 409 and "closed" in page.text
    assert await limited.outbox_events("SignatureConfirmed") == []
    tally = await limited.client.get(f"/api/admin/petitions/{slug}/tally", headers=ADMIN)
    assert tally.json()["signatures"] == 0


async def test_item9_signing_a_petition_closed_a_moment_ago_is_409(
    limited: SigningHarness,
) -> None:
    petition = await limited.create_petition(requires_confirmation=False)
    slug = petition["slug"]
    assert (await sign_from(limited, slug, "198.51.100.80")).status_code == 202  # cached
    await limited.pool.execute("UPDATE signing.petitions SET status = 'closed'")  # elsewhere
    late = await sign_from(limited, slug, "198.51.100.81")
    assert late.status_code == 409  # the batch checks the committed state, not the cache
    assert await limited.pool.fetchval("SELECT count(*) FROM signing.signatures") == 1


async def test_item10_two_people_in_one_household_both_sign(defaults: SigningHarness) -> None:
    petition = await defaults.create_petition(requires_confirmation=False)
    home = "198.51.100.90"
    first = await sign_from(defaults, petition["slug"], home, email="ann@example.org")
    second = await sign_from(defaults, petition["slug"], home, email="bob@example.org")
    assert first.status_code == second.status_code == 202


async def test_item10_rate_limit_message_is_inline_on_the_page(limited: SigningHarness) -> None:
    petition = await limited.create_petition(requires_confirmation=False)
    form = {"name": "Ada Lovelace", "postcode": "OX1 2JD", "country": "GB"}
    headers = {"X-Forwarded-For": "198.51.100.95"}
    for i in range(2):
        ok = await limited.client.post(
            f"/p/{petition['slug']}", data=form | {"email": f"x{i}@example.org"}, headers=headers
        )
        assert ok.status_code == 200
    refused = await limited.client.post(
        f"/p/{petition['slug']}", data=form | {"email": "x9@example.org"}, headers=headers
    )
    assert refused.status_code == 429
    assert 'id="form-error"' in refused.text and "Try again in" in refused.text
    script = await limited.client.get("/static/petition.js")
    assert "alert(" not in script.text
