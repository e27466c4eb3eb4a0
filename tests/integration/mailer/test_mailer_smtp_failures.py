"""SMTP failures against a real SMTP server (aiosmtpd, in-process) that answers by address:

- `reject-*`: 550 at RCPT (permanent: recorded once, never retried);
- `flaky-*`: 451 the first time, then accepted (retried, sent once);
- `later-*`: always 451 (retried up to the cap, then given up as not permanent).
"""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from groundswell_contracts.events import EmailFailed, EmailSent
from groundswell_stack.processes import free_port


class ScriptedSmtp:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rcpt_attempts: Counter[str] = Counter()
        self.delivered: list[str] = []

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: Any
    ) -> str:
        with self._lock:
            self.rcpt_attempts[address] += 1
            attempt = self.rcpt_attempts[address]
        local = address.partition("@")[0]
        if local.startswith("reject-"):
            return f"550 5.1.1 <{address}>: mailbox unavailable"
        if local.startswith("later-") or (local.startswith("flaky-") and attempt == 1):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            self.delivered.extend(envelope.rcpt_tos)
        return "250 Message accepted"


@pytest.fixture(scope="module")
def scripted_smtp() -> Iterator[tuple[ScriptedSmtp, int]]:
    handler = ScriptedSmtp()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture(scope="module")
async def failing_mailer(
    infra: Any, topics: None, scripted_smtp: tuple[ScriptedSmtp, int], start_mailer: Any
) -> AsyncIterator[Any]:
    _, port = scripted_smtp
    async with start_mailer(
        infra, "127.0.0.1", port, max_attempts=3, retry_base_seconds=0.2, retry_max_seconds=0.5
    ) as running:
        yield running


async def final_row(kit: Any, mailer: Any, signature_id: uuid.UUID) -> Any:
    async def finished() -> Any:
        row = await mailer.db.fetchrow(
            "SELECT status, attempts, last_error FROM mailer.emails "
            "WHERE signature_id = $1 AND kind = 'thank_you'",
            signature_id,
        )
        return row if row is not None and row["status"] in ("sent", "failed") else None

    return await kit.eventually(finished)


async def email_events(kit: Any, signature_id: uuid.UUID) -> list[Any]:
    async def landed() -> list[Any]:
        events = await kit.topic_events(kit.infra.kafka_bootstrap, "email-events")
        return [
            e
            for e in events
            if isinstance(e, EmailSent | EmailFailed) and e.signature_id == signature_id
        ]

    return list(await kit.eventually(landed))


async def test_permanent_failure_is_recorded_and_not_retried(
    failing_mailer: Any, scripted_smtp: tuple[ScriptedSmtp, int], kit: Any
) -> None:
    smtp, _ = scripted_smtp
    address = f"reject-{uuid.uuid4().hex[:10]}@example.test"
    event = kit.signature(email=address)
    await kit.publish(event)

    row = await final_row(kit, failing_mailer, event.signature_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"].startswith("550 recipient:")
    assert address not in row["last_error"]

    [failed] = await email_events(kit, event.signature_id)
    assert isinstance(failed, EmailFailed)
    assert failed.permanent is True and failed.kind == "thank_you"
    assert "550" in failed.error and address not in failed.error

    # Retries here come after 0.2-0.5 s; a permanent failure must never get one.
    flaky = kit.signature(
        email=f"flaky-{uuid.uuid4().hex[:10]}@example.test", petition_id=event.petition_id
    )
    await kit.publish(flaky)
    await final_row(kit, failing_mailer, flaky.signature_id)
    assert smtp.rcpt_attempts[address] == 1
    assert address not in smtp.delivered


async def test_temporary_failure_is_retried_then_sent_once(
    failing_mailer: Any, scripted_smtp: tuple[ScriptedSmtp, int], kit: Any
) -> None:
    smtp, _ = scripted_smtp
    address = f"flaky-{uuid.uuid4().hex[:10]}@example.test"
    event = kit.signature(email=address)
    await kit.publish(event)

    row = await final_row(kit, failing_mailer, event.signature_id)
    assert (row["status"], row["attempts"]) == ("sent", 2)
    assert smtp.rcpt_attempts[address] == 2
    assert smtp.delivered.count(address) == 1
    [sent] = await email_events(kit, event.signature_id)
    assert isinstance(sent, EmailSent)


async def test_temporary_failures_give_up_after_the_attempt_cap(
    failing_mailer: Any, scripted_smtp: tuple[ScriptedSmtp, int], kit: Any
) -> None:
    smtp, _ = scripted_smtp
    address = f"later-{uuid.uuid4().hex[:10]}@example.test"
    event = kit.signature(email=address)
    await kit.publish(event)

    row = await final_row(kit, failing_mailer, event.signature_id)
    assert (row["status"], row["attempts"]) == ("failed", 3)
    assert row["last_error"].startswith("451 recipient:")
    assert smtp.rcpt_attempts[address] == 3
    [failed] = await email_events(kit, event.signature_id)
    assert isinstance(failed, EmailFailed)
    assert failed.permanent is False


async def test_an_unusable_address_fails_permanently_without_contacting_the_server(
    failing_mailer: Any, scripted_smtp: tuple[ScriptedSmtp, int], kit: Any
) -> None:
    smtp, _ = scripted_smtp
    before = sum(smtp.rcpt_attempts.values())
    event = kit.signature(email=f"no address {uuid.uuid4().hex[:6]}")
    await kit.publish(event)

    row = await final_row(kit, failing_mailer, event.signature_id)
    assert (row["status"], row["attempts"]) == ("failed", 1)
    assert row["last_error"].startswith("unsendable: ")
    [failed] = await email_events(kit, event.signature_id)
    assert isinstance(failed, EmailFailed) and failed.permanent is True
    assert sum(smtp.rcpt_attempts.values()) == before
