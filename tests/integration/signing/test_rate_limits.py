from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from .conftest import ADMIN, SettingsFactory, SigningHarness, start_harness


@pytest.fixture
async def strict(topics: None, signing_settings: SettingsFactory) -> AsyncIterator[SigningHarness]:
    async for harness in start_harness(
        signing_settings(rate_burst_count=1, rate_sustained_count=5, rate_global_count=20)
    ):
        yield harness


@pytest.fixture
async def flagging(
    topics: None, signing_settings: SettingsFactory
) -> AsyncIterator[SigningHarness]:
    async for harness in start_harness(
        signing_settings(rate_burst_count=1, rate_limit_action="flag")
    ):
        yield harness


async def test_second_signature_from_one_ip_within_a_minute_is_429(strict: SigningHarness) -> None:
    petition = await strict.create_petition()
    assert (await strict.sign(petition["slug"])).status_code == 202
    limited = await strict.sign(petition["slug"])
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 61
    assert "try again" in limited.json()["detail"]
    # Another petition has its own burst allowance.
    other = await strict.create_petition()
    assert (await strict.sign(other["slug"])).status_code == 202


async def test_flag_mode_keeps_but_does_not_count(flagging: SigningHarness) -> None:
    petition = await flagging.create_petition(requires_confirmation=False)
    first = await flagging.sign(petition["slug"])
    second = await flagging.sign(petition["slug"])
    assert first.status_code == second.status_code == 202
    statuses = [e["status"] for e in await flagging.outbox_events("SignatureCreated")]
    assert statuses == ["signed", "fraudulent"]
    tally = await flagging.client.get(
        f"/api/admin/petitions/{petition['slug']}/tally",
        headers=ADMIN,
    )
    assert tally.json()["signatures"] == 1


async def test_blocked_ip_range(topics: None, signing_settings: SettingsFactory) -> None:
    async for harness in start_harness(signing_settings(blocked_ip_ranges=["203.0.113.0/24"])):
        petition = await harness.create_petition()
        response = await harness.sign(petition["slug"])
        assert response.status_code == 403
        assert await harness.pool.fetchval("SELECT count(*) FROM signing.signatures") == 0
