"""Signing starts and takes signatures while the broker is away: they wait in the outbox
(groundswell_runtime.service: signing leaves topic creation to its relay), and
readiness says the broker is missing."""

from __future__ import annotations

import asyncio

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


async def test_signing_sheds_while_the_relay_is_behind_not_while_it_is_away(
    signing_settings: SettingsFactory,
) -> None:
    """With the broker away nothing is published: the outbox grows old, and signing keeps
    accepting (a broker outage is not a signing outage). Once rows leave the outbox again
    (here the test deletes the oldest, one at a time, as a relay that cannot keep up
    would) while the oldest left is older than the limit, new signatures are refused."""
    settings = signing_settings(
        kafka_bootstrap_servers=f"127.0.0.1:{free_port()}", max_outbox_age_ms=300
    )

    def body(n: int) -> dict[str, object]:
        return {
            "name": "Backlog Tester",
            "email": f"backlog.{n}@example.org",
            "postcode": "OX1 2JD",
            "contact_consent": True,
        }

    async for harness in start_harness(settings):
        petition = await harness.create_petition(requires_confirmation=False)
        url = f"/api/petitions/{petition['slug']}/signatures"
        for n in range(8):  # the outbox ages past the limit: still accepted
            assert (await harness.client.post(url, json=body(n))).status_code == 202
            await asyncio.sleep(0.1)
        refused = None
        for n in range(8, 60):
            # A relay that publishes, slowly: the oldest row leaves, older ones remain.
            await harness.pool.execute(
                "DELETE FROM signing.outbox WHERE id = (SELECT min(id) FROM signing.outbox)"
            )
            answer = await harness.client.post(url, json=body(n))
            if answer.status_code == 503:
                refused = (n, answer)
                break
            assert answer.status_code == 202, answer.text
            await asyncio.sleep(0.1)
        assert refused is not None, "never shed although the relay fell behind"
        n, answer = refused
        assert answer.headers["retry-after"]
        stored = await harness.pool.fetchval(
            "SELECT count(*) FROM signing.signatures WHERE email = $1", f"backlog.{n}@example.org"
        )
        assert stored == 0  # refused before anything was recorded
