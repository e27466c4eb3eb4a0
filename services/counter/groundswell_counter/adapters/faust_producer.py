"""The counter's outgoing events (milestones, dead letters, snapshots) through faust's producer.

The producer is looked up on every call, not kept: faust creates it lazily, once the
app runs (and the unit tests put a fake in its place).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import faust
import structlog
from aiokafka.errors import KafkaError
from groundswell_runtime.retry import backoff

log = structlog.get_logger()


class FaustPublisher:
    """Implements `service_layer.ports.Publisher`."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send_acknowledged(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: Sequence[tuple[str, bytes]],
    ) -> None:
        # A broker outage is not the event's fault: keep trying, without committing past it.
        failures = 0
        while True:
            try:
                await self._app.producer.send_and_wait(
                    topic, key, value, partition=None, timestamp=None, headers=list(headers)
                )
                return
            except KafkaError as exc:
                failures += 1
                delay = backoff(failures)
                log.warning("send_retrying", topic=topic, error=type(exc).__name__, retry_in=delay)
                await asyncio.sleep(delay)

    async def send(
        self, topic: str, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]]
    ) -> None:
        # Awaiting send() only enqueues the record; it is sent with the next batch.
        await self._app.producer.send(
            topic, key, value, partition=None, timestamp=None, headers=list(headers)
        )

    async def flush(self) -> None:
        await self._app.producer.flush()
