"""The send queue against real PostgreSQL and real SMTP servers: many emails over a
pool of persistent connections, a sender crashing mid-send, the database going away
while emails are being delivered, and the LISTEN connection coming back after it.

The dispatcher runs on its own here (no broker): the emails are queued rows, as the
event handlers leave them.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import Counter
from email import message_from_bytes, policy
from typing import Any

import asyncpg
import pytest


def sink_deliveries(mail_dir: Any, prefix: str) -> Counter[str]:
    """How many messages the session's sink holds for each address starting with `prefix`."""
    counts: Counter[str] = Counter()
    for path in mail_dir.glob("*.eml"):
        raw = path.read_bytes()
        if prefix.encode() not in raw:
            continue
        to = str(message_from_bytes(raw, policy=policy.default)["To"])
        counts[to.strip("<>")] += 1
    return counts


async def outbox_sent_events(db: Any) -> int:
    return int(
        await db.fetchval("SELECT count(*) FROM mailer.outbox WHERE event_type = 'EmailSent'")
    )


async def test_many_emails_over_persistent_connections_arrive_exactly_once(
    infra: Any, queue_db: Any, qkit: Any
) -> None:
    if infra.mail_dir is None:
        pytest.skip("needs the local SMTP sink (SMTP_HOST points elsewhere)")
    prefix = f"bulk-{uuid.uuid4().hex[:8]}"
    addresses = await queue_db.add_emails(300, prefix)
    settings = qkit.settings(
        queue_db.url, infra.smtp_port, send_concurrency=4, claim_batch=40, smtp_timeout_seconds=15
    )
    async with qkit.running_dispatcher(queue_db.url, settings):
        await qkit.eventually(lambda: queue_db.all_sent(300), timeout=120)

    async def all_arrived() -> Counter[str]:
        counts = sink_deliveries(infra.mail_dir, prefix)
        return counts if len(counts) == 300 else Counter()

    counts = await qkit.eventually(all_arrived)
    assert set(counts) == set(addresses)
    assert set(counts.values()) == {1}
    assert await queue_db.db.fetchval("SELECT max(attempts) FROM mailer.emails") == 1
    assert await outbox_sent_events(queue_db.db) == 300


async def test_connections_are_reused_and_reopened_when_the_server_drops_them(
    queue_db: Any, counting_smtp: Any, qkit: Any
) -> None:
    smtp, port = counting_smtp
    addresses = await queue_db.add_emails(60, f"reuse-{uuid.uuid4().hex[:8]}")
    settings = qkit.settings(
        queue_db.url, port, send_concurrency=2, claim_batch=20, smtp_messages_per_connection=25
    )
    async with qkit.running_dispatcher(queue_db.url, settings) as (dispatcher, _task):
        await qkit.eventually(lambda: queue_db.all_sent(60))
        # 60 messages over 2 connections, each reopened after 25 messages.
        assert smtp.sessions <= 2 * 3
        # The server drops every idle connection (as on a restart or an idle timeout):
        # the next messages go over fresh ones, without a failed attempt.
        sessions = smtp.sessions
        await asyncio.to_thread(smtp.restart)
        more = await queue_db.add_emails(10, f"after-{uuid.uuid4().hex[:8]}")
        await qkit.eventually(lambda: queue_db.all_sent(70))
    assert smtp.sessions > sessions  # reopened
    assert sorted(smtp.delivered) == sorted(addresses + more)
    assert set(smtp.delivered.values()) == {1}
    assert await queue_db.db.fetchval("SELECT max(attempts) FROM mailer.emails") == 1
    assert dispatcher.unrecorded == 0


async def test_a_crashed_senders_claims_are_taken_over_with_no_more_duplicates_than_in_flight(
    queue_db: Any, counting_smtp: Any, qkit: Any
) -> None:
    smtp, port = counting_smtp
    smtp.delay = 0.05  # a slow relay, so conversations are under way when it dies
    addresses = await queue_db.add_emails(80, f"crash-{uuid.uuid4().hex[:8]}")
    settings = qkit.settings(queue_db.url, port, send_concurrency=4, claim_batch=20)

    async with qkit.running_dispatcher(queue_db.url, settings, claimant="first") as (
        first,
        task,
    ):
        await qkit.eventually(lambda: _delivered_at_least(smtp, 10))
        # The crash: every task of the first dispatcher stops where it is, nothing is
        # written. What it had in conversation or unrecorded may go out twice.
        at_risk = first.unrecorded
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    orphaned = await queue_db.db.fetchval(
        "SELECT count(*) FROM mailer.emails WHERE status = 'sending' AND claimed_by = 'first'"
    )
    assert orphaned > 0  # the crash left claims behind

    async with qkit.running_dispatcher(queue_db.url, settings, claimant="second"):
        # The first dispatcher's lease (2 s here) lapses and the second takes its claims
        # over; with the old fixed 300 s lease this would not finish in time.
        await qkit.eventually(lambda: queue_db.all_sent(80), timeout=30)

    assert set(smtp.delivered) == set(addresses)  # nothing lost
    duplicates = sum(n - 1 for n in smtp.delivered.values())
    assert duplicates <= at_risk
    taken_over = await queue_db.db.fetchval("SELECT count(*) FROM mailer.emails WHERE attempts = 2")
    assert taken_over >= orphaned  # each orphaned claim was claimed again


