"""The outbox relay against a real broker, including one that disappears for a while."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from groundswell_contracts.headers import CORRELATION_ID
from groundswell_contracts.topics import Topic
from groundswell_stack.broker import LocalBroker
from groundswell_stack.processes import free_port

from .conftest import SettingsFactory, SigningHarness, start_harness


async def read_topic(
    bootstrap: str, topic: str, done: Callable[[list[Any]], bool], timeout: float = 20
) -> list[Any]:
    """Records from the start of a topic, read until `done(records)` holds."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while not consumer.partitions_for_topic(topic):  # a fresh broker has no topics yet
            assert asyncio.get_running_loop().time() < deadline, f"{topic} never appeared"
            await asyncio.sleep(0.2)
            await consumer.topics()  # refreshes metadata
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        await consumer.seek_to_beginning(*partitions)
        records: list[Any] = []
        while not done(records) and asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for chunk in batch.values():
                records.extend(chunk)
        return records
    finally:
        await consumer.stop()


async def test_events_reach_kafka_keyed_by_petition_with_correlation_id(
    signing: SigningHarness,
) -> None:
    petition = await signing.create_petition(requires_confirmation=False)
    request_id = f"test-{uuid.uuid4().hex[:8]}"
    response = await signing.client.post(
        f"/api/petitions/{petition['slug']}/signatures",
        json={
            "name": "Kafka Reader",
            "email": "reader@example.org",
            "postcode": "OX1 2JD",
            "contact_consent": True,
        },
        headers={"X-Request-ID": request_id},
    )
    assert response.headers["x-request-id"] == request_id

    def ours_in(records: list[Any]) -> list[Any]:
        return [r for r in records if dict(r.headers).get(CORRELATION_ID) == request_id.encode()]

    records = await read_topic(
        signing.settings.kafka_bootstrap_servers, Topic.SIGNATURES, lambda rs: bool(ours_in(rs))
    )
    ours = ours_in(records)
    assert len(ours) == 1
    event = json.loads(ours[0].value)
    assert event["event_type"] == "SignatureCreated"
    assert ours[0].key.decode() == petition["id"] == event["petition_id"]
    for _ in range(50):  # the relay marks rows after the broker acknowledges them
        if (
            await signing.pool.fetchval(
                "SELECT count(*) FROM signing.outbox WHERE published_at IS NULL"
            )
            == 0
        ):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("outbox rows were not marked published")


async def test_signing_survives_broker_outage_and_relay_catches_up(
    signing_settings: SettingsFactory, tmp_path: Path
) -> None:
    broker = LocalBroker(free_port(), tmp_path / "tansu.log").start()
    settings = signing_settings(kafka_bootstrap_servers=broker.bootstrap)
    try:
        async for harness in start_harness(settings):
            petition = await harness.create_petition(requires_confirmation=False)
            # Freeze the broker: connections hang as with a real outage, and unlike a
            # restart of the memory-only broker, what it already holds survives.
            os.kill(broker.process.pid, signal.SIGSTOP)  # type: ignore[union-attr]
            answers = [
                await harness.sign(petition["slug"], email=f"outage{i}@example.org")
                for i in range(20)
            ]
            assert [a.status_code for a in answers] == [202] * 20
            pending = await harness.pool.fetchval(
                "SELECT count(*) FROM signing.outbox WHERE published_at IS NULL"
            )
            assert pending >= 20  # accepted and kept, waiting for the broker

            await asyncio.sleep(12)  # longer than the producer's request timeout
            os.kill(broker.process.pid, signal.SIGCONT)  # type: ignore[union-attr]
            records = await read_topic(
                broker.bootstrap, Topic.SIGNATURES, lambda rs: len(rs) >= 20, timeout=60
            )
            created = {json.loads(r.value)["signature_id"] for r in records}
            assert len(created) == 20
    finally:
        broker.stop()
