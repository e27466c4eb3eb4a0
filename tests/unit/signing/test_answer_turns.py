"""A large batch is answered a chunk at a time, with a turn of the event loop between,
so that the server's door reads its sockets (and refuses at once) meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from groundswell_signing.adapters import repository
from groundswell_signing.service_layer import group_commit
from groundswell_signing.service_layer.group_commit import TURN_EVERY, SignatureWriter

from .conftest import attempt

BATCH = 163


class _Pool:
    @contextlib.asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        yield None


async def _every_one_inserted(_conn: Any, batch: repository.SignatureBatch) -> list[Any]:
    return [repository.Written(open=True, over_limit_until=None, inserted=True)] * len(batch.rows)


async def test_a_large_batch_is_answered_over_several_turns_of_the_loop(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(repository, "write_signatures", _every_one_inserted)
    monkeypatch.setattr(group_commit, "data_key_issued", lambda *_: object())
    monkeypatch.setattr(group_commit, "_created_event", lambda _attempt: object())
    loop = asyncio.get_running_loop()
    turn = 0

    def tick() -> None:  # runs once per turn of the loop
        nonlocal turn
        turn += 1
        if ticking:
            loop.call_soon(tick)

    ticking = True
    loop.call_soon(tick)
    writer = SignatureWriter(
        _Pool(),  # type: ignore[arg-type]
        wake_relay=lambda: None,
        flag_over_limit=False,
        writers=1,
        gather=0.05,  # every attempt below joins one batch
    )
    attempts = []
    for n in range(BATCH):
        a = attempt()
        a.row.update(id=n, initial_status="pending", data_key=b"k")
        attempts.append(a)
    answered_at: list[int] = []
    for a in attempts:
        a.future.add_done_callback(lambda _f: answered_at.append(turn))
    running = asyncio.ensure_future(writer.run())
    results = await asyncio.gather(*(writer.submit(a) for a in attempts))
    ticking = False
    running.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await running

    assert {r.verdict for r in results} == {"recorded"}
    assert len(answered_at) == BATCH
    per_turn = {t: answered_at.count(t) for t in set(answered_at)}
    assert TURN_EVERY < BATCH // 4
    # Without the turns every answer came in one turn; now no turn holds more than a chunk.
    assert max(per_turn.values()) <= TURN_EVERY
    assert len(per_turn) >= BATCH // TURN_EVERY
