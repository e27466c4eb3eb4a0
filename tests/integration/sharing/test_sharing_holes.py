"""The holes of issues 8 and 9, each reproduced as its attack or failure.

Each test would fail on the sharing service before the fix. Clicks are counted per
network with an hourly budget, so every test clicks from addresses of its own (the
documentation ranges 198.51.100.0/24, 203.0.113.0/24 and 2001:db8::/32).
"""

from __future__ import annotations

import asyncio
import tempfile
from pathlib import Path
from typing import Any

from groundswell_contracts.events import ShareLinkClicked
from groundswell_stack.postgres import LocalPostgres
from groundswell_stack.processes import free_port

from .conftest import _running_sharing, link_exists, shares, signed_up


async def click(sharing: Any, address: str, path: str, **headers: str) -> Any:
    async with sharing.client_at(address) as client:
        return await client.get(path, headers=headers)


async def clicks_of(sharing: Any, *codes: str) -> int:
    count = await sharing.db.fetchval(
        "SELECT count(*) FROM sharing.clicks WHERE share_code = ANY($1::text[])", list(codes)
    )
    return int(count)


def admin(kit: Any, token: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token or kit.admin_token}"}


# --- item 3: public share stats name people ------------------------------------------


async def test_item3_public_share_stats_name_nobody(sharing: Any, kit: Any) -> None:
    a = await signed_up(kit, sharing, name="Zebediah Quill", leaderboard_consent=True)
    assert (await click(sharing, "198.51.100.31", f"/s/{a.share_code}?c=email")).status_code == 302
    b = await signed_up(
        kit, sharing, petition_id=a.petition_id, petition_slug=a.petition_slug, ref=a.share_code
    )

    public = await sharing.client.get(f"/api/petitions/{a.petition_slug}/shares")
    assert public.status_code == 200
    # Ranks and counts only: no first name, no share code (b's own link has no activity).
    assert public.json()["top_referrers"] == [{"rank": 1, "clicks": 1, "signatures": 1}]
    for personal in ("Zebediah", b.name.split()[0], a.share_code, b.share_code, "first_name"):
        assert personal not in public.text
    spec = (await sharing.client.get("/openapi.json")).json()
    ranked = spec["components"]["schemas"]["RankedReferrer"]["properties"]
    assert set(ranked) == {"rank", "clicks", "signatures"}

    # Organisers see the names, with the admin token and only with it.
    url = f"/api/admin/petitions/{a.petition_slug}/shares"
    wrong = "x" * len(kit.admin_token)
    for headers in (
        {},
        admin(kit, wrong),
        admin(kit, kit.admin_token + "x"),
        {"Authorization": ""},
    ):
        refused = await sharing.client.get(url, headers=headers)
        assert refused.status_code == 401, headers
        assert refused.headers["www-authenticate"] == "Bearer"
        assert "Zebediah" not in refused.text
    named = await sharing.client.get(url, headers=admin(kit))
    assert named.status_code == 200, named.text
    assert named.headers["cache-control"] == "no-store"
    body = named.json()
    assert body["top_referrers"] == [
        {
            "rank": 1,
            "first_name": "Zebediah",
            "share_code": a.share_code,
            "clicks": 1,
            "signatures": 1,
        }
    ]
    assert {k: v for k, v in body.items() if k != "top_referrers"} == {
        k: v for k, v in public.json().items() if k != "top_referrers"
    }
    unknown = await sharing.client.get(
        "/api/admin/petitions/no-such-one/shares", headers=admin(kit)
    )
    assert unknown.status_code == 404


# --- item 6: X-Forwarded-For ---------------------------------------------------------


