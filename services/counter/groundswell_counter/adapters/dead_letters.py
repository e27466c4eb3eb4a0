"""The counter's dead letters: a source record it cannot count, parked on `counter.dlq`
(prefixed in tests) through the one dead-letter path, `groundswell_runtime.dead_letters`,
so `groundswell-ops dlq` reads and redrives them like every other consumer's.

Sent until the broker has it (`Publisher.send_acknowledged`): the batch's offsets must
not be committed past a record that is neither counted nor parked.
"""

from __future__ import annotations

from groundswell_contracts.topics import Consumer
from groundswell_runtime.dead_letters import DeadLetter, park

from groundswell_counter.service_layer.ports import Publisher, SourceRecord


class KafkaDeadLetters:
    """Implements `service_layer.ports.DeadLetters`."""

    def __init__(self, publisher: Publisher, topic: str) -> None:
        self._publisher = publisher
        self._topic = topic

    async def __call__(self, record: SourceRecord, error: str) -> None:
        async def send(letter: DeadLetter) -> None:
            await self._publisher.send_acknowledged(
                letter.topic, letter.key, letter.value, letter.headers
            )

        await park(Consumer.COUNTER, record, error, send, to=self._topic)
