"""Signing starts and takes signatures while the broker is away: they wait in the outbox
(groundswell_runtime.service: signing leaves topic creation to its relay), and
readiness says the broker is missing."""

from __future__ import annotations

from groundswell_stack.processes import free_port

from .conftest import SettingsFactory, start_harness


async def test_signing_starts_and_accepts_with_no_broker(signing_settings: SettingsFactory) -> None:
    # Nothing listens there: the broker is away from the start.
    settings = signing_settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}")
    async for harness in start_harness(settings):
        petition = await harness.create_petition(requires_confirmation=False)
        answer = await harness.client.post(
            f"/api/petitions/{petition['slug']}/signatures",
            json={
                "name": "Broker Away",
                "email": "broker.away@example.org",
                "postcode": "OX1 2JD",
                "contact_consent": True,
            },
        )
        assert answer.status_code == 202, answer.text
        queued = await harness.pool.fetchval(
            "SELECT count(*) FROM signing.outbox WHERE event_type = 'SignatureCreated'"
        )
        assert queued == 1  # durably recorded, to be published when the broker is back
        ready = await harness.client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["broker"] is False
        assert ready.json()["checks"]["database"] is True
