"""The runtime consumer's own metrics, read from the real `/metrics` text, against the real
broker: lag per partition as the consumer sees it, dead-letter writes by source topic,
events handled by type, and the poll timestamp (issue 11)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

from aiokafka import TopicPartition
from fastapi import FastAPI
from groundswell_contracts.events import AnyEvent, SignatureConfirmed, encode
from groundswell_contracts.topics import dead_letter_topic
from groundswell_runtime.consumer import EventConsumer, PermanentError
from groundswell_runtime.kafka import ensure_topics, make_consumer, make_producer
from groundswell_runtime.ops import install_ops
from groundswell_stack.infra import Infra
from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families

FIRST_WAVE = 5
SECOND_WAVE = 7


def confirmed() -> SignatureConfirmed:
    return SignatureConfirmed(petition_id=uuid.uuid4(), signature_id=uuid.uuid4())


async def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a real `/metrics` answer, keyed by name and sorted labels."""
    app = FastAPI()
    install_ops(app, {})
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://m.test") as client:
        response = await client.get("/metrics")
    assert response.status_code == 200
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


async def until(predicate: Callable[[], object], what: str) -> None:
    """Poll (no timed assertion: the bound only stops a hung test)."""
    async with asyncio.timeout(60):
        while not predicate():
            await asyncio.sleep(0.05)


async def test_lag_dlq_and_handled_metrics_of_a_running_consumer(infra: Infra) -> None:
    name = f"metrics-{uuid.uuid4().hex[:8]}"
    topic = f"{name}-in"
    await ensure_topics(infra.kafka_bootstrap, 1, 1, [topic, dead_letter_topic(name)])
    first = [confirmed() for _ in range(FIRST_WAVE)]
    poison = confirmed()
    second = [confirmed() for _ in range(SECOND_WAVE)]
    first_gate, second_gate = asyncio.Event(), asyncio.Event()
    second_ids = {e.event_id for e in second}
    handled: list[uuid.UUID] = []

    async def handler(event: AnyEvent) -> None:
        if event.event_id == poison.event_id:
            raise PermanentError("never")
        await (second_gate if event.event_id in second_ids else first_gate).wait()
        handled.append(event.event_id)

    producer = make_producer(infra.kafka_bootstrap)
    await producer.start()
    consumer = make_consumer(infra.kafka_bootstrap, name, topic)
    dead_letters = make_producer(infra.kafka_bootstrap)
    task: asyncio.Task[None] | None = None
    try:
        for event in [*first, poison]:
            await producer.send(topic, encode(event), key=b"k")
        await producer.flush()
        await consumer.start()
        await dead_letters.start()
        task = asyncio.create_task(EventConsumer(name, consumer, dead_letters, handler).run())
        tp = TopicPartition(topic, 0)
        # The consumer holds the first wave; meanwhile the second is written and fetched.
        await until(lambda: consumer.assignment(), "assignment")
        for event in second:
            await producer.send(topic, encode(event), key=b"k")
        await producer.flush()
        total = FIRST_WAVE + 1 + SECOND_WAVE
        await until(lambda: consumer.highwater(tp) == total, "second wave fetched")
        first_gate.set()

        lag_key = (
            "groundswell_consumer_lag_messages",
            (("consumer", name), ("partition", "0"), ("topic", topic)),
        )
        # After the first wave and the poison event, the consumer is held on the second
        # wave: its lag is exactly the second wave, until it is let go.
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

        async def lag_is(value: int) -> None:
            nonlocal samples
            async with asyncio.timeout(60):
                while True:
                    samples = await scrape()
                    if samples.get(lag_key) == value:
                        return
                    await asyncio.sleep(0.05)

        await lag_is(SECOND_WAVE)
        dlq_key = ("groundswell_dlq_events_total", (("consumer", name), ("topic", topic)))
        assert samples[dlq_key] == 1
        handled_key = (
            "groundswell_events_handled_total",
            (("consumer", name), ("event_type", "SignatureConfirmed")),
        )
        assert samples[handled_key] == FIRST_WAVE
        poll_key = ("groundswell_consumer_last_poll_timestamp_seconds", (("consumer", name),))
        assert samples[poll_key] > 0

        second_gate.set()
        await lag_is(0)
        await until(lambda: len(handled) == FIRST_WAVE + SECOND_WAVE, "all handled")
        samples = await scrape()
        assert samples[handled_key] == FIRST_WAVE + SECOND_WAVE
        assert samples[dlq_key] == 1
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await consumer.stop()
        await dead_letters.stop()
        await producer.stop()
    # A stopped consumer's lag is unknown: its series are gone, its poll time stays.
    samples = await scrape()
    assert lag_key not in samples
    assert poll_key in samples


async def test_counter_lag_comes_from_fausts_own_monitor() -> None:
    """The counter (faust) reports through the same gauge: what faust's monitor saw last
    fetched minus what it last committed (faust commits the next offset to process)."""
    import faust
    from faust.types import TP
    from groundswell_runtime.lag import faust_lag, register_lag_source, unregister_lag_source

    app = faust.App(f"lag-test-{uuid.uuid4().hex[:8]}", broker="kafka://127.0.0.1:1")
    monitor = app.monitor
    signatures, petitions = TP("signatures", 0), TP("petitions", 3)
    monitor.track_tp_end_offset(signatures, 120)
    monitor.on_tp_commit({signatures: 100})  # 20 written, not yet processed
    monitor.track_tp_end_offset(petitions, 9)
    monitor.tp_read_offsets[petitions] = 8  # read up to the last record, nothing committed
    source = faust_lag(app)
    name = f"faust-{uuid.uuid4().hex[:8]}"
    register_lag_source(name, source)
    try:
        samples = await scrape()
    finally:
        unregister_lag_source(name, source)
    lag = "groundswell_consumer_lag_messages"
    assert samples[(lag, (("consumer", name), ("partition", "0"), ("topic", "signatures")))] == 20
    assert samples[(lag, (("consumer", name), ("partition", "3"), ("topic", "petitions")))] == 0
    unregister_lag_source(name, source)
    assert not any(("consumer", name) in labels for _, labels in await scrape())
