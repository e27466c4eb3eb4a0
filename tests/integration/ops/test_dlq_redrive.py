"""A poison event dead-lettered by the real consumer loop, shown, redriven once, handled once."""

from __future__ import annotations

import asyncio
import contextlib
from uuid import UUID

from groundswell_contracts.events import AnyEvent
from groundswell_contracts.topics import dead_letter_topic
from groundswell_ops.cluster import Cluster
from groundswell_ops.dlq import survey
from groundswell_runtime.consumer import EventConsumer, PermanentError
from groundswell_runtime.kafka import make_consumer, make_producer
from groundswell_stack.infra import Infra

from .conftest import (
    SECRET_EMAIL,
    RunOps,
    assert_no_personal_data,
    make_topics,
    produce,
    signature,
    unique,
)


class Handler:
    """Refuses one event until "fixed" (a bug, then the deploy that fixes it)."""

    def __init__(self, poison: UUID) -> None:
        self.poison = poison
        self.fixed = False
        self.handled: list[UUID] = []

    async def __call__(self, event: AnyEvent) -> None:
        if event.event_id == self.poison and not self.fixed:
            # An error naming the address (as a careless handler's might): masked on display.
            raise PermanentError(f"cannot route signature for {SECRET_EMAIL}")
        self.handled.append(event.event_id)


async def run_consumer_until(
    infra: Infra, name: str, topic: str, handler: Handler, done: object
) -> None:
    consumer = make_consumer(infra.kafka_bootstrap, name, topic)
    dead_letters = make_producer(infra.kafka_bootstrap)
    await consumer.start()
    await dead_letters.start()
    task = asyncio.create_task(EventConsumer(name, consumer, dead_letters, handler).run())
    try:
        async with asyncio.timeout(60):
            while not done():  # type: ignore[operator]
                await asyncio.sleep(0.05)
                assert not task.done(), task
            # ... and until the batch that finished it is committed (no lag left).
            while await group_lag(infra, name, topic):
                await asyncio.sleep(0.05)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await consumer.stop()
        await dead_letters.stop()


async def group_lag(infra: Infra, group: str, topic: str) -> int:
    async with Cluster(infra.kafka_bootstrap) as cluster:
        partitions = (await cluster.layout([topic]))[topic].partitions
        ends = await cluster.end_offsets(partitions)
        committed = await cluster.committed(group, partitions)
    return sum(ends[tp] - max(committed[tp], 0) for tp in partitions)


async def dlq_waiting(infra: Infra, topic: str) -> int:
    async with Cluster(infra.kafka_bootstrap) as cluster:
        [dead] = await survey(cluster, [topic])
    return dead.waiting


async def test_poison_event_is_shown_redriven_once_and_handled_once(
    infra: Infra, run_ops: RunOps
) -> None:
    source, name = unique("src"), unique("poisoned")
    dlq = dead_letter_topic(name)
    await make_topics(infra, source, dlq)
    good = [signature() for _ in range(3)]
    poison = signature()
    await produce(infra, source, [*good, poison], correlation_id="cid-poison-1")
    handler = Handler(poison.event_id)

    await run_consumer_until(infra, name, source, handler, lambda: len(handler.handled) == 3)
    assert sorted(map(str, handler.handled)) == sorted(str(e.event_id) for e in good)
    assert await dlq_waiting(infra, dlq) == 1

    listed = await run_ops("dlq", "list", dlq, "--json")
    assert listed.code == 1  # something waits
    assert listed.json() == [{"topic": dlq, "total": 1, "redriven": 0, "waiting": 1}]

    shown = await run_ops("dlq", "show", dlq, "--json")
    assert shown.code == 1
    [record] = shown.json()
    assert record["event_id"] == str(poison.event_id)
    assert record["event_type"] == "SignatureCreated"
    assert record["correlation_id"] == "cid-poison-1"
    assert record["extra"]["dlq_error"] == "cannot route signature for ***@example.org"
    assert record["extra"]["dlq_source"].startswith(f"{source}:")
    assert "contact=(sealed)" in record["summary"]
    text = await run_ops("dlq", "show", dlq)
    assert "SignatureCreated" in text.stdout and "dlq_error=" in text.stdout
    assert_no_personal_data(shown.stdout + text.stdout)

    dry = await run_ops("dlq", "redrive", dlq, "--dry-run", "--json")
    assert dry.code == 0 and len(dry.json()[0]["sent"]) == 1
    assert await dlq_waiting(infra, dlq) == 1  # a dry run marks nothing

    handler.fixed = True
    redriven = await run_ops("dlq", "redrive", dlq)
    assert redriven.code == 0, redriven.stderr
    assert f"{dlq}: sent 1 back to their source topics" in redriven.stdout
    again = await run_ops("dlq", "redrive", dlq, "--json")
    assert again.code == 0 and again.json()[0]["sent"] == []  # redriven once only
    after = await run_ops("dlq", "list", dlq, "--json")
    assert after.code == 0
    assert after.json() == [{"topic": dlq, "total": 1, "redriven": 1, "waiting": 0}]

    await run_consumer_until(infra, name, source, handler, lambda: len(handler.handled) == 4)
    assert handler.handled.count(poison.event_id) == 1
    assert len(handler.handled) == 4  # the good ones were not handled again
    assert await dlq_waiting(infra, dlq) == 0


async def test_dlq_on_a_topic_that_is_not_one_is_bad_usage(run_ops: RunOps) -> None:
    run = await run_ops("dlq", "show", "no-such-topic.dlq")
    assert run.code == 2
    assert run.stderr == "groundswell-ops: no such topic: no-such-topic.dlq\n"
