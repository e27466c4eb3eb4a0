"""groundswell-ops against the session's real broker and database: topics of their own per
test (unique names), events built from the contracts, and the command run as a process."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from groundswell_contracts.events import Event, SignatureCreated, encode
from groundswell_contracts.headers import CORRELATION_ID, EVENT_TYPE
from groundswell_contracts.testing import signed
from groundswell_runtime.kafka import ensure_topics, make_producer
from groundswell_stack.infra import Infra

from ...conftest import TEST_PARTITIONS

SECRET_EMAIL = "ada.secret@example.org"
SECRET_NAME = "Ada Secretname"
SECRET_TOKEN = "tok-never-print-me-123"


@dataclass
class OpsRun:
    code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


RunOps = Callable[..., Awaitable[OpsRun]]


@pytest.fixture
def run_ops(infra: Infra) -> RunOps:
    """`groundswell-ops ARGS` as a real process pointed at the session's servers."""

    async def run(*args: str, env: dict[str, str] | None = None) -> OpsRun:
        full_env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": infra.kafka_bootstrap,
            "DATABASE_URL": infra.database_url,
            **(env or {}),
        }
        done = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "groundswell_ops.cli", *args],
            env=full_env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        return OpsRun(done.returncode, done.stdout, done.stderr)

    return run


def unique(prefix: str) -> str:
    return f"ops-{prefix}-{uuid.uuid4().hex[:8]}"


async def make_topics(infra: Infra, *names: str) -> None:
    await ensure_topics(infra.kafka_bootstrap, TEST_PARTITIONS, 1, list(names))


async def produce(
    infra: Infra,
    topic: str,
    events: Sequence[Event],
    *,
    correlation_id: str | None = None,
    linger_ms: int = 50,
) -> None:
    """Sends without waiting in between, so the broker gets multi-record batches (the
    case where the local broker's ListOffsets(latest) undercounts)."""
    producer = make_producer(infra.kafka_bootstrap, linger_ms=linger_ms)
    await producer.start()
    try:
        deliveries = []
        for event in events:
            headers = [(EVENT_TYPE, event.event_type.encode())]
            if correlation_id is not None:
                headers.append((CORRELATION_ID, correlation_id.encode()))
            deliveries.append(
                await producer.send(
                    topic, value=encode(event), key=event.key.encode(), headers=headers
                )
            )
        await asyncio.gather(*deliveries)
    finally:
        await producer.stop()


def signature(petition_id: uuid.UUID | None = None, **changes: Any) -> SignatureCreated:
    fields: dict[str, Any] = {
        "petition_id": petition_id or uuid.uuid4(),
        "signature_id": uuid.uuid4(),
        "petition_slug": "ops-test",
        "petition_title": "Ops test",
        "status": "pending",
        "email": SECRET_EMAIL,
        "name": SECRET_NAME,
        "contact_consent": True,
        "postcode_area": "OX",
        "country": "GB",
        "share_code": "abc123",
        "confirmation_token": SECRET_TOKEN,
        "withdraw_token": SECRET_TOKEN + "-w",
    }
    # As signing publishes it: the contact sealed (its key goes to the mailer alone).
    return signed(**(fields | changes)).event


def assert_no_personal_data(text: str) -> None:
    for secret in (SECRET_EMAIL, SECRET_NAME, SECRET_TOKEN, "Secretname", "ada.secret"):
        assert secret not in text
