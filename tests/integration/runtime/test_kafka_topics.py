"""Topics are made only by ensure_topics, with our layout (issue 9: broker loss)."""

from __future__ import annotations

import uuid

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from groundswell_runtime.kafka import TopicCreationError, ensure_topics
from groundswell_stack.infra import Infra


async def topic_names(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return await admin.list_topics()
    finally:
        await admin.close()


async def test_a_client_naming_a_missing_topic_does_not_create_it(infra: Infra) -> None:
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    producer = AIOKafkaProducer(bootstrap_servers=infra.kafka_bootstrap, request_timeout_ms=2000)
    await producer.start()
    try:
        with pytest.raises(KafkaError):
            await producer.send_and_wait(missing, b"x")
    finally:
        await producer.stop()
    assert missing not in await topic_names(infra.kafka_bootstrap)


async def test_a_topic_with_the_wrong_partition_count_is_refused(infra: Infra) -> None:
    name = f"layout-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=infra.kafka_bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, num_partitions=2, replication_factor=1)])
    finally:
        await admin.close()
    with pytest.raises(TopicCreationError, match=f"{name} has 2"):
        await ensure_topics(infra.kafka_bootstrap, 6, 1, [name])
    await ensure_topics(infra.kafka_bootstrap, 2, 1, [name])  # the right layout is fine