async def test_delivered_emails_are_marked_sent_after_the_database_comes_back(
    infra: Any, queue_db: Any, counting_smtp: Any, qkit: Any
) -> None:
    smtp, port = counting_smtp
    smtp.delay = 0.05
    addresses = await queue_db.add_emails(60, f"blip-{uuid.uuid4().hex[:8]}")
    # A long lease, so the senders keep sending through the outage.
    settings = qkit.settings(
        queue_db.url,
        port,
        send_concurrency=2,
        claim_batch=60,
        send_lease_seconds=30.0,
        lease_renew_seconds=1.0,
    )
    database = queue_db.url.rpartition("/")[2]
    admin = await asyncpg.connect(infra.database_url)
    try:
        async with qkit.running_dispatcher(queue_db.url, settings) as (dispatcher, _task):
            await qkit.eventually(lambda: _delivered_at_least(smtp, 3))
            # The database goes away: every connection of the mailer is cut and no new
            # one is accepted, while the SMTP conversations go on.
            await admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS false")
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1",
                database,
            )
            delivered_during = len(smtp.delivered)

            async def marks_waiting() -> bool:
                return len(smtp.delivered) > delivered_during + 3 and dispatcher.unrecorded > 3

            await qkit.eventually(marks_waiting)
            await admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
            await qkit.eventually(lambda: queue_db.all_sent(60), timeout=60)
            # The LISTEN connection came back too: an email queued now is announced.
            await qkit.eventually(lambda: _listening(admin, database))
    finally:
        await admin.execute(f"ALTER DATABASE {database} ALLOW_CONNECTIONS true")
        await admin.close()

    assert sorted(smtp.delivered) == sorted(addresses)
    assert set(smtp.delivered.values()) == {1}  # none sent again because its mark failed
    assert await queue_db.db.fetchval("SELECT max(attempts) FROM mailer.emails") == 1
    assert await outbox_sent_events(queue_db.db) == 60


async def test_the_listener_comes_back_after_its_connection_is_cut(
    infra: Any, queue_db: Any, counting_smtp: Any, qkit: Any
) -> None:
    smtp, port = counting_smtp
    # Polling only every 60 s: an email sent within the wait below was announced by
    # NOTIFY, on a LISTEN connection opened after the cut.
    settings = qkit.settings(queue_db.url, port, poll_interval_seconds=60.0)
    database = queue_db.url.rpartition("/")[2]
    admin = await asyncpg.connect(infra.database_url)
    try:
        async with qkit.running_dispatcher(queue_db.url, settings):
            await qkit.eventually(lambda: _listening(admin, database))
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = $1 AND query LIKE 'LISTEN%'",
                database,
            )
            await qkit.eventually(lambda: _listening(admin, database))
            [address] = await queue_db.add_emails(1, f"notify-{uuid.uuid4().hex[:8]}")
            await qkit.eventually(lambda: _delivered_at_least(smtp, 1), timeout=30)
    finally:
        await admin.close()
    assert list(smtp.delivered) == [address]


async def _delivered_at_least(smtp: Any, count: int) -> bool:
    return len(smtp.delivered) >= count


async def _listening(admin: asyncpg.Connection, database: str) -> bool:
    found = await admin.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND query LIKE 'LISTEN%'",
        database,
    )
    return bool(found)


async def test_a_dispatcher_yielding_to_a_surge_claims_nothing_then_sends_everything(
    queue_db: Any, counting_smtp: Any, qkit: Any, pressure: Any
) -> None:
    smtp, port = counting_smtp
    surge = pressure.surge_yield(interval=0.01)
    sampler = asyncio.create_task(surge.run())

    async def yielding() -> bool:
        return surge.yielding

    try:
        await qkit.eventually(yielding)
        addresses = await queue_db.add_emails(30, f"surge-{uuid.uuid4().hex[:8]}")
        settings = qkit.settings(queue_db.url, port, send_concurrency=2, claim_batch=10)
        async with qkit.running_dispatcher(queue_db.url, settings, surge=surge):
            await asyncio.sleep(2.0)  # ten polls and a NOTIFY: none claims while it yields
            assert await queue_db.statuses() == {"queued": 30}
            assert not smtp.delivered
            pressure.share = 0.0  # the surge passes
            await qkit.eventually(lambda: queue_db.all_sent(30), timeout=60)
    finally:
        sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sampler
    assert sorted(smtp.delivered) == sorted(addresses)
    assert set(smtp.delivered.values()) == {1}


async def test_a_dispatcher_is_behind_when_it_claims_emails_due_for_a_while(
    queue_db: Any, counting_smtp: Any, qkit: Any
) -> None:
    smtp, port = counting_smtp
    settings = qkit.settings(queue_db.url, port, send_concurrency=2, claim_batch=10)
    async with qkit.running_dispatcher(queue_db.url, settings) as (dispatcher, _task):

        async def keeping_up() -> bool:
            return await queue_db.all_sent(5) and not dispatcher.behind()

        await queue_db.add_emails(5, f"due-now-{uuid.uuid4().hex[:8]}")
        await qkit.eventually(keeping_up)
    # Due half a minute before any dispatcher ran, and sent slowly: the next dispatcher
    # is behind while it works through them, and no longer once it has caught up.
    await queue_db.add_emails(6, f"due-long-{uuid.uuid4().hex[:8]}")
    await queue_db.db.execute(
        "UPDATE mailer.emails SET next_attempt_at = now() - interval '30 seconds' "
        "WHERE status = 'queued'"
    )
    smtp.delay = 0.3
    slow = qkit.settings(queue_db.url, port, send_concurrency=1, claim_batch=2)
    async with qkit.running_dispatcher(queue_db.url, slow) as (dispatcher, _task):

        async def behind() -> bool:
            return dispatcher.behind()

        async def caught_up() -> bool:
            return await queue_db.all_sent(11) and not dispatcher.behind()

        await qkit.eventually(behind, interval=0.02)
        await qkit.eventually(caught_up)