async def test_item6_forwarded_for_is_believed_from_trusted_proxies_only(
    sharing: Any, kit: Any
) -> None:
    a = await signed_up(kit, sharing)
    path = f"/s/{a.share_code}"
    # Behind the trusted proxy, two people are two visitors, not one proxy address...
    for forwarded in ("203.0.113.61", "203.0.113.62", "10.9.9.9, 203.0.113.62"):
        response = await click(sharing, kit.proxy, path, **{"x-forwarded-for": forwarded})
        assert response.status_code == 302
    # ...the last one prepended a made-up hop, but the proxy's own hop names the client.
    # A caller that is not a trusted proxy cannot pick its identity with the header.
    for spoofed in ("203.0.113.71", "203.0.113.72", "203.0.113.73"):
        response = await click(sharing, "198.51.100.61", path, **{"x-forwarded-for": spoofed})
        assert response.status_code == 302
    assert await clicks_of(sharing, a.share_code) == 3
    assert (await shares(sharing, a.petition_slug))["clicks"] == 3


# --- item 8: share-click inflation ---------------------------------------------------


async def test_item8_changing_the_user_agent_does_not_inflate_clicks(
    sharing: Any, kit: Any
) -> None:
    a = await signed_up(kit, sharing)
    path = f"/s/{a.share_code}"
    for i in range(20):
        response = await click(
            sharing, "198.51.100.81", path, **{"user-agent": f"{kit.browser} v{i}"}
        )
        assert response.status_code == 302
    # An IPv6 host holds a whole /64: its addresses are one network.
    for host in range(1, 6):
        response = await click(sharing, f"2001:db8:81:1::{host}", path)
        assert response.status_code == 302
    assert await clicks_of(sharing, a.share_code) == 2
    # The redirect never depended on it: every visit got the petition.
    assert response.headers["location"] == (
        f"{kit.public_base_url}/p/{a.petition_slug}?ref={a.share_code}"
    )


async def test_item8_counted_clicks_per_network_are_rate_limited(sharing: Any, kit: Any) -> None:
    links = [await signed_up(kit, sharing) for _ in range(5)]
    codes = [link.share_code for link in links]
    async with sharing.instance(clicks_per_network_hour=3, clicks_per_site_hour=5) as limited:
        for link in links:
            response = await click(limited, "198.51.100.91", f"/s/{link.share_code}")
            assert response.status_code == 302
            assert f"/p/{link.petition_slug}?" in response.headers["location"]
        assert await clicks_of(sharing, *codes) == 3  # the network's budget

        # Three /64s of one IPv6 /48 site: each has a budget of 3, the site one of 5.
        for subnet in (1, 2, 3):
            for link in links:
                response = await click(limited, f"2001:db8:91:{subnet}::1", f"/s/{link.share_code}")
                assert response.status_code == 302
        assert await clicks_of(sharing, *codes) == 3 + 5

    events = await kit.topic_events(kit.infra.kafka_bootstrap, "share-clicks")
    emitted = [e for e in events if isinstance(e, ShareLinkClicked) and e.share_code in codes]
    assert len(emitted) == 8


# --- item 12: impossible input -------------------------------------------------------


async def test_item12_impossible_slugs_and_codes_are_4xx_never_500(sharing: Any, kit: Any) -> None:
    for path in (
        "/api/petitions/a%00b/shares",
        "/api/petitions/%ED%A0%80/shares",  # an encoded lone surrogate
        "/api/petitions/a%0Ab/shares",
        "/api/petitions/" + "x" * 300 + "/shares",
    ):
        for url, headers in ((path, {}), (path.replace("/api/", "/api/admin/"), admin(kit))):
            response = await sharing.client.get(url, headers=headers)
            assert response.status_code == 404, (url, response.text)
            assert response.json() == {
                "detail": "No petition with this slug is known to the sharing service"
            }
    for path in ("/s/a%00b", "/s/abc%0A", "/s/" + "x" * 65):
        response = await click(sharing, "198.51.100.121", path)
        assert response.status_code == 404 and "share link" in response.text

    a = await signed_up(kit, sharing)
    # A mangled channel or petition hint still leads to the link's own petition.
    for query in ("c=%00", "c=%ED%A0%80", "p=a%00b", "p=elsewhere"):
        response = await click(sharing, "198.51.100.122", f"/s/{a.share_code}?{query}")
        assert response.status_code == 302, query
        assert f"/p/{a.petition_slug}?ref={a.share_code}" in response.headers["location"]
    bad_retry = await click(sharing, "198.51.100.122", f"/s/{a.share_code}?retry=-1")
    assert bad_retry.status_code == 422


