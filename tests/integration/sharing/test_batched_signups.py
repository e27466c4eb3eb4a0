"""The consumer applying whole batches (one transaction, a few set-based statements per
run of new signatures) on the real PostgreSQL: the same rows as one event at a time, a
batch delivered again changes nothing, and the code locks still make a click racing its
link's event count once.

Batches are handed over as the runtime's consumer does (InTransaction.batch with
`handle_batch=handler`); "one at a time" is InTransaction per event, as the consumer's
fallback runs it.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from groundswell_contracts.events import (
    AnyEvent,
    BaseEvent,
    PetitionCreated,
    SignatureConfirmed,
    SignatureErased,
    SignatureWithdrawn,
)
from groundswell_contracts.testing import Signed, duplicate_of
from groundswell_runtime.consumer import InTransaction
from groundswell_runtime.correlation import bind_correlation_id
from groundswell_runtime.db import migrate
from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.domain.links import first_name
from groundswell_sharing.entrypoints.handlers import SharingHandler
from groundswell_stack.infra import Infra

from ...conftest import scratch_database
from .conftest import new_signature

Item = tuple[AnyEvent, str | None]
HANDLER = SharingHandler(SharingSettings(DATABASE_URL="postgresql://unused"))


async def _apply_batch(pool: asyncpg.Pool, items: list[Item]) -> None:
    await InTransaction(pool, handle_batch=HANDLER).batch(items)


async def _apply_each(pool: asyncpg.Pool, items: list[Item]) -> None:
    for event, correlation_id in items:
        bind_correlation_id(correlation_id)
        await InTransaction(pool, handle_batch=HANDLER)(event)


def _items(events: Sequence[BaseEvent], tag: str) -> list[Item]:
    """Each event with a correlation id of its own."""
    return [(event, f"{tag}-{i}") for i, event in enumerate(events)]  # type: ignore[misc]


class Scenario:
    """Signatures covering every path of the handler, as one partition of `signatures`
    would deliver them, with a petitions batch before and clicks that waited for links."""

    def __init__(self) -> None:
        petition, other_petition = uuid.uuid4(), uuid.uuid4()
        unique = uuid.uuid4().hex[:8]
        slug = f"clean-rivers-{unique}"

        def sig(**fields: Any) -> Signed:
            fields.setdefault("petition_id", petition)
            fields.setdefault("petition_slug", slug)
            return new_signature(**fields)

        self.petition, self.slug = petition, slug
        self.a = sig(leaderboard_consent=True, source="newsletter")
        self.elsewhere = sig(petition_id=other_petition, petition_slug=f"other-{unique}")
        self.b = sig(ref=self.a.share_code, ref_channel="whatsapp")
        # No channel on the page: credited to the latest click on a's link, which waited
        # for the link and is moved in this very batch.
        self.c = sig(status="pending", ref=self.a.share_code)
        self.e = sig()
        # d names e's code before e's event: one at a time e's link is not there yet.
        self.d = sig(ref=self.e.share_code)
        self.fraudulent = sig(status="fraudulent", ref=self.a.share_code)
        self.own = sig()
        self.own_ref = self.own.again(ref=self.own.share_code)
        self.cross = sig(ref=self.elsewhere.share_code)
        self.unknown = sig(ref="never-issued")
        self.erased = sig(leaderboard_consent=True)
        self.late = sig(ref=self.a.share_code, ref_channel="email")
        self.petitions: list[BaseEvent] = [
            PetitionCreated(
                petition_id=petition, slug=slug, title="Clean rivers", target="Parliament"
            )
        ]
        self.batches: list[list[BaseEvent]] = [
            [self.elsewhere.event],
            [
                self.a.event,
                self.b.event,
                self.c.event,
                SignatureConfirmed(petition_id=petition, signature_id=self.c.signature_id),
                self.d.event,
                self.e.event,
                duplicate_of(self.e),  # not sharing's business
                self.fraudulent.event,
                self.a.event,  # delivered again: dropped by its id
                self.a.again(source="other"),  # a replay with a new id: the first link stays
                self.own_ref,  # in the same run as `own`'s first event: a new run
                self.own.event,  # an older event for the same signature, after it
                self.cross.event,
                self.unknown.event,
                self.erased.event,
                SignatureErased(
                    petition_id=petition, signature_id=self.erased.signature_id, counted=True
                ),
                self.erased.again(),  # after its erasure: the name stays gone
                SignatureWithdrawn(petition_id=petition, signature_id=self.b.signature_id),
                self.late.event,
            ],
        ]

    def waiting_clicks(self) -> list[tuple[str, str, str, datetime]]:
        """(code, channel, visitor, clicked_at) of clicks kept before their links came."""
        now = datetime.now(UTC).replace(microsecond=0)
        return [
            (self.a.share_code, "whatsapp", "v1", now - timedelta(minutes=5)),
            (self.a.share_code, "sms", "v2", now - timedelta(minutes=1)),
            (self.e.share_code, "x", "v3", now - timedelta(minutes=2)),
            (self.e.share_code, "x", "stale", now - timedelta(days=2)),  # waited too long
        ]


async def _keep_waiting(pool: asyncpg.Pool, clicks: list[tuple[str, str, str, datetime]]) -> None:
    await pool.executemany(
        "INSERT INTO sharing.pending_clicks (share_code, channel, visitor_hash, clicked_on, "
        "clicked_at) VALUES ($1, $2, $3, $4::timestamptz::date, $4)",
        clicks,
    )


@pytest.fixture
async def two_databases(infra: Infra) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    async with (
        scratch_database(infra, "sbatch") as batched_url,
        scratch_database(infra, "ssingle") as single_url,
    ):
        pools = []
        for url in (batched_url, single_url):
            await migrate(url, repo.SCHEMA, repo.migrations())
            pools.append(await asyncpg.create_pool(url, min_size=1, max_size=3))
        try:
            yield pools[0], pools[1]
        finally:
            for pool in pools:
                pool.terminate()


async def _state(pool: asyncpg.Pool) -> dict[str, list[tuple[Any, ...]]]:
    """Everything the consumer writes, without what is new by design in every run (the
    outbox events' own ids and times)."""
    queries = {
        "petitions": "SELECT petition_id, slug, title, updated_at FROM sharing.petitions",
        "share_links": "SELECT share_code, signature_id, petition_id, first_name, source, "
        "status, created_at FROM sharing.share_links",
        "referrals": "SELECT signature_id, share_code, referrer_signature_id, petition_id, "
        "channel, status, created_at FROM sharing.referrals",
        "clicks": "SELECT share_code, petition_id, channel, visitor_hash, clicked_on, "
        "clicked_at FROM sharing.clicks",
        "pending_clicks": "SELECT share_code, channel, visitor_hash FROM sharing.pending_clicks",
        "processed_events": "SELECT event_id FROM sharing.processed_events",
        "outbox": "SELECT event_type, topic, message_key, "
        "(payload::jsonb - 'event_id' - 'occurred_at')::text, correlation_id "
        "FROM sharing.outbox",
    }
    return {
        name: sorted((tuple(r) for r in await pool.fetch(sql)), key=repr)
        for name, sql in queries.items()
    }


async def _apply_scenario(pool: asyncpg.Pool, scenario: Scenario, *, batched: bool) -> None:
    apply = _apply_batch if batched else _apply_each
    await apply(pool, _items(scenario.petitions, "p"))
    for n, events in enumerate(scenario.batches):
        await apply(pool, _items(events, f"b{n}"))


async def test_a_batch_writes_what_one_event_at_a_time_writes(
    two_databases: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    batched, single = two_databases
    s = Scenario()
    waiting = s.waiting_clicks()
    for pool in (batched, single):
        await _keep_waiting(pool, waiting)
    await _apply_scenario(batched, s, batched=True)
    await _apply_scenario(single, s, batched=False)

    state = await _state(batched)
    assert state == await _state(single)

    links = {r[0]: r for r in state["share_links"]}
    referrals = {r[0]: r[1:] for r in state["referrals"]}
    # The first event's link, not the replay's; the name of a consenting signer only.
    assert links[s.a.share_code][3:5] == (first_name(s.a.leaderboard_name), "newsletter")
    assert links[s.erased.share_code][3] is None  # erased, and its replay did not restore it
    assert s.fraudulent.share_code not in links
    assert links[s.c.share_code][5] == "counted"  # confirmed in the same batch
    assert referrals[s.b.signature_id][4] == "void"  # withdrawn
    assert referrals[s.c.signature_id][3:5] == ("sms", "counted")  # the latest moved click
    assert referrals[s.late.signature_id][3:5] == ("email", "counted")
    for nobody in (s.d, s.fraudulent, s.own, s.cross, s.unknown):
        assert nobody.signature_id not in referrals
    # The waiting clicks counted once their links came, except the one that waited too long.
    assert sorted((r[0], r[2]) for r in state["clicks"]) == sorted(
        [(s.a.share_code, "whatsapp"), (s.a.share_code, "sms"), (s.e.share_code, "x")]
    )
    assert state["pending_clicks"] == []
    handled = {r[0] for r in state["processed_events"]}
    assert s.fraudulent.event.event_id not in handled
    assert s.a.event.event_id in handled
    # Each outbox event carries the correlation id of the event it came from.
    outbox = [(r[0], json.loads(r[3]), r[4]) for r in state["outbox"]]
    clicked = sorted(
        (p["share_code"], p["channel"], c) for t, p, c in outbox if t == "ShareLinkClicked"
    )
    assert clicked == sorted(
        [
            (s.a.share_code, "whatsapp", "b1-0"),
            (s.a.share_code, "sms", "b1-0"),
            (s.e.share_code, "x", "b1-5"),
        ]
    )
    attributed = sorted((p["signature_id"], c) for t, p, c in outbox if t == "ReferralAttributed")
    assert attributed == sorted(
        [
            (str(s.b.signature_id), "b1-1"),
            (str(s.c.signature_id), "b1-3"),  # counted on its confirmation
            (str(s.late.signature_id), "b1-18"),
        ]
    )


async def test_a_batch_delivered_again_changes_nothing(
    two_databases: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    pool, _ = two_databases
    s = Scenario()
    await _keep_waiting(pool, s.waiting_clicks())
    await _apply_scenario(pool, s, batched=True)
    before = await _state(pool)
    await _apply_scenario(pool, s, batched=True)
    assert await _state(pool) == before
    assert len(before["share_links"]) == 11 and len(before["referrals"]) == 3


async def test_a_batch_holds_each_new_code_lock_until_it_commits(
    two_databases: tuple[asyncpg.Pool, asyncpg.Pool],
) -> None:
    """What a click on a code not known yet waits for (adapters/clicks.py): the lock of
    every code the batch stores, taken with the link and held to the commit."""
    pool, _ = two_databases
    signatures = [new_signature() for _ in range(3)]
    async with pool.acquire() as conn, conn.transaction():
        await HANDLER(conn, _items([s.event for s in signatures], "l"))
        held = await pool.fetchval(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND classid = 7302 "
            "AND granted AND pid = $1",
            conn.get_server_pid(),
        )
        assert held == 3
        # Not visible to the click before the commit: it must wait for the lock.
        seen = await pool.fetchval(
            "SELECT count(*) FROM sharing.share_links WHERE share_code = ANY($1::text[])",
            [s.share_code for s in signatures],
        )
        assert seen == 0


async def test_a_click_racing_a_batch_waits_and_counts(sharing: Any, kit: Any) -> None:
    """A click on a code the open batch is storing waits for the batch's lock, then sees
    the link: counted as a click, never left pending."""
    first, racing = kit.signature(), kit.signature()
    async with sharing.db.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            await HANDLER(conn, _items([first.event, racing.event], "race"))
            async with sharing.client_at("198.51.100.141") as client:
                visit = asyncio.create_task(client.get(f"/s/{racing.share_code}?c=sms"))

                async def click_waits_for_the_lock() -> bool:
                    waiting = await sharing.db.fetchval(
                        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                        "AND classid = 7302 AND NOT granted"
                    )
                    return bool(waiting)

                await kit.eventually(click_waits_for_the_lock)
                await transaction.commit()
                response = await visit
        except BaseException:
            await transaction.rollback()
            raise
    assert response.status_code == 302
    assert f"/p/{racing.petition_slug}?ref={racing.share_code}" in response.headers["location"]
    counted = await sharing.db.fetch(
        "SELECT channel FROM sharing.clicks WHERE share_code = $1", racing.share_code
    )
    assert [r["channel"] for r in counted] == ["sms"]
    pending = await sharing.db.fetchval(
        "SELECT count(*) FROM sharing.pending_clicks WHERE share_code = $1", racing.share_code
    )
    assert pending == 0
