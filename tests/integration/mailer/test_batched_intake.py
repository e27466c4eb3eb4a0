"""The consumer applying whole batches (one transaction, set-based statements) on the
real PostgreSQL: the same rows as one event at a time, each email with its own event's
correlation id, and all or nothing when one event of a batch cannot be opened.

Batches are handed over as the runtime's consumer does (InTransaction.batch with
`handle_batch=handler`); "one at a time" is InTransaction per event, as the consumer's
fallback runs it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from groundswell_contracts.events import (
    AnyEvent,
    BaseEvent,
    DataKeyIssued,
    DataKeyShredded,
    PrivacyRequested,
    SignatureConfirmed,
    SignatureWithdrawn,
)
from groundswell_contracts.sealed import (
    Contact,
    associated_data,
    encode_key,
    new_data_key,
    seal,
)
from groundswell_contracts.testing import Signed, duplicate_of
from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.entrypoints.handlers import SignatureHandler
from groundswell_runtime.consumer import InTransaction, PermanentError
from groundswell_runtime.correlation import bind_correlation_id
from groundswell_runtime.db import migrate
from groundswell_stack.infra import Infra

from ...conftest import scratch_database

Item = tuple[AnyEvent, str | None]


async def _apply_batch(pool: asyncpg.Pool, handler: SignatureHandler, items: list[Item]) -> None:
    await InTransaction(pool, handle_batch=handler).batch(items)


async def _apply_each(pool: asyncpg.Pool, handler: SignatureHandler, items: list[Item]) -> None:
    for event, correlation_id in items:
        bind_correlation_id(correlation_id)
        await InTransaction(pool, handle_batch=handler)(event)


def _items(events: Sequence[BaseEvent], tag: str) -> list[Item]:
    """Each event with a correlation id of its own."""
    return [(event, f"{tag}-{i}") for i, event in enumerate(events)]  # type: ignore[misc]


def _privacy_request(email: str) -> tuple[PrivacyRequested, DataKeyIssued]:
    request_id, event_id, key = uuid.uuid4(), uuid.uuid4(), new_data_key()
    contact = Contact(email=email, verification_token=f"v-{uuid.uuid4().hex}")
    event = PrivacyRequested(
        event_id=event_id,
        request_id=request_id,
        kind="erasure",
        contact=seal(contact, key, request_id, associated_data("PrivacyRequested", event_id)),
        expires_at=datetime.now(UTC) + timedelta(hours=24),
    )
    return event, DataKeyIssued(key_id=request_id, data_key=encode_key(key))


class Scenario:
    """Signatures, keys and requests covering every path of the consumer, as the
    batches each topic's partition would deliver, in order."""

    def __init__(self, new_signature: Callable[..., Signed]) -> None:
        petition, other_petition = uuid.uuid4(), uuid.uuid4()
        unique = uuid.uuid4().hex[:8]
        shared_address = f"shared-{unique}@example.test"

        def sig(**fields: Any) -> Signed:
            return new_signature(petition_id=fields.pop("petition_id", petition), **fields)

        self.signed = sig(email=shared_address)
        self.confirmed = sig(status="pending", confirmation_token=f"c-{unique}")
        self.late_key = sig()
        self.withdrawn = sig(status="pending", confirmation_token=f"w-{unique}")
        self.same_mailbox = sig(petition_id=other_petition, email=shared_address.upper())
        self.fraudulent = sig(status="fraudulent")
        self.waits_twice = sig()
        self.shredded = sig()
        self.privacy, privacy_key = _privacy_request(f"privacy-{unique}@example.test")
        replay_of_waiting = self.waits_twice.again()
        self.batches: list[list[BaseEvent]] = [
            # signer-keys: the keys of most signatures before their events
            [s.key for s in (self.signed, self.confirmed, self.withdrawn, self.same_mailbox)]
            + [privacy_key],
            # signatures: one partition's fetch
            [
                self.signed.event,
                self.confirmed.event,
                SignatureConfirmed(petition_id=petition, signature_id=self.confirmed.signature_id),
                duplicate_of(self.signed),
                duplicate_of(self.signed),  # within a day of the first: capped
                self.late_key.event,  # its key comes later
                self.withdrawn.event,
                SignatureWithdrawn(petition_id=petition, signature_id=self.withdrawn.signature_id),
                self.same_mailbox.event,
                self.fraudulent.event,
                self.signed.event,  # delivered again: dropped by its id
                self.waits_twice.event,
                duplicate_of(self.waits_twice),
                replay_of_waiting,  # another event for the same signature, same emails
            ],
            [self.privacy],
            # signer-keys: the late keys, and a key shredded right after it came
            [
                self.late_key.key,
                self.waits_twice.key,
                self.shredded.key,
                DataKeyShredded(key_id=self.shredded.signature_id),
            ],
        ]


