"""faust's Kafka transport, adjusted to the local broker: end offsets from Fetch, short fetch waits.

faust decides that a table has recovered when it has read each changelog partition
up to its end offset, which it asks for with ListOffsets(latest). The local broker
(Tansu) answers that with the base offset of the last record *batch* + 1, so a
recovery would stop short of the last records whenever the producer batched them,
and a worker restarted after kill -9 would come back missing some counts.

The usual workaround is a producer that never batches (`producer_max_batch_size=1`),
but aiokafka then waits for each single-record batch to be sent before accepting the
next one for the same partition: measured here, the counter fell from ~2,000 to
~650 events/s. Instead, each end offset is checked with a Fetch from just before the
listed end: the high-water mark in a Fetch response is right on every broker. On
Apache Kafka this confirms the listed offset at the cost of one fetch per recovery.

faust's fetcher also hands every record over through `wait_first(handle(record),
suspend_flow.wait())`, which mode runs as four asyncio tasks (the two, plus the service's
stopped and crashed events), created and cancelled per record: about a tenth of the
worker's CPU at 2,000 events/s. `_Consumer.wait_first` does the same with one task.

The aiokafka consumer runs in a thread of its own (mode's `ServiceThread`), whose loop
mode makes with `asyncio.new_event_loop()`; `_Consumer` hands it a uvloop one instead.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, cast

import faust
import uvloop
from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP
from mode.services import WaitResults
from mode.utils.locks import Event

from groundswell_counter.adapters.kafka_reads import FETCH_MAX_WAIT_MS, fetched_end_offsets


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # faust hard-codes fetch_max_wait_ms=1500, and the local broker holds a Fetch
        # for about half the max wait even when records are waiting: ~0.7 s on every
        # event. (aiokafka reads this attribute when the consumer starts.)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    async def _highwaters(self, partitions: Any) -> Mapping[TP, int]:
        listed = await super()._highwaters(partitions)
        if self.consumer.in_transaction:
            return listed
        transport = cast(faust_aiokafka.Transport, self.transport)
        servers = faust_aiokafka.server_list(transport.url, transport.default_port)
        return await fetched_end_offsets(servers, listed)


# faust's flow event is an asyncio.Event, mode's service events are its own; both keep
# the futures of their waiters in `_waiters` and resolve them all on set().
AnyEvent = asyncio.Event | Event


async def run_unless_set(work: Coroutine[Any, Any, Any], events: Sequence[AnyEvent]) -> bool:
    """Run `work` until it finishes or any of `events` is set (then cancel it).

    True if `work` finished (its exception, if any, is raised). One task and one future
    shared by the events' waiter lists, instead of a task per event.
    """
    loop = asyncio.get_running_loop()
    interrupted: asyncio.Future[Any] = loop.create_future()
    for event in events:
        event._waiters.append(interrupted)
    task = loop.create_task(work)
    try:
        await asyncio.wait((task, interrupted), return_when=asyncio.FIRST_COMPLETED)
    finally:
        for event in events:
            with contextlib.suppress(ValueError):
                event._waiters.remove(interrupted)
        if not task.done():
            task.cancel()
    if task.done() and not task.cancelled():
        task.result()  # raises what the work raised, as mode's wait_first does
        return True
    return False


def _waits_on(coro: object, event: AnyEvent) -> bool:
    """True if `coro` is `event.wait()`, not yet started."""
    frame = getattr(coro, "cr_frame", None)
    return (
        getattr(coro, "cr_code", None) is type(event).wait.__code__
        and frame is not None
        and frame.f_locals.get("self") is event
    )


class _Consumer(faust_aiokafka.Consumer):
    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        # The thread's own loop is uvloop too (mode would make an asyncio one): on
        # asyncio's, writing its fetch requests alone was 6% of the worker's samples.
        return _ConsumerThread(
            self, loop=self.loop, beacon=self.beacon, thread_loop=uvloop.new_event_loop()
        )

    # `timeout` is mode's name for it: this overrides Service.wait_first.
    async def wait_first(self, *coros: Any, timeout: Any = None) -> WaitResults:  # noqa: ASYNC109
        # Only the fetcher's per-record call takes the short way; anything else, or a
        # flow already suspended or a service stopping, goes through mode as before.
        events: tuple[AnyEvent, ...] = (self.suspend_flow, self._stopped, self._crashed)
        if (
            timeout is not None
            or len(coros) != 2
            or not asyncio.iscoroutine(coros[0])
            or not _waits_on(coros[1], self.suspend_flow)
            or any(event.is_set() for event in events)
        ):
            return await super().wait_first(*coros, timeout=timeout)
        handle, suspended = coros
        suspended.close()  # never started: run_unless_set watches its event instead
        finished = await run_unless_set(handle, events)
        if self._stopped.is_set() or self._crashed.is_set():
            return WaitResults([], [], True)
        winners = ([handle] if finished else []) + (
            [suspended] if self.suspend_flow.is_set() else []
        )
        return WaitResults(winners, [None] * len(winners), False)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class CounterFaustApp(faust.App):
    """A faust App whose table recovery reads every changelog partition to its real end."""

    def _new_transport(self) -> Any:
        return _Transport(self.conf.broker_consumer, self)
