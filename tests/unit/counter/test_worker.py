"""The worker's batch handling with faust's delivery faults, on fakes (no broker).

faust has been seen to skip records and replay others around a rebalance; the worker
must still apply every record once, in order, and write in the order the crash
reasoning in domain.processing relies on.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import ConsumerRecord
from groundswell_contracts.events import (
    PetitionCountChanged,
    PetitionCreated,
    SignatureCreated,
    SignatureWithdrawn,
    encode,
    parse_event,
)
from groundswell_contracts.headers import DLQ_ERROR
from groundswell_counter.adapters import kafka_reads
from groundswell_counter.config import CounterSettings
from groundswell_counter.entrypoints.faust_app import CounterWorker
from groundswell_counter.service_layer.ports import ChangelogWriteFailed, SourceLogLost

from ...conftest import TEST_PARTITIONS

PREFIX = "unit."


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, list[Any] | None]] = []

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: list[Any] | None,
    ) -> asyncio.Future[None]:
        self.sent.append((topic, key, value, headers))
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        future.set_result(None)
        return future

    async def send_and_wait(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: list[Any] | None,
    ) -> None:
        await self.send(topic, key, value, partition, timestamp, headers)

    def changelog_keys(self) -> list[str]:
        return [
            json.loads(key or b"") for topic, key, _, _ in self.sent if topic.endswith("-changelog")
        ]


class Partition:
    """One source partition: records by offset, as the broker holds them."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.records: list[SimpleNamespace] = []

    def append(self, value: bytes, key: bytes = b"k") -> SimpleNamespace:
        record = SimpleNamespace(
            topic=self.topic,
            partition=0,
            offset=len(self.records),
            key=key,
            value=value,
            headers=[],
            timestamp=1_700_000_000.0 + len(self.records) / 1000,
        )
        self.records.append(record)
        return record


@pytest.fixture
def producer() -> FakeProducer:
    return FakeProducer()


@pytest.fixture
def signatures() -> Partition:
    return Partition(PREFIX + "signatures")


