"""`groundswell-signing relay`: the outbox relay as a process of its own (SIGNING_RELAY_MODE).

`serve` in "separate" mode runs no relay; the relay process publishes what it queued,
and its /readyz tells whether it can (database, broker, a recent pass).
"""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from groundswell_contracts.headers import CORRELATION_ID
from groundswell_contracts.topics import Topic
from groundswell_stack.processes import ManagedProcess, free_port
from groundswell_stack.services import clean_env, executable

from .conftest import ADMIN_TOKEN, SettingsFactory, start_harness
from .test_outbox_relay import read_topic


async def ready(url: str, process: ManagedProcess, timeout: float = 60) -> dict[str, Any]:
    deadline = asyncio.get_running_loop().time() + timeout
    async with httpx.AsyncClient() as client:
        while True:
            assert process.running(), "the relay process exited; see its log"
            try:
                response = await client.get(f"{url}/readyz", timeout=2)
                if response.status_code == 200:
                    document: dict[str, Any] = response.json()
                    return document
            except httpx.HTTPError:
                pass
            assert asyncio.get_running_loop().time() < deadline, "the relay never became ready"
            await asyncio.sleep(0.2)


async def test_separate_relay_publishes_what_serve_queued(
    topics: None,
    signing_settings: SettingsFactory,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    monkeypatch.setenv("SIGNING_RELAY_MODE", "separate")
    settings = signing_settings()
    port = free_port()
    env = clean_env() | {
        "ADMIN_TOKEN": ADMIN_TOKEN,
        "DATABASE_URL": settings.database_url,
        "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "KAFKA_TOPIC_PARTITIONS": str(settings.kafka_topic_partitions),
        "SIGNING_RELAY_PORT": str(port),
    }
    async for harness in start_harness(settings):
        app = harness.client._transport.app  # type: ignore[attr-defined]
        assert app.state.service.relay is None  # "separate": serve runs no relay of its own
        # serve's readiness does not wait for a relay it does not run.
        assert (await harness.client.get("/readyz")).status_code == 200

        petition = await harness.create_petition(requires_confirmation=False)
        request_id = f"relay-{uuid.uuid4().hex[:8]}"
        answer = await harness.client.post(
            f"/api/petitions/{petition['slug']}/signatures",
            json={
                "name": "Relay Reader",
                "email": "relay.reader@example.org",
                "postcode": "OX1 2JD",
                "contact_consent": True,
            },
            headers={"X-Request-ID": request_id},
        )
        assert answer.status_code == 202

        relay = ManagedProcess(
            "signing-relay",
            [executable("groundswell-signing"), "relay"],
            env=env,
            log_path=tmp_path / "relay.log",
        ).start()
        try:
            checks = await ready(f"http://127.0.0.1:{port}", relay)
            assert "outbox_relay" in json.dumps(checks)

            mark = request_id.encode()

            def ours(records: list[Any], mark: bytes = mark) -> list[Any]:
                return [r for r in records if dict(r.headers).get(CORRELATION_ID) == mark]

            records = await read_topic(
                settings.kafka_bootstrap_servers, Topic.SIGNATURES, lambda rs: bool(ours(rs))
            )
            [created] = ours(records)
            assert json.loads(created.value)["event_type"] == "SignatureCreated"
            for _ in range(100):  # deleted once the broker has them
                if not await harness.pool.fetchval("SELECT count(*) FROM signing.outbox"):
                    break
                await asyncio.sleep(0.1)
            else:
                raise AssertionError("the relay process left rows in the outbox")
        finally:
            relay.stop()
