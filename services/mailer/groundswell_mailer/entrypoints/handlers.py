"""Signature events -> emails to send.

The handler only records emails (in the transaction that claims the event); the
dispatcher sends them. A slow or failing SMTP server therefore never stalls the
`signatures` stream, and a redelivered event finds its emails already recorded.

A batch (a partition's fetch, one transaction: groundswell_runtime.consumer) is applied
set-based: its events are claimed, their keys looked up and their rows written with a
few statements for the whole batch (adapters/intake.py) instead of about ten per event.
The runtime hands the handler the whole batch (`InTransaction(handle_batch=...)`), with
each event's correlation id; a single event (no batch, or the one-by-one fallback after
a failed batch) is a batch of one. The consumer applies a poll's `signer-keys`
partitions before its `signatures` ones (`first=`), and adds to a poll of contacts the
keys fetched meanwhile, so most keys are in place before the contacts they open arrive.

Contact details come sealed under each signer's data key (groundswell_contracts.sealed),
and the keys come on `signer-keys`: an event whose key has not arrived waits in
`sealed_waiting` and is recorded when the key comes (adapters/keys.py explains why the
two never miss each other). `DataKeyShredded` (erasure, retention) deletes the key and
everything held for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from functools import partial
from uuid import UUID

import asyncpg
import structlog
from groundswell_contracts.events import (
    AnyEvent,
    DataKeyIssued,
    DataKeyShredded,
    PrivacyRequested,
    SignatureConfirmed,
    SignatureCreated,
    SignatureDuplicateAttempted,
    SignatureInvalidated,
    SignatureWithdrawn,
    parse_event,
)
from groundswell_contracts.sealed import Contact, Unreadable, associated_data, decode_key, unseal
from groundswell_runtime.consumer import Item, PermanentError, claim_event

from groundswell_mailer.adapters import intake, keys, supporters
from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.adapters.smtp import new_message_id
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import ALREADY_SIGNED_WINDOW
from groundswell_mailer.domain.intake import Opened, Sealed, plan, rounds

log = structlog.get_logger()

# Applied in bulk; the others (confirmations, withdrawals, shredding) one at a time, in
# their place in the batch.
_BULK = (
    SignatureCreated,
    SignatureDuplicateAttempted,
    PrivacyRequested,
    DataKeyIssued,
)


class SignatureHandler:
    """Applies signature and key events inside the transaction it is given (see
    groundswell_runtime.consumer.InTransaction: one per event, or one per batch).

    A database that is away (class 57 included) is retried by the consumer loop without
    limit: groundswell_runtime.db.TEMPORARY_DATABASE_ERRORS.
    """

    def __init__(self, settings: MailerSettings) -> None:
        self._settings = settings
        self._message_id = partial(new_message_id, settings.mail_from)

    async def __call__(self, conn: asyncpg.Connection, items: list[Item]) -> None:
        """InTransaction's `handle_batch`: a batch in order (a single event is a batch of
        one). Every key the batch will lock is locked first, in one order: batches of
        `signatures` and `signer-keys` run in parallel and would otherwise deadlock. Then
        runs of bulk events about distinct keys go together, every other event alone in
        its place."""
        await keys.lock_all(conn, filter(None, (_key_of(event) for event, _ in items)))
        run: list[Item] = []
        run_keys: set[UUID] = set()
        for event, correlation_id in items:
            if isinstance(event, _BULK):
                key = _key_of(event)
                assert key is not None
                if key in run_keys:
                    await self._bulk(conn, run)
                    run, run_keys = [], set()
                run.append((event, correlation_id))
                run_keys.add(key)
                continue
            await self._bulk(conn, run)
            run, run_keys = [], set()
            await self._one(conn, event)
        await self._bulk(conn, run)

    async def _one(self, conn: asyncpg.Connection, event: AnyEvent) -> None:
        if isinstance(event, SignatureConfirmed):
            await self._confirmed(conn, event)
        elif isinstance(event, SignatureWithdrawn | SignatureInvalidated):
            await self._withdrawn(conn, event)
        elif isinstance(event, DataKeyShredded):
            await self._key_shredded(conn, event)

    # --- contact details and their keys, in bulk ---------------------------------

    async def _bulk(self, conn: asyncpg.Connection, run: Sequence[Item]) -> None:
        """Events about distinct keys: sealed contacts, privacy links and data keys."""
        if not run:
            return
        opened: list[Opened] = []
        sealed = [(e, c) for e, c in run if isinstance(e, Sealed) and not _fraudulent(e)]
        if sealed:
            opened.extend(await self._open_sealed(conn, sealed))
        issued = [(e, c) for e, c in run if isinstance(e, DataKeyIssued)]
        if issued:
            opened.extend(await self._keys_issued(conn, issued))
        for part in rounds(opened):
            await self._record(conn, part)

    async def _open_sealed(
        self, conn: asyncpg.Connection, sealed: list[tuple[Sealed, str | None]]
    ) -> list[Opened]:
        # The batch locked each event's subject; a contact sealed under another key (none
        # is, today: signing seals under the subject's own key) needs that key's lock too.
        subjects = {_key_of(e) for e, _ in sealed}
        others = {k for e, _ in sealed if (k := _sealed_key(e)) and k not in subjects}
        if others:
            await keys.lock_all(conn, others)
        # Claimed first: a replayed event already handled is dropped by id, whatever it
        # holds. The claim and the key lookup are one statement.
        found = await intake.claim_and_find_keys(
            conn, [(e.event_id, _sealed_key(e)) for e, _ in sealed]
        )
        opened: list[Opened] = []
        waiting: list[tuple[UUID, UUID, str]] = []
        for event, correlation_id in sealed:
            if event.event_id not in found:
                continue
            legacy = getattr(event, "legacy_contact", None)
            if legacy is not None:  # written before contacts were sealed
                opened.append(Opened(event, legacy, False, correlation_id))
                continue
            if event.contact is None:
                continue
            key = found[event.event_id]
            if key is None:
                waiting.append((event.event_id, event.contact.key_id, event.model_dump_json()))
            elif isinstance(key, keys.Shredded):
                log.info("contact_erased", key_id=str(event.contact.key_id))
            else:
                opened.append(Opened(event, _open(event, key), False, correlation_id))
        await intake.wait_for_keys(conn, waiting)
        return opened

    async def _keys_issued(
        self, conn: asyncpg.Connection, issued: list[tuple[DataKeyIssued, str | None]]
    ) -> list[Opened]:
        # Not claimed in processed_events (a row and an index entry per signature): a key
        # event is idempotent by itself. A key handed over again is not stored again
        # (ON CONFLICT DO NOTHING), a shredded key's row stays shredded for good (its
        # data_key NULL; keys.shred never deletes it), and nothing waits for a key that is
        # already stored (the per-key lock: adapters/keys.py), so a redelivery takes
        # nothing and changes nothing.
        fresh: dict[UUID, str | None] = {}
        new_keys: list[tuple[UUID, bytes]] = []
        for event, correlation_id in issued:
            fresh[event.key_id] = correlation_id
            new_keys.append((event.key_id, decode_key(event.data_key)))
        opened: list[Opened] = []
        for key_id, raw, confirmed, key in await intake.store_keys_and_take_waiting(conn, new_keys):
            waiting = parse_event(raw)
            assert isinstance(waiting, Sealed)
            try:
                contact = _open(waiting, key)
            except PermanentError:
                # Dropped, not dead-lettered: the dead letter would be this key event.
                log.warning("sealed_contact_unreadable", event_id=str(waiting.event_id))
                continue
            # Recorded under the correlation of the key event that released it.
            opened.append(Opened(waiting, contact, confirmed, fresh.get(key_id)))
        return opened

    async def _record(self, conn: asyncpg.Connection, part: list[Opened]) -> None:
        rows = plan(part, datetime.now(UTC), self._message_id)
        for what, subject in rows.skipped:
            log.info(what, subject=str(subject))
        admitted, capped = await intake.admit_notices(conn, rows.notices, ALREADY_SIGNED_WINDOW)
        for signature_id in capped:
            log.info("already_signed_capped", signature_id=str(signature_id))
        await intake.record(conn, rows, [*rows.emails, *admitted])

    # --- one event at a time ---------------------------------------------------

    async def _key_shredded(self, conn: asyncpg.Connection, event: DataKeyShredded) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        await keys.lock(conn, event.key_id)
        deleted = await keys.shred(conn, event.key_id)
        log.info("data_key_shredded", key_id=str(event.key_id), emails_deleted=deleted)

    async def _confirmed(self, conn: asyncpg.Connection, event: SignatureConfirmed) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        # Taken in the same order as the key path, so a contact still waiting for its
        # key learns of the confirmation and no thank-you stays held for ever.
        await keys.lock(conn, event.signature_id)
        await keys.confirm_waiting(conn, event.signature_id)
        await supporters.note_state(conn, event.signature_id, withdrawn=False)  # mailable now
        # Nothing held when signed without confirmation, fraudulent, or withdrawn first.
        if await repo.release_held_thank_you(conn, event.signature_id):
            await repo.notify_emails_due(conn)

    async def _withdrawn(
        self, conn: asyncpg.Connection, event: SignatureWithdrawn | SignatureInvalidated
    ) -> None:
        if not await claim_event(conn, repo.SCHEMA, event.event_id):
            return
        await keys.lock(conn, event.signature_id)
        await keys.drop_waiting(conn, event.signature_id)
        await supporters.note_state(conn, event.signature_id, withdrawn=True)  # no more mailings
        cancelled = await repo.cancel_unsent(conn, event.signature_id)
        if cancelled:
            log.info("emails_cancelled", signature_id=str(event.signature_id), count=cancelled)


def _fraudulent(event: AnyEvent) -> bool:
    # Kept by signing for the record; writing to the address would help the abuser.
    # Not even claimed, as before.
    return isinstance(event, SignatureCreated) and event.status == "fraudulent"


def _sealed_key(event: Sealed) -> UUID | None:
    """The key a sealed event's contact opens with; None without a (sealed) contact."""
    return event.contact.key_id if event.contact is not None else None


def _key_of(event: AnyEvent) -> UUID | None:
    """The key an event's handling locks (adapters/keys.py), if any."""
    if isinstance(event, DataKeyIssued | DataKeyShredded):
        return event.key_id
    if isinstance(event, PrivacyRequested):
        return event.request_id
    if isinstance(
        event,
        SignatureCreated
        | SignatureDuplicateAttempted
        | SignatureConfirmed
        | SignatureWithdrawn
        | SignatureInvalidated,
    ):
        return event.signature_id
    return None


def _open(event: Sealed, key: bytes) -> Contact:
    assert event.contact is not None
    try:
        return unseal(event.contact, key, associated_data(event.event_type, event.event_id))
    except Unreadable as exc:
        # Tampered, or moved from another event: never retried, dead-lettered (sealed).
        raise PermanentError("the sealed contact does not open with its key") from exc