@pytest.fixture
def counter(
    producer: FakeProducer, signatures: Partition, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> Iterator[CounterWorker]:
    settings = CounterSettings(
        kafka_bootstrap_servers="127.0.0.1:1",
        data_dir=tmp_path,
        topic_prefix=PREFIX,
        kafka_topic_partitions=TEST_PARTITIONS,
        default_milestones=(3,),
    )
    worker = CounterWorker(settings)
    worker.app._producer = producer  # type: ignore[attr-defined]
    fetched: list[tuple[int, int]] = []

    async def fetch_records(
        servers: Any, topic: str, partition: int, start: int, end: int
    ) -> list[ConsumerRecord[bytes, bytes]]:
        assert topic == signatures.topic
        fetched.append((start, end))
        return [read_back(record) for record in signatures.records[start:end]]

    monkeypatch.setattr(kafka_reads, "fetch_records", fetch_records)
    # The high-water mark of the log the records come from, as a Fetch reports it.
    monkeypatch.setattr(
        worker.counting, "_highwater", lambda topic, partition: len(signatures.records)
    )
    worker.fetched = fetched  # type: ignore[attr-defined]
    yield worker


def created(petition: uuid.UUID) -> bytes:
    return encode(
        SignatureCreated(
            petition_id=petition,
            signature_id=uuid.uuid4(),
            petition_slug="owls",
            petition_title="Owls",
            status="signed",
            contact_consent=False,
            country="GB",
            share_code="c",
            withdraw_token="w",
        )
    )


def read_back(record: SimpleNamespace) -> ConsumerRecord[bytes, bytes]:
    """The record as aiokafka reads it back (timestamp in milliseconds)."""
    return ConsumerRecord(
        topic=record.topic,
        partition=record.partition,
        offset=record.offset,
        timestamp=round(record.timestamp * 1000),
        timestamp_type=0,
        key=record.key,
        value=record.value,
        checksum=None,
        serialized_key_size=len(record.key),
        serialized_value_size=len(record.value),
        headers=record.headers,
    )


def delivered(*records: SimpleNamespace) -> list[SimpleNamespace]:
    return [SimpleNamespace(message=record) for record in records]


async def test_skipped_records_are_read_back_and_replays_ignored(
    counter: CounterWorker, signatures: Partition
) -> None:
    petition = uuid.uuid4()
    records = [signatures.append(created(petition)) for _ in range(6)]
    # faust delivers 0, then 3 (1 and 2 skipped), then replays 1, then 4 and 5.
    await counter.apply_batch(delivered(records[0], records[3], records[1]))
    await counter.apply_batch(delivered(records[4], records[2], records[5]))
    record = counter.counting.petition(petition)
    assert record is not None and record.tally.signatures == 6
    assert counter.fetched == [(1, 3)]  # type: ignore[attr-defined]


async def test_writes_go_signature_then_petition_then_watermark(
    counter: CounterWorker, signatures: Partition, producer: FakeProducer
) -> None:
    petition = uuid.uuid4()
    await counter.apply_batch(delivered(*(signatures.append(created(petition)) for _ in range(2))))
    keys = producer.changelog_keys()
    assert [k[:2] for k in keys] == ["s:", "s:", "p:", "o:"]
    assert keys[-1] == "o:signatures:0"


async def test_a_milestone_is_announced_before_the_petition_record_says_so(
    counter: CounterWorker, signatures: Partition, producer: FakeProducer
) -> None:
    petition = uuid.uuid4()
    await counter.apply_batch(delivered(*(signatures.append(created(petition)) for _ in range(3))))
    topics = [topic for topic, *_ in producer.sent]
    milestone = topics.index(PREFIX + "milestones")
    assert milestone < next(
        i
        for i, (topic, key, *_) in enumerate(producer.sent)
        if topic.endswith("-changelog") and key and b"p:" in key
    )


async def test_unreadable_records_are_dead_lettered_with_the_reason(
    counter: CounterWorker, signatures: Partition, producer: FakeProducer
) -> None:
    garbage = signatures.append(b'{"event_type": "SignatureCreated", "email": "x@y.z"}')
    newer = signatures.append(b'{"event_type": "SignatureTeleported"}')
    await counter.apply_batch(delivered(garbage, newer))
    dead = [
        (value, dict(headers or []))
        for topic, _, value, headers in producer.sent
        if topic == PREFIX + "counter.dlq"
    ]
    assert len(dead) == 1 and dead[0][0] == garbage.value
    reason = dead[0][1][DLQ_ERROR].decode()
    assert "petition_id" in reason and "x@y.z" not in reason  # names fields, never values


async def test_a_withdrawal_is_applied_once_however_often_it_is_delivered(
    counter: CounterWorker, signatures: Partition
) -> None:
    petition = uuid.uuid4()
    create = SignatureCreated.model_validate_json(created(petition))
    first = signatures.append(encode(create))
    withdraw = encode(SignatureWithdrawn(petition_id=petition, signature_id=create.signature_id))
    once = signatures.append(withdraw)
    again = signatures.append(withdraw)  # the outbox republished it
    await counter.apply_batch(delivered(first, once, again, once))
    record = counter.counting.petition(petition)
    assert record is not None
    assert (record.tally.signatures, record.tally.withdrawn) == (0, 1)


async def test_petitions_topic_events_set_the_slug_and_goal(
    counter: CounterWorker, producer: FakeProducer
) -> None:
    petitions = Partition(PREFIX + "petitions")
    petition = uuid.uuid4()
    created_event = PetitionCreated(
        petition_id=petition, slug="owls", title="Owls", target="P", goal=10
    )
    await counter.apply_batch(delivered(petitions.append(encode(created_event))))
    record = counter.counting.petition(petition)
    assert record is not None and (record.slug, record.goal) == ("owls", 10)
    assert "o:petitions:0" in producer.changelog_keys()


async def test_item13_snapshots_cap_sources_while_the_record_keeps_them_all(
    counter: CounterWorker, signatures: Partition, producer: FakeProducer
) -> None:
    petition = uuid.uuid4()
    records = []
    for i in range(25):
        event = SignatureCreated(
            petition_id=petition,
            signature_id=uuid.uuid4(),
            petition_slug="owls",
            petition_title="Owls",
            status="signed",
            contact_consent=False,
            country="GB",
            source=f"code-{i:02}",
            share_code="c",
            withdraw_token="w",
        )
        records.append(signatures.append(encode(event)))
    await counter.apply_batch(delivered(*records))
    await counter.snapshots.publish_dirty()
    [published] = [
        parse_event(value or b"")
        for topic, _, value, _ in producer.sent
        if topic == PREFIX + "counts"
    ]
    assert isinstance(published, PetitionCountChanged)
    assert len(published.by_source) == 21 and published.by_source["other"] == 5
    record = counter.counting.petition(petition)
    assert record is not None and len(record.tally.by_source) == 25  # exact inside


async def test_after_the_broker_lost_its_log_new_records_are_never_skipped_as_replays(
    counter: CounterWorker, signatures: Partition
) -> None:
    """Issue 9: watermarks of a lost log must not make the new log's records replays."""

    petition = uuid.uuid4()
    old_log = [signatures.append(created(petition)) for _ in range(6)]
    await counter.apply_batch(delivered(*old_log))
    await counter.apply_batch(delivered(old_log[4], old_log[5]))  # a replay: skipped
    record = counter.counting.petition(petition)
    assert record is not None and record.tally.signatures == 6

    # The broker comes back empty; the replay publishes two signatures at offsets 0, 1.
    signatures.records.clear()
    new_log = [signatures.append(created(petition)) for _ in range(2)]
    with pytest.raises(SourceLogLost):
        await counter.apply_batch(delivered(new_log[0]))


async def test_a_new_log_longer_than_the_lost_one_is_recognised_at_the_watermark(
    counter: CounterWorker, signatures: Partition
) -> None:
    petition = uuid.uuid4()
    await counter.apply_batch(delivered(*(signatures.append(created(petition)) for _ in range(3))))
    # A new log that already outgrew the old one: its high-water mark proves nothing,
    # but its record at the watermark's offset is not the one applied (its timestamp).
    signatures.records.clear()
    new_log = [signatures.append(created(petition)) for _ in range(8)]
    for record in new_log:
        record.timestamp += 3600
    await counter.apply_batch(delivered(new_log[0], new_log[1]))  # inconclusive: skipped
    with pytest.raises(SourceLogLost):
        await counter.apply_batch(delivered(new_log[2]))


async def test_a_batch_is_not_done_until_every_table_write_is_acknowledged(
    counter: CounterWorker,
    signatures: Partition,
    producer: FakeProducer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent = producer.send

    async def send(topic: str, *args: Any, **kwargs: Any) -> asyncio.Future[None]:
        delivered = await sent(topic, *args, **kwargs)
        if topic.endswith("-changelog") and len(producer.sent) == 2:
            failed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            failed.set_exception(ConnectionError("broker went away"))
            return failed
        return delivered

    monkeypatch.setattr(producer, "send", send)
    petition = uuid.uuid4()
    with pytest.raises(ChangelogWriteFailed):
        await counter.apply_batch(
            delivered(*(signatures.append(created(petition)) for _ in range(2)))
        )
    assert not counter.counting.dirty  # nothing of the batch is published as counted


class Exited(Exception):
    """Stands in for the process exit in these tests."""


@pytest.mark.parametrize("failure", [SourceLogLost("t", 0), RuntimeError("bug")])
async def test_a_batch_that_cannot_be_applied_stops_the_worker_for_a_replay(
    counter: CounterWorker, monkeypatch: pytest.MonkeyPatch, failure: Exception
) -> None:
    """faust would carry on after a failed batch and commit past it: the worker exits
    instead (EX_TEMPFAIL), and its restart replays from the last commit."""
    codes: list[int] = []

    def exit_(code: int) -> None:
        codes.append(code)
        raise Exited

    async def apply_batch(events: Any) -> None:
        raise failure

    class Stream:
        async def take_events(self, n: int, within: float) -> Any:
            yield delivered()

    monkeypatch.setattr(os, "_exit", exit_)
    monkeypatch.setattr(counter, "apply_batch", apply_batch)
    with pytest.raises(Exited):
        await counter._count(Stream())  # type: ignore[arg-type]
    assert codes == [75]


async def test_a_last_record_faust_never_delivers_is_read_back_and_counted(
    counter: CounterWorker, signatures: Partition
) -> None:
    """A skipped record with no later one: no gap ever shows, the tail check finds it."""

    petition = uuid.uuid4()
    records = [signatures.append(created(petition)) for _ in range(5)]
    await counter.apply_batch(delivered(*records[:3]))  # 3 and 4 fetched, never delivered
    owned = [(signatures.topic, 0)]
    await counter.counting.fill_stalled_tails(owned)  # faust may still deliver them
    assert counter.fetched == []  # type: ignore[attr-defined]
    await counter.counting.fill_stalled_tails(owned)  # no progress since: read them back
    assert counter.fetched == [(3, 5)]  # type: ignore[attr-defined]
    await counter.apply_batch(delivered(records[4]))  # delivered after all: a replay
    await counter.counting.fill_stalled_tails(owned)  # caught up: nothing more to read
    record = counter.counting.petition(petition)
    assert record is not None and record.tally.signatures == 5
    assert counter.fetched == [(3, 5)]  # type: ignore[attr-defined]


async def test_a_partition_that_moves_on_between_checks_is_left_to_faust(
    counter: CounterWorker, signatures: Partition
) -> None:
    petition = uuid.uuid4()
    records = [signatures.append(created(petition)) for _ in range(6)]
    owned = [(signatures.topic, 0)]
    await counter.apply_batch(delivered(*records[:2]))
    await counter.counting.fill_stalled_tails(owned)
    await counter.apply_batch(delivered(records[2]))  # progress: faust is delivering
    await counter.counting.fill_stalled_tails(owned)
    assert counter.fetched == []  # type: ignore[attr-defined]
    await counter.apply_batch(delivered(*records[3:]))
    record = counter.counting.petition(petition)
    assert record is not None and record.tally.signatures == 6