# --- issue 9: a stable visitor salt --------------------------------------------------


async def test_issue9_a_restart_does_not_count_a_repeat_click_again(sharing: Any, kit: Any) -> None:
    # The module's app has no SHARING_VISITOR_SALT: its salt comes from ADMIN_TOKEN.
    assert sharing.settings.visitor_salt is None
    a = await signed_up(kit, sharing)
    path = f"/s/{a.share_code}"
    async with sharing.instance() as before_restart:
        assert (await click(before_restart, "198.51.100.95", path)).status_code == 302
    async with sharing.instance() as after_restart:
        assert (await click(after_restart, "198.51.100.95", path)).status_code == 302
    assert (await click(sharing, "198.51.100.95", path)).status_code == 302  # another replica
    assert await clicks_of(sharing, a.share_code) == 1


# --- issue 9: lag is not an error ----------------------------------------------------


async def test_issue9_a_link_clicked_before_its_event_waits_then_counts_once(
    sharing: Any, kit: Any
) -> None:
    a = kit.signature()  # issued by signing, not yet consumed here
    path = f"/s/{a.share_code}"

    first = await click(sharing, "198.51.100.101", f"{path}?c=whatsapp")
    assert first.status_code == 202
    assert first.headers["refresh"] == f"1; url={a.share_code}?c=whatsapp&retry=1"
    assert first.headers["cache-control"] == "no-store"
    assert "Opening the petition" in first.text
    second = await click(sharing, "198.51.100.101", f"{path}?c=whatsapp&retry=1")
    assert second.headers["refresh"] == f"1; url={a.share_code}?c=whatsapp&retry=2"

    # With the petition named in the link, the visitor goes straight there.
    hinted = await click(sharing, "198.51.100.102", f"{path}?p={a.petition_slug}")
    assert hinted.status_code == 302
    assert hinted.headers["location"] == (
        f"{kit.public_base_url}/p/{a.petition_slug}?ref={a.share_code}"
    )
    assert await clicks_of(sharing, a.share_code) == 0

    await kit.publish(a)

    async def attributed() -> dict[str, Any] | None:
        if not await link_exists(sharing, a.share_code):
            return None
        return await shares(sharing, a.petition_slug)

    stats = await kit.eventually(attributed)
    assert stats["clicks"] == 2
    assert stats["by_channel"] == {
        "direct": {"clicks": 1, "signatures": 0},
        "whatsapp": {"clicks": 1, "signatures": 0},
    }

    # The waiting browser's next retry now redirects, without counting its click again.
    third = await click(sharing, "198.51.100.101", f"{path}?c=whatsapp&retry=2")
    assert third.status_code == 302
    assert third.headers["location"].endswith(f"?ref={a.share_code}&ref_channel=whatsapp")
    # A known code leads to its own petition whatever `p` says.
    own = await click(sharing, "198.51.100.103", f"{path}?p=somewhere-else")
    assert f"/p/{a.petition_slug}?" in own.headers["location"]
    assert await clicks_of(sharing, a.share_code) == 3

    async def clicked() -> list[Any]:
        events = await kit.topic_events(kit.infra.kafka_bootstrap, "share-clicks")
        found = [
            e for e in events if isinstance(e, ShareLinkClicked) and e.share_code == a.share_code
        ]
        return found if len(found) >= 3 else []

    events = await kit.eventually(clicked)
    assert sorted(e.channel for e in events) == ["direct", "direct", "whatsapp"]
    assert (
        await sharing.db.fetchval(
            "SELECT count(*) FROM sharing.pending_clicks WHERE share_code = $1", a.share_code
        )
        == 0
    )


