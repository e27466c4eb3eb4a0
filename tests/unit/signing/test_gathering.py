"""Group commit lets a small batch gather before it is written (fewer transactions)."""

from __future__ import annotations

import asyncio

from groundswell_signing.service_layer.group_commit import (
    Attempt,
    Result,
    SignatureWriter,
    _settle,
)

from .conftest import attempt


class RecordingWriter(SignatureWriter):
    """Writes nothing: records each batch it would write and answers it."""

    def __init__(self, gather: float, enough: int | None = None) -> None:
        super().__init__(
            None,  # type: ignore[arg-type]
            wake_relay=lambda: None,
            flag_over_limit=False,
            writers=1,
            gather=gather,
            enough=enough,
        )
        self.batches: list[int] = []

    async def _write(self, batch: list[Attempt]) -> None:
        self.batches.append(len(batch))
        for a in batch:
            _settle(a, result=Result("recorded"))


async def three_in_a_row(writer: RecordingWriter) -> list[int]:
    running = asyncio.ensure_future(writer.run())
    first = asyncio.ensure_future(writer.submit(attempt()))
    await asyncio.sleep(0)  # the writer wakes for the first one
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(writer.submit(attempt())) for _ in range(2)]
    results = await asyncio.gather(first, *rest)
    running.cancel()
    assert {r.verdict for r in results} == {"recorded"}
    return writer.batches


async def test_without_gathering_the_first_request_goes_alone() -> None:
    assert await three_in_a_row(RecordingWriter(gather=0)) == [1, 2]


async def test_with_gathering_requests_close_together_share_a_transaction() -> None:
    assert await three_in_a_row(RecordingWriter(gather=0.2)) == [3]


async def test_a_batch_that_has_enough_is_written_without_waiting_out_the_gather() -> None:
    """Under a closed loop (every client waiting for its answer) the gather was all
    latency: a batch that holds `enough` goes at once."""
    writer = RecordingWriter(gather=30, enough=3)
    batches = await asyncio.wait_for(three_in_a_row(writer), timeout=5)
    assert batches == [3]
