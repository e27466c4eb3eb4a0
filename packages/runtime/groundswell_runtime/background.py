"""Long-running loops beside the HTTP app, restarted when their broker or database drops.

A service's HTTP side keeps answering while Kafka is away; `/readyz`
says what is missing.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Collection, Sequence

import structlog

from groundswell_runtime.consumer import EventConsumer, Handler
from groundswell_runtime.kafka import FETCH_MAX_WAIT_MS, make_consumer, make_producer
from groundswell_runtime.retry import backoff
from groundswell_runtime.surge_yield import SurgeYield

log = structlog.get_logger()

# A loop that ran this long before failing was healthy: start its backoff afresh.
_HEALTHY_RUN_SECONDS = 30.0


async def supervise(
    name: str, run: Callable[[], Awaitable[None]], *, max_backoff: float = 10.0
) -> None:
    """Run `run` until it returns (a requested stop); restart it after any failure."""
    failures = 0
    loop = asyncio.get_running_loop()
    while True:
        started = loop.time()
        try:
            await run()
            return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the loop must outlive any one failure
            failures = 1 if loop.time() - started > _HEALTHY_RUN_SECONDS else failures + 1
            pause = backoff(failures, first=0.5, cap=max_backoff)
            log.warning(
                "background_task_failed",
                task=name,
                error=type(exc).__name__,
                retry_in=round(pause, 2),
            )
        await asyncio.sleep(pause)


class ConsumerLoop:
    """One `EventConsumer` run: a fresh aiokafka consumer and dead-letter producer each time."""

    def __init__(
        self,
        name: str,
        group: str,
        topics: Sequence[str],
        bootstrap: str,
        handler: Handler,
        *,
        first: Collection[str] = (),
        fetch_max_wait_ms: int = FETCH_MAX_WAIT_MS,
        surge: SurgeYield | None = None,
    ) -> None:
        self.name = name
        self._surge = surge
        self._first = first
        self._fetch_max_wait_ms = fetch_max_wait_ms
        self._group = group
        self._topics = list(topics)
        self._bootstrap = bootstrap
        self._handler = handler
        self.consuming = False

    async def run(self) -> None:
        consumer = make_consumer(
            self._bootstrap, self._group, *self._topics, fetch_max_wait_ms=self._fetch_max_wait_ms
        )
        dead_letters = make_producer(self._bootstrap)
        try:
            await consumer.start()
            await dead_letters.start()
            self.consuming = True
            log.info("consumer_started", group=self._group, topics=self._topics)
            await EventConsumer(
                self.name,
                consumer,
                dead_letters,
                self._handler,
                first=self._first,
                surge=self._surge,
            ).run()
        finally:
            self.consuming = False
            # stop() can hang when the broker restarted under us; do not let it block shutdown.
            for client in (consumer, dead_letters):
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.stop(), timeout=10)


async def cancel_and_wait(task: asyncio.Task[None] | None, grace: float = 10.0) -> None:
    if task is None or task.done():
        return
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError, Exception):
        await asyncio.wait_for(task, grace)
