"""After start-up, the start-up heap is frozen and young collections are rarer."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from groundswell_runtime.heap import GC_YOUNG_THRESHOLD, settle_heap


@pytest.fixture
def restored_gc() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


@pytest.mark.usefixtures("restored_gc")
def test_settled_heap_is_frozen_and_collected_less_often() -> None:
    gc.unfreeze()
    gc.set_threshold(700, 11, 12)
    start_up = [[n] for n in range(1000)]  # objects built at start-up

    settle_heap()

    assert gc.get_freeze_count() >= len(start_up)
    # Only the young generation's threshold changes.
    assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, 11, 12)
    assert GC_YOUNG_THRESHOLD > 700
