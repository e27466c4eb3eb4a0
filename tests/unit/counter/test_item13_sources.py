"""Issue 8 item 13: signers choose `source`, so the public count caps how many it names.

The public document (snapshots on `counts`, the JSON count, every live-stream event)
names the largest sources, up to `COUNTER_PUBLIC_SOURCE_LIMIT` (default 20), and sums
the rest under "other"; the petition record keeps every source, exactly (see
`test_worker.test_item13_...`).
"""

from __future__ import annotations

import json
import uuid

import httpx
from groundswell_contracts.events import PetitionCountChanged
from groundswell_counter.adapters.counts_view import CountsView
from groundswell_counter.config import CounterSettings
from groundswell_counter.domain.tally import top_buckets
from groundswell_counter.entrypoints.http import create_http_app


def snapshot_with_sources(sources: dict[str, int]) -> PetitionCountChanged:
    total = sum(sources.values())
    return PetitionCountChanged(
        petition_id=uuid.uuid4(),
        slug="owls",
        signatures=total,
        pending=0,
        by_area={"OX": total},
        by_country={"GB": total},
        by_source=sources,
        by_referral={"direct": total},
    )


async def test_item13_the_served_count_names_at_most_20_sources_and_sums_the_rest() -> None:
    view = CountsView("127.0.0.1:1", "counts")
    # 500 sources, one signature each except a few popular ones.
    sources = {f"campaign-{i}": 1 for i in range(500)} | {"newsletter": 90, "facebook": 40}
    view.apply(snapshot_with_sources(sources))
    app = create_http_app(CounterSettings(), view, {})
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://counter"
    ) as http:
        body = (await http.get("/api/petitions/owls/count")).json()
    served = body["by_source"]
    assert len(served) == 21  # the 20 largest, and "other"
    assert served["newsletter"] == 90 and served["facebook"] == 40
    assert served["other"] == 500 - 18
    assert sum(served.values()) == body["signatures"] == 630


def test_item13_the_limit_is_configurable() -> None:
    settings = CounterSettings(public_source_limit=3)
    view = CountsView("127.0.0.1:1", "counts", source_limit=settings.public_source_limit)
    view.apply(snapshot_with_sources({"a": 5, "b": 4, "c": 3, "d": 2, "e": 1}))
    entry = view.by_slug("owls")
    assert entry is not None
    assert json.loads(entry.body)["by_source"] == {"a": 5, "b": 4, "c": 3, "other": 3}


def test_item13_ties_are_broken_by_name_and_a_source_called_other_joins_the_rest() -> None:
    assert top_buckets({"b": 1, "a": 1, "c": 1}, 2) == {"a": 1, "b": 1, "other": 1}
    assert top_buckets({"other": 9, "x": 5, "y": 1}, 2) == {"x": 5, "other": 10}
    assert top_buckets({"x": 1}, 2) == {"x": 1}  # under the limit: untouched
