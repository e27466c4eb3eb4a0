"""The sharing service end to end: signature events on the real broker, share-link
visits over HTTP, rows in real PostgreSQL, events back on the broker.

Each test uses its own petition. "Nothing more happened" is checked after a marker
signature on the same petition (same partition, so handled after everything before
it) has been stored; markers are pending, so they never change the counted figures.
"""

from __future__ import annotations

import uuid
from typing import Any

from groundswell_contracts.events import (
    PetitionUpdated,
    ReferralAttributed,
    ShareLinkClicked,
    SignatureConfirmed,
    SignatureWithdrawn,
)

from .conftest import link_exists, shares, signed_up


async def drain(kit: Any, sharing: Any, petition_id: uuid.UUID) -> None:
    marker = kit.signature(petition_id=petition_id, status="pending")
    await kit.publish(marker)

    async def stored() -> bool:
        return await link_exists(sharing, marker.share_code)

    await kit.eventually(stored)


async def referral_events(kit: Any, signature_id: uuid.UUID) -> list[Any]:
    events = await kit.topic_events(kit.infra.kafka_bootstrap, "referrals")
    return [
        e for e in events if isinstance(e, ReferralAttributed) and e.signature_id == signature_id
    ]


async def test_share_link_redirects_and_records_clicks(sharing: Any, kit: Any) -> None:
    a = kit.signature(source="newsletter")
    await kit.publish(a)

    async def redirected() -> Any:
        response = await sharing.client.get(f"/s/{a.share_code}")
        return response if response.status_code == 302 else None

    first = await kit.eventually(redirected)
    assert first.headers["location"] == (
        f"{kit.public_base_url}/p/{a.petition_slug}?ref={a.share_code}"
    )
    assert first.headers["cache-control"] == "no-store"

    # Another network (a visitor is a network per day, whatever the user agent says).
    async with sharing.client_at("198.51.100.20") as other_visitor:
        whatsapp = await other_visitor.get(f"/s/{a.share_code}?c=WhatsApp")
    assert whatsapp.status_code == 302
    assert whatsapp.headers["location"] == (
        f"{kit.public_base_url}/p/{a.petition_slug}?ref={a.share_code}&ref_channel=whatsapp"
    )
    # The same visitor again today, and a link-preview robot: redirected, not counted.
    assert (await sharing.client.get(f"/s/{a.share_code}")).status_code == 302
    robot = {"user-agent": "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit)"}
    preview = await sharing.client.get(f"/s/{a.share_code}?c=facebook", headers=robot)
    assert preview.status_code == 302
    mangled = await sharing.client.get(f"/s/{a.share_code}?c=" + "z" * 500, headers=robot)
    assert mangled.headers["location"].endswith(f"?ref={a.share_code}&ref_channel=other")

    stats = await shares(sharing, a.petition_slug)
    assert stats == {
        "slug": a.petition_slug,
        "clicks": 2,
        "signatures_via_referrals": 0,
        "signers": 1,
        "by_channel": {
            "direct": {"clicks": 1, "signatures": 0},
            "whatsapp": {"clicks": 1, "signatures": 0},
        },
        "by_source": {"newsletter": 1},
        "top_referrers": [{"rank": 1, "clicks": 2, "signatures": 0}],
        "viral_coefficient": 0.0,
    }

    async def clicked() -> list[Any]:
        events = await kit.topic_events(kit.infra.kafka_bootstrap, "share-clicks")
        found = [
            e for e in events if isinstance(e, ShareLinkClicked) and e.share_code == a.share_code
        ]
        return found if len(found) >= 2 else []

    events = await kit.eventually(clicked)
    assert sorted(e.channel for e in events) == ["direct", "whatsapp"]
    assert {e.petition_id for e in events} == {a.petition_id}

    # No address is kept: a click is a channel, salted daily network hashes and a time.
    columns = {
        r["column_name"]
        for r in await sharing.db.fetch(
            "SELECT column_name FROM information_schema.columns "
            "WHERE table_schema = 'sharing' AND table_name = 'clicks'"
        )
    }
    assert columns == {
        "id",
        "share_code",
        "petition_id",
        "channel",
        "visitor_hash",
        "site_hash",
        "clicked_on",
        "clicked_at",
    }


async def test_referral_is_counted_once_and_dropped_when_withdrawn(sharing: Any, kit: Any) -> None:
    a = await signed_up(kit, sharing)
    click = await sharing.client.get(f"/s/{a.share_code}?c=whatsapp")
    assert click.status_code == 302

    b = kit.signature(petition_id=a.petition_id, petition_slug=a.petition_slug, ref=a.share_code)
    await kit.publish(b)
    await kit.publish(b)  # redelivered
    await kit.publish(b.again())  # the same signature under another event id
    await drain(kit, sharing, a.petition_id)

    stats = await shares(sharing, a.petition_slug)
    assert stats["signatures_via_referrals"] == 1
    assert stats["signers"] == 2
    assert stats["viral_coefficient"] == 0.5
    assert stats["by_channel"] == {"whatsapp": {"clicks": 1, "signatures": 1}}
    assert stats["top_referrers"] == [{"rank": 1, "clicks": 1, "signatures": 1}]

    async def attributed() -> list[Any]:
        return await referral_events(kit, b.signature_id)

    [event] = await kit.eventually(attributed)
    assert (event.share_code, event.referrer_signature_id, event.petition_id) == (
        a.share_code,
        a.signature_id,
        a.petition_id,
    )
    # Published once, whatever was redelivered (published outbox rows are deleted: the
    # topic is the record).
    assert len(await referral_events(kit, b.signature_id)) == 1

    withdrawn = SignatureWithdrawn(petition_id=b.petition_id, signature_id=b.signature_id)
    await kit.publish(withdrawn)
    await kit.publish(withdrawn)

    async def dropped() -> dict[str, Any] | None:
        current = await shares(sharing, a.petition_slug)
        return current if current["signatures_via_referrals"] == 0 else None

    stats = await kit.eventually(dropped)
    assert stats["signers"] == 1
    assert stats["viral_coefficient"] == 0.0
    assert stats["by_channel"] == {"whatsapp": {"clicks": 1, "signatures": 0}}


