"""A poll holding other records also takes what the `first` topics fetched meanwhile."""

from __future__ import annotations

from typing import Any

from aiokafka import ConsumerRecord, TopicPartition
from groundswell_runtime.consumer import EventConsumer

KEYS = [TopicPartition("signer-keys", 0), TopicPartition("signer-keys", 1)]
SIGNATURES = TopicPartition("signatures", 0)


def record(tp: TopicPartition, offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord(tp.topic, tp.partition, offset, 0, 0, None, b"", None, 0, 0, [])


class BufferedConsumer:
    """What aiokafka's consumer has fetched and not yet handed out, per partition."""

    def __init__(self, buffered: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> None:
        self.buffered = buffered
        self.asked: list[tuple[tuple[TopicPartition, ...], int]] = []

    def assignment(self) -> set[TopicPartition]:
        return {*KEYS, SIGNATURES}

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int = 0
    ) -> dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]:
        self.asked.append((partitions, timeout_ms))
        taken = {tp: self.buffered.pop(tp) for tp in partitions if tp in self.buffered}
        return taken


def consumer_of(kafka: Any) -> EventConsumer:
    return EventConsumer("mailer", kafka, None, None, first=["signer-keys"])  # type: ignore[arg-type]


async def test_keys_fetched_meanwhile_join_a_poll_of_contacts() -> None:
    late_key = record(KEYS[1], 7)
    kafka = BufferedConsumer({KEYS[1]: [late_key], SIGNATURES: [record(SIGNATURES, 9)]})
    poll = {KEYS[0]: [record(KEYS[0], 3)], SIGNATURES: [record(SIGNATURES, 8)]}

    await consumer_of(kafka)._take_first_too(poll)

    assert poll[KEYS[1]] == [late_key]
    assert [r.offset for r in poll[KEYS[0]]] == [3]
    # Only the first topics were asked for, and without waiting: the contacts' partition
    # keeps its next record for the next poll.
    ((partitions, timeout_ms),) = kafka.asked
    assert set(partitions) == set(KEYS) and timeout_ms == 0
    assert [r.offset for r in poll[SIGNATURES]] == [8]
    assert SIGNATURES in kafka.buffered


async def test_a_partitions_records_stay_in_order() -> None:
    kafka = BufferedConsumer({KEYS[0]: [record(KEYS[0], 4), record(KEYS[0], 5)]})
    poll = {KEYS[0]: [record(KEYS[0], 3)], SIGNATURES: [record(SIGNATURES, 1)]}

    await consumer_of(kafka)._take_first_too(poll)

    assert [r.offset for r in poll[KEYS[0]]] == [3, 4, 5]


async def test_a_poll_of_keys_alone_waits_for_nothing_more() -> None:
    kafka = BufferedConsumer({KEYS[1]: [record(KEYS[1], 1)]})
    poll = {KEYS[0]: [record(KEYS[0], 3)]}

    await consumer_of(kafka)._take_first_too(poll)
    await consumer_of(kafka)._take_first_too({})

    assert kafka.asked == []
    assert list(poll) == [KEYS[0]]