@pytest.fixture
async def two_databases(infra: Infra) -> AsyncIterator[tuple[asyncpg.Pool, asyncpg.Pool]]:
    async with (
        scratch_database(infra, "mbatch") as batched_url,
        scratch_database(infra, "msingle") as single_url,
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
    """Everything the consumer writes, without what is random by design (message ids,
    unsubscribe tokens, sealing nonces in waiting events) or the clock."""
    queries = {
        "emails": "SELECT signature_id, kind, sequence, petition_id, address_key, recipient, "
        "content, status, correlation_id FROM mailer.emails",
        "recipients": "SELECT address_key, last_signature_id, last_petition_id "
        "FROM mailer.recipients",
        "supporters": "SELECT signature_id, petition_id, address_key, recipient, first_name, "
        "postcode_area, contact_consent, confirmed FROM mailer.supporters",
        "petitions": "SELECT petition_id, slug, title FROM mailer.petitions",
        "keys": "SELECT key_id, data_key IS NULL FROM mailer.data_keys",
        "waiting": "SELECT event_id, key_id, confirmed FROM mailer.sealed_waiting",
        "notices": "SELECT signature_id, notices FROM mailer.duplicate_notices",
        "handled": "SELECT event_id FROM mailer.processed_events",
    }
    return {
        name: sorted((tuple(r) for r in await pool.fetch(sql)), key=repr)
        for name, sql in queries.items()
    }


async def _emails(pool: asyncpg.Pool, signature_id: uuid.UUID) -> list[tuple[str, int, str]]:
    rows = await pool.fetch(
        "SELECT kind, sequence, status FROM mailer.emails WHERE signature_id = $1 ORDER BY id",
        signature_id,
    )
    return [(r["kind"], r["sequence"], r["status"]) for r in rows]


async def test_a_batch_writes_what_one_event_at_a_time_writes(
    two_databases: tuple[asyncpg.Pool, asyncpg.Pool], qkit: Any, signature: Any
) -> None:
    batched, single = two_databases
    handler = SignatureHandler(qkit.settings("postgresql://unused", 25))
    scenario = Scenario(signature)
    for n, events in enumerate(scenario.batches):
        await _apply_batch(batched, handler, _items(events, f"b{n}"))
        await _apply_each(single, handler, _items(events, f"b{n}"))

    state = await _state(batched)
    assert state == await _state(single)

    s = scenario
    assert await _emails(batched, s.signed.signature_id) == [
        ("thank_you", 1, "queued"),
        ("already_signed", 1, "queued"),  # the second attempt within the day: capped
    ]
    assert await _emails(batched, s.confirmed.signature_id) == [
        ("confirmation", 1, "queued"),
        ("thank_you", 1, "queued"),  # released by the confirmation in the same batch
    ]
    assert await _emails(batched, s.late_key.signature_id) == [("thank_you", 1, "queued")]
    assert await _emails(batched, s.withdrawn.signature_id) == [
        ("confirmation", 1, "cancelled"),
        ("thank_you", 1, "cancelled"),
    ]
    assert await _emails(batched, s.same_mailbox.signature_id) == [("thank_you", 1, "queued")]
    assert await _emails(batched, s.fraudulent.signature_id) == []
    # Three events waited for one key: the thank-you once, the notice once.
    assert await _emails(batched, s.waits_twice.signature_id) == [
        ("thank_you", 1, "queued"),
        ("already_signed", 1, "queued"),
    ]
    assert await _emails(batched, s.privacy.request_id) == [("privacy_verification", 1, "queued")]
    assert state["waiting"] == []
    assert (s.shredded.signature_id, True) in state["keys"]
    # One mailbox, two signatures: one recipient row, naming the later signature.
    [(_, last_signature, _)] = [r for r in state["recipients"] if r[0] == s.signed.email.lower()]
    assert last_signature == s.same_mailbox.signature_id
    # Each email carries the correlation id of the event that asked for it.
    correlation = {(r[0], r[1]): r[8] for r in state["emails"]}
    assert correlation[(s.signed.signature_id, "thank_you")] == "b1-0"
    assert correlation[(s.signed.signature_id, "already_signed")] == "b1-3"
    assert correlation[(s.late_key.signature_id, "thank_you")] == "b3-0"  # its key's
    assert correlation[(s.privacy.request_id, "privacy_verification")] == "b2-0"


async def test_a_batch_delivered_again_changes_nothing(
    two_databases: tuple[asyncpg.Pool, asyncpg.Pool], qkit: Any, signature: Any
) -> None:
    pool, _ = two_databases
    handler = SignatureHandler(qkit.settings("postgresql://unused", 25))
    scenario = Scenario(signature)
    for n, events in enumerate(scenario.batches):
        await _apply_batch(pool, handler, _items(events, f"b{n}"))
    before = await _state(pool)
    for n, events in enumerate(scenario.batches):
        await _apply_batch(pool, handler, _items(events, f"again{n}"))
    assert await _state(pool) == before


async def test_a_batch_with_a_contact_that_does_not_open_is_applied_not_at_all(
    two_databases: tuple[asyncpg.Pool, asyncpg.Pool], qkit: Any, signature: Any
) -> None:
    pool, _ = two_databases
    handler = SignatureHandler(qkit.settings("postgresql://unused", 25))
    good, bad = signature(), signature()
    # The bad one's key is another signature's: its contact cannot be opened.
    wrong_key = DataKeyIssued(key_id=bad.signature_id, data_key=good.key.data_key)
    await _apply_batch(pool, handler, _items([good.key, wrong_key], "k"))

    with pytest.raises(PermanentError):
        await _apply_batch(pool, handler, _items([good.event, bad.event], "s"))
    assert await _emails(pool, good.signature_id) == []  # rolled back with the bad one

    # The consumer then applies them one by one: the good one alone succeeds.
    await _apply_each(pool, handler, _items([good.event], "s"))
    with pytest.raises(PermanentError):
        await _apply_each(pool, handler, _items([bad.event], "s"))
    assert await _emails(pool, good.signature_id) == [("thank_you", 1, "queued")]
    assert await _emails(pool, bad.signature_id) == []


async def test_a_batch_wakes_the_sender_once_its_emails_are_committed(
    two_databases: tuple[asyncpg.Pool, asyncpg.Pool], qkit: Any, signature: Any
) -> None:
    pool, _ = two_databases
    handler = SignatureHandler(qkit.settings("postgresql://unused", 25))
    signatures = [signature() for _ in range(5)]
    await _apply_batch(pool, handler, _items([s.key for s in signatures], "k"))
    notified = asyncio.Event()

    def on_notify(*_: object) -> None:
        notified.set()

    async with pool.acquire() as listener:
        await listener.add_listener(repo.EMAILS_CHANNEL, on_notify)
        await _apply_batch(pool, handler, _items([s.event for s in signatures], "s"))
        async with asyncio.timeout(10):
            await notified.wait()
        await listener.remove_listener(repo.EMAILS_CHANNEL, on_notify)
    counts = await pool.fetchval("SELECT count(*) FROM mailer.emails WHERE status = 'queued'")
    assert counts == 5