async def test_pending_referral_counts_once_confirmed(sharing: Any, kit: Any) -> None:
    a = await signed_up(kit, sharing)
    b = kit.signature(
        petition_id=a.petition_id, petition_slug=a.petition_slug, ref=a.share_code, status="pending"
    )
    await kit.publish(b)
    await drain(kit, sharing, a.petition_id)
    stats = await shares(sharing, a.petition_slug)
    assert (stats["signatures_via_referrals"], stats["signers"]) == (0, 1)
    assert await referral_events(kit, b.signature_id) == []

    confirmed = SignatureConfirmed(petition_id=b.petition_id, signature_id=b.signature_id)
    await kit.publish(confirmed)
    await kit.publish(confirmed)

    async def counted() -> dict[str, Any] | None:
        current = await shares(sharing, a.petition_slug)
        return current if current["signatures_via_referrals"] == 1 else None

    stats = await kit.eventually(counted)
    assert stats["signers"] == 2
    # No click preceded it: the channel cannot be told.
    assert stats["by_channel"] == {"unknown": {"clicks": 0, "signatures": 1}}

    async def attributed() -> list[Any]:
        return await referral_events(kit, b.signature_id)

    assert len(await kit.eventually(attributed)) == 1


async def test_referrals_that_must_not_count(sharing: Any, kit: Any) -> None:
    a = await signed_up(kit, sharing)
    elsewhere = await signed_up(kit, sharing)  # a signer of another petition
    same = {"petition_id": a.petition_id, "petition_slug": a.petition_slug}
    fraudulent = kit.signature(**same, ref=a.share_code, status="fraudulent")
    foreign = kit.signature(**same, ref=elsewhere.share_code)
    unknown = kit.signature(**same, ref="no-such-code")
    for event in (fraudulent, foreign, unknown):
        await kit.publish(event)
    await drain(kit, sharing, a.petition_id)

    stats = await shares(sharing, a.petition_slug)
    assert stats["signatures_via_referrals"] == 0
    assert stats["signers"] == 3  # a, foreign, unknown; never the fraudulent one
    assert not await link_exists(sharing, fraudulent.share_code)
    referrals = await sharing.db.fetchval(
        "SELECT count(*) FROM sharing.referrals WHERE petition_id = $1", a.petition_id
    )
    assert referrals == 0


async def test_renamed_petition_redirects_to_its_new_slug(sharing: Any, kit: Any) -> None:
    a = await signed_up(kit, sharing)
    renamed = f"{a.petition_slug}-renamed"
    await kit.publish(
        PetitionUpdated(
            petition_id=a.petition_id, slug=renamed, title="Clean rivers now!", target="DEFRA"
        )
    )

    async def moved() -> Any:
        response = await sharing.client.get(f"/s/{a.share_code}")
        return response if renamed in response.headers.get("location", "") else None

    response = await kit.eventually(moved)
    assert response.headers["location"] == (f"{kit.public_base_url}/p/{renamed}?ref={a.share_code}")
    assert (await shares(sharing, renamed))["slug"] == renamed


async def test_unknown_share_code_is_a_helpful_404(sharing: Any) -> None:
    # A well-formed code is waited for first (test_issue9_...); after the last retry, 404.
    last = sharing.settings.link_wait_attempts
    for path in (f"/s/doesnotexist?retry={last}", "/s/bad%20code%3Cscript%3E"):
        response = await sharing.client.get(path)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "share link" in response.text
        assert "http://signing.test/" in response.text
    assert (await sharing.client.get("/api/petitions/no-such-petition/shares")).status_code == 404


async def test_leaderboard_ranks_petitions_by_referred_signatures(sharing: Any, kit: Any) -> None:
    top = await signed_up(kit, sharing)
    for _ in range(3):
        await kit.publish(
            kit.signature(
                petition_id=top.petition_id, petition_slug=top.petition_slug, ref=top.share_code
            )
        )
    await drain(kit, sharing, top.petition_id)

    board = (await sharing.client.get("/api/leaderboard?limit=100")).json()["petitions"]
    entry = next(p for p in board if p["slug"] == top.petition_slug)
    assert entry == {
        "slug": top.petition_slug,
        "title": "Clean rivers now",
        "signatures_via_referrals": 3,
        "clicks": 0,
        "viral_coefficient": 0.75,
    }
    counts = [p["signatures_via_referrals"] for p in board]
    assert counts == sorted(counts, reverse=True)


async def test_ops_and_openapi(sharing: Any) -> None:
    assert (await sharing.client.get("/healthz")).json() == {"status": "ok"}
    ready = await sharing.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert "groundswell_sharing_redirects_total" in (await sharing.client.get("/metrics")).text
    spec = (await sharing.client.get("/openapi.json")).json()
    coefficient = spec["components"]["schemas"]["ShareStats"]["properties"]["viral_coefficient"]
    assert "signatures_via_referrals / signers" in coefficient["description"]