async def test_issue9_a_code_that_never_arrives_is_a_404_after_the_bounded_wait(
    sharing: Any,
) -> None:
    last = sharing.settings.link_wait_attempts
    assert last > 0
    waiting = await click(sharing, "198.51.100.111", f"/s/never-issued?retry={last - 1}")
    assert waiting.status_code == 202
    assert waiting.headers["refresh"].endswith(f"url=never-issued?retry={last}")
    gone = await click(sharing, "198.51.100.111", f"/s/never-issued?retry={last}")
    assert gone.status_code == 404 and "share link" in gone.text
    # A robot (no refresh followed) is never kept as a pending click.
    robot = await click(sharing, "198.51.100.112", "/s/never-issued-2", **{"user-agent": "curl/8"})
    assert robot.status_code == 202
    kept = await sharing.db.fetchval(
        "SELECT count(*) FROM sharing.pending_clicks WHERE share_code = 'never-issued-2'"
    )
    assert kept == 0


async def test_issue9_a_click_racing_its_event_is_counted_not_lost(sharing: Any, kit: Any) -> None:
    """The event's transaction holds the code's lock while it stores the link: a click
    arriving meanwhile must wait and then see the link, not leave a pending row that the
    handler has already looked for (it would never count)."""
    a = kit.signature()
    async with sharing.db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            # What the SignatureCreated handler does first (adapters/clicks.py, lock_code).
            await conn.execute("SELECT pg_advisory_xact_lock(7302, hashtext($1))", a.share_code)
            visit = asyncio.create_task(click(sharing, "198.51.100.131", f"/s/{a.share_code}"))

            async def click_waits_for_the_lock() -> bool:
                waiting = await sharing.db.fetchval(
                    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                    "AND classid = 7302 AND NOT granted"
                )
                return bool(waiting)

            await kit.eventually(click_waits_for_the_lock)
            await conn.execute(
                "INSERT INTO sharing.petitions (petition_id, slug, title, updated_at) "
                "VALUES ($1, $2, 'Race', now())",
                a.petition_id,
                a.petition_slug,
            )
            await conn.execute(
                "INSERT INTO sharing.share_links (share_code, signature_id, petition_id, "
                "status, created_at) VALUES ($1, $2, $3, 'counted', now())",
                a.share_code,
                a.signature_id,
                a.petition_id,
            )
        finally:
            await transaction.commit()
    response = await visit
    assert response.status_code == 302
    assert f"/p/{a.petition_slug}?ref={a.share_code}" in response.headers["location"]
    assert await clicks_of(sharing, a.share_code) == 1
    pending = await sharing.db.fetchval(
        "SELECT count(*) FROM sharing.pending_clicks WHERE share_code = $1", a.share_code
    )
    assert pending == 0


# --- issue 9: a database restart is a 503 with Retry-After, never a 500 ---------------


async def test_issue9_a_database_that_is_away_is_a_503_not_a_500(infra: Any, topics: None) -> None:
    # A cluster of its own, restarted for real (the shared one serves other tests).
    root = Path(tempfile.mkdtemp(prefix="groundswell-sharing-restart-"))
    root.chmod(0o755)
    postgres = await asyncio.to_thread(LocalPostgres(root, free_port()).start)
    try:
        async for running in _running_sharing(postgres.url, infra):
            await asyncio.to_thread(postgres.shutdown, "fast")
            away = await click(running, "198.51.100.150", "/s/AbCdEf12")
            assert away.status_code == 503, away.text
            assert int(away.headers["retry-after"]) >= 1
            await asyncio.to_thread(postgres.start)
            for _ in range(50):
                back = await click(running, "198.51.100.151", "/s/AbCdEf12")
                if back.status_code != 503:
                    break
                await asyncio.sleep(0.1)
            assert back.status_code in (202, 404)  # unknown yet: waits, never a 5xx
    finally:
        await asyncio.to_thread(postgres.stop)
