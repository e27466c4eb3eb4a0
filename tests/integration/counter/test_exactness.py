"""Counts are exact on the real broker: duplicates, kill -9 restarts, a second worker.

Each test publishes ~28,000 events (20,000 signatures across 50 petitions, then
confirmations, withdrawals, invalidations, duplicate attempts and ~5% of events
published twice) and compares every petition's served count with a tally computed
here from the generated events, by deduplicating on event id.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from groundswell_contracts.events import (
    Event,
    MilestoneReached,
    PetitionCountChanged,
    PetitionCreated,
    SignatureConfirmed,
    SignatureCreated,
    SignatureDuplicateAttempted,
    SignatureInvalidated,
    SignatureWithdrawn,
    parse_event,
)
from groundswell_contracts.headers import DLQ_ERROR

SIGNATURES = 20_000
PETITIONS = 50
DEFAULT_THRESHOLDS = (1_000, 10_000, 100_000)
AREAS = ["OX", "CB", "M", "B", "LS", "EH", "CF", "BT", None]
COUNTRIES = ["GB", "GB", "GB", "IE", "FR", "DE"]
SOURCES = [None, None, "tw", "fb", "newsletter"]


@dataclass
class Plan:
    petition_id: uuid.UUID
    slug: str
    created: str  # "first", "midway" or "never"
    thresholds: tuple[int, ...] = ()
    goal: int | None = None
    auto_raise_goal: bool = False


@dataclass
class Expected:
    slug: str
    signatures: int = 0
    pending: int = 0
    withdrawn: int = 0
    invalidated: int = 0
    by_area: Counter[str] = field(default_factory=Counter)
    by_country: Counter[str] = field(default_factory=Counter)
    by_source: Counter[str] = field(default_factory=Counter)
    by_referral: Counter[str] = field(default_factory=Counter)
    goal: int | None = None
    milestones: set[int] = field(default_factory=set)

    def as_served(self) -> dict[str, Any]:
        return {
            "slug": self.slug,
            "signatures": self.signatures,
            "pending": self.pending,
            "by_area": dict(+self.by_area),
            "by_country": dict(+self.by_country),
            "by_source": dict(+self.by_source),
            "by_referral": dict(+self.by_referral),
            "goal": self.goal,
            "milestones": sorted(self.milestones),
        }

    def as_snapshot(self) -> dict[str, Any]:
        return {**self.as_served(), "withdrawn": self.withdrawn, "invalidated": self.invalidated}


@dataclass
class Scenario:
    plans: list[Plan]
    # Published before the stream, and seen by the counter before any signature.
    opening: list[Event]
    stream: list[Event | tuple[str, bytes, bytes]]
    expected: dict[uuid.UUID, Expected]
    expected_dead_letters: int

    @property
    def total_signature_states(self) -> int:
        return sum(
            e.signatures + e.pending + e.withdrawn + e.invalidated for e in self.expected.values()
        )


def _uuid(rng: random.Random) -> uuid.UUID:
    return uuid.UUID(int=rng.getrandbits(128), version=4)


def build_scenario(seed: int, signatures_topic: str) -> Scenario:
    rng = random.Random(seed)
    plans = []
    for index in range(PETITIONS):
        plan = Plan(
            _uuid(rng),
            f"petition-{seed}-{index}",
            created="never" if index < 3 else "midway" if index < 5 else "first",
        )
        if plan.created == "first":
            if index % 3 == 0:
                plan.thresholds = (100, 200, 300)
            if index % 5 == 0:
                plan.goal = 150
            elif index % 5 == 1:
                # 100 -> 200 -> 400 -> 800: doubling stays "nice", so plain doubling below
                # is the expected rule.
                plan.goal, plan.auto_raise_goal = 100, True
        plans.append(plan)

    def petition_created(plan: Plan) -> PetitionCreated:
        return PetitionCreated(
            petition_id=plan.petition_id,
            slug=plan.slug,
            title="A petition",
            target="Parliament",
            goal=plan.goal,
            milestones=list(plan.thresholds),
            auto_raise_goal=plan.auto_raise_goal,
        )

    weights = [rng.uniform(0.5, 1.5) for _ in plans]
    timed: list[tuple[float, Event | tuple[str, bytes, bytes]]] = []
    for _ in range(SIGNATURES):
        plan = rng.choices(plans, weights)[0]
        signature_id, at = _uuid(rng), rng.random()
        status = rng.choices(["signed", "pending", "fraudulent"], [70, 27, 3])[0]
        timed.append(
            (
                at,
                SignatureCreated(
                    petition_id=plan.petition_id,
                    signature_id=signature_id,
                    petition_slug=plan.slug,
                    petition_title="A petition",
                    status=status,  # type: ignore[arg-type]
                    contact_consent=True,
                    postcode_area=rng.choice(AREAS),
                    country=rng.choice(COUNTRIES),
                    source=rng.choice(SOURCES),
                    ref="share1" if rng.random() < 0.2 else None,
                    share_code=signature_id.hex[:8],
                    withdraw_token="w",
                ),
            )
        )
        if status == "pending" and rng.random() < 0.75:
            timed.append(
                (
                    at + rng.random() * 0.05,
                    SignatureConfirmed(petition_id=plan.petition_id, signature_id=signature_id),
                )
            )
        if rng.random() < 0.04:
            timed.append(
                (
                    at + rng.random() * 0.1,
                    SignatureWithdrawn(petition_id=plan.petition_id, signature_id=signature_id),
                )
            )
        if rng.random() < 0.03:
            timed.append(
                (
                    at + rng.random() * 0.1,
                    SignatureInvalidated(
                        petition_id=plan.petition_id, signature_id=signature_id, reason="ip"
                    ),
                )
            )
        if rng.random() < 0.01:
            timed.append(
                (
                    at + rng.random() * 0.1,
                    SignatureDuplicateAttempted(
                        petition_id=plan.petition_id,
                        signature_id=signature_id,
                        petition_slug=plan.slug,
                        petition_title="A petition",
                        share_code="x",
                    ),
                )
            )
    for plan in plans:
        if plan.created == "midway":
            timed.append((0.5, petition_created(plan)))
    # The outbox republishing: the same event (same event_id) again, a little later.
    for at, item in list(timed):
        if rng.random() < 0.05:
            timed.append((at + rng.random() * 0.1, item))
    key = str(plans[0].petition_id).encode()
    timed += [
        (0.3, (signatures_topic, key, b"this is not json")),
        (0.6, (signatures_topic, key, b'{"event_type": "SignatureCreated", "petition_id": 1}')),
        # An event type from a newer producer: skipped, not dead-lettered.
        (0.7, (signatures_topic, key, b'{"event_type": "SignatureTeleported", "x": 1}')),
    ]
    timed.sort(key=lambda pair: pair[0])
    opening: list[Event] = [petition_created(p) for p in plans if p.created == "first"]
    stream = [item for _, item in timed]
    return Scenario(plans, opening, stream, expected_tally(plans, opening + stream), 2)


def expected_tally(plans: list[Plan], events: list[Any]) -> dict[uuid.UUID, Expected]:
    """Replays the events in publication order, deduplicated by event id."""
    expected = {plan.petition_id: Expected(plan.slug) for plan in plans}
    thresholds: dict[uuid.UUID, tuple[int, ...]] = {
        p.petition_id: DEFAULT_THRESHOLDS for p in plans
    }
    auto_raise: dict[uuid.UUID, bool] = defaultdict(bool)
    seen: set[uuid.UUID] = set()
    state: dict[uuid.UUID, str] = {}
    origin: dict[uuid.UUID, tuple[str, str, str, str]] = {}

    def move(tally: Expected, signature_id: uuid.UUID, new: str) -> None:
        old = state.get(signature_id)
        for cls, sign in ((old, -1), (new, +1)):
            if cls == "counted":
                tally.signatures += sign
                area, country, source, referral = origin[signature_id]
                tally.by_area[area] += sign
                tally.by_country[country] += sign
                tally.by_source[source] += sign
                tally.by_referral[referral] += sign
            elif cls in ("pending", "withdrawn", "invalidated"):
                setattr(tally, cls, getattr(tally, cls) + sign)
        state[signature_id] = new

    for event in events:
        if isinstance(event, tuple) or event.event_id in seen:
            continue
        seen.add(event.event_id)
        tally = expected[event.petition_id]
        if isinstance(event, PetitionCreated):
            thresholds[event.petition_id] = tuple(event.milestones) or DEFAULT_THRESHOLDS
            tally.goal, auto_raise[event.petition_id] = event.goal, event.auto_raise_goal
        elif isinstance(event, SignatureCreated):
            origin[event.signature_id] = (
                event.postcode_area or "unknown",
                event.country,
                event.source or "none",
                "referral" if event.ref else "direct",
            )
            move(
                tally,
                event.signature_id,
                {"signed": "counted", "pending": "pending", "fraudulent": "fraudulent"}[
                    event.status
                ],
            )
        elif isinstance(event, SignatureConfirmed):
            if state.get(event.signature_id) == "pending":
                move(tally, event.signature_id, "counted")
        elif isinstance(event, SignatureWithdrawn | SignatureInvalidated):
            if state.get(event.signature_id) in ("pending", "counted"):
                move(
                    tally,
                    event.signature_id,
                    "withdrawn" if isinstance(event, SignatureWithdrawn) else "invalidated",
                )
        else:
            continue
        tally.milestones |= {t for t in thresholds[event.petition_id] if t <= tally.signatures}
        while tally.goal is not None and tally.signatures >= tally.goal:
            tally.milestones.add(tally.goal)
            if not auto_raise[event.petition_id]:
                break
            tally.goal *= 2
    return expected


def snapshot_mismatches(
    scenario: Scenario, latest: dict[uuid.UUID, PetitionCountChanged]
) -> list[str]:
    problems = []
    for petition_id, expected in scenario.expected.items():
        snapshot = latest.get(petition_id)
        if snapshot is None:
            problems.append(f"{expected.slug}: no snapshot")
            continue
        got = snapshot.model_dump(include=set(expected.as_snapshot()))
        want = expected.as_snapshot()
        if got != want:
            diff = {k: (got[k], want[k]) for k in want if got[k] != want[k]}
            problems.append(f"{expected.slug}: got/want {diff}")
    return problems


def progress(scenario: Scenario, latest: dict[uuid.UUID, PetitionCountChanged]) -> float:
    done = sum(s.signatures + s.pending + s.withdrawn + s.invalidated for s in latest.values())
    return done / scenario.total_signature_states


async def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.1)


async def wait_exact(
    scenario: Scenario, counts: Any, workers: list[Any], timeout: float = 150
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        problems = snapshot_mismatches(scenario, counts.latest)
        if not problems:
            return
        if time.monotonic() > deadline:
            reports = []
            for w in workers:
                reports.append(f"--- {w.name}\n{await event_metrics(w)}\n{w.log_tail(15)}")
            logs = "\n\n".join(reports)
            raise AssertionError(
                f"{len(problems)} petitions wrong after {timeout}s, e.g.:\n"
                + "\n".join(problems[:5])
                + "\n"
                + logs
            )
        await asyncio.sleep(0.5)


async def event_metrics(worker: Any) -> str:
    try:
        async with httpx.AsyncClient(base_url=worker.url, timeout=5) as http:
            text = (await http.get("/metrics")).text
    except httpx.HTTPError as exc:
        return f"(no metrics: {exc!r})"
    return "\n".join(
        line
        for line in text.splitlines()
        if line.startswith(
            ("groundswell_counter_events_total", "groundswell_counter_out_of_sequence_total")
        )
    )


async def assert_served_exactly(scenario: Scenario, worker: Any, timeout: float = 15) -> None:
    """The worker's HTTP view reads `counts` on its own, so it may trail the topic briefly."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=worker.url, timeout=5) as http:
        for expected in scenario.expected.values():
            while True:
                response = await http.get(f"/api/petitions/{expected.slug}/count")
                assert response.status_code == 200, (expected.slug, response.text)
                body = response.json()
                served = {k: body[k] for k in expected.as_served()}
                if served == expected.as_served() or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert served == expected.as_served(), expected.slug
            assert body["updated_at"]


def assert_milestones(scenario: Scenario, records: list[Any], *, allow_repeats: bool) -> None:
    announced = []
    for _key, value, _headers in records:
        event = parse_event(value)
        assert isinstance(event, MilestoneReached)
        # Deterministic ids: a repeat after a crash is recognisably the same milestone.
        assert event.event_id == uuid.uuid5(event.petition_id, str(event.threshold))
        announced.append((event.petition_id, event.threshold))
    want = {(pid, t) for pid, e in scenario.expected.items() for t in e.milestones}
    assert want, "the scenario should reach some milestones"
    assert set(announced) == want
    if not allow_repeats:
        assert len(announced) == len(set(announced)), "a milestone was announced twice"


def assert_dead_letters(scenario: Scenario, records: list[Any]) -> None:
    assert len({value for _key, value, _headers in records}) == scenario.expected_dead_letters
    for _key, _value, headers in records:
        assert dict(headers).get(DLQ_ERROR), "every dead letter says why"


async def open_counts(
    counter_stack: Any, publisher_for: Any, scenario: Scenario, counts: Any
) -> None:
    """Publish the petitions and wait until the counter has met them all."""
    async with publisher_for(counter_stack.bootstrap, counter_stack.topics) as publisher:
        await publisher.publish(scenario.opening)
    opened = {event.petition_id for event in scenario.opening}
    await wait_until(lambda: opened <= set(counts.latest), 60, "the opening petitions")


async def test_counts_are_exact_with_duplicates(
    counter_stack: Any, publisher_for: Any, topic_reader: Any
) -> None:
    scenario = build_scenario(1, counter_stack.topics.signatures)
    worker = counter_stack.start_worker("solo")
    await counter_stack.wait_ready(worker)
    topics = counter_stack.topics
    async with (
        topic_reader(counter_stack.bootstrap, topics.counts) as counts,
        topic_reader(counter_stack.bootstrap, topics.milestones) as milestones,
        topic_reader(counter_stack.bootstrap, topics.dead_letters) as dead_letters,
    ):
        await open_counts(counter_stack, publisher_for, scenario, counts)
        async with publisher_for(counter_stack.bootstrap, topics) as publisher:
            await publisher.publish(scenario.stream)
        await wait_exact(scenario, counts, [worker])
        await assert_served_exactly(scenario, worker)
        await asyncio.sleep(1)  # anything late would be a double count
        assert snapshot_mismatches(scenario, counts.latest) == []
        assert_milestones(scenario, milestones.records, allow_repeats=False)
        assert_dead_letters(scenario, dead_letters.records)


async def test_counts_stay_exact_when_the_worker_is_killed_twice(
    counter_stack: Any, publisher_for: Any, topic_reader: Any
) -> None:
    scenario = build_scenario(2, counter_stack.topics.signatures)
    worker = counter_stack.start_worker("first")
    await counter_stack.wait_ready(worker)
    topics = counter_stack.topics
    async with (
        topic_reader(counter_stack.bootstrap, topics.counts) as counts,
        topic_reader(counter_stack.bootstrap, topics.milestones) as milestones,
    ):
        await open_counts(counter_stack, publisher_for, scenario, counts)
        async with publisher_for(counter_stack.bootstrap, topics) as publisher:
            publishing = asyncio.create_task(publisher.publish(scenario.stream, rate=2_500))
            for name, mark in (("second", 0.25), ("third", 0.6)):
                await wait_until(
                    lambda m=mark: progress(scenario, counts.latest) >= m,
                    120,
                    f"{mark:.0%} of the stream counted",
                )
                worker.process.kill()  # SIGKILL, mid-stream
                worker = counter_stack.start_worker(name)
                await counter_stack.wait_ready(worker)
            await publishing
        workers = counter_stack.workers
        await wait_exact(scenario, counts, workers)
        await assert_served_exactly(scenario, worker)
        assert_milestones(scenario, milestones.records, allow_repeats=True)


async def test_counts_stay_exact_when_a_second_worker_joins(
    counter_stack: Any, publisher_for: Any, topic_reader: Any
) -> None:
    scenario = build_scenario(3, counter_stack.topics.signatures)
    first = counter_stack.start_worker("first")
    await counter_stack.wait_ready(first)
    topics = counter_stack.topics
    async with (
        topic_reader(counter_stack.bootstrap, topics.counts) as counts,
        topic_reader(counter_stack.bootstrap, topics.milestones) as milestones,
    ):
        await open_counts(counter_stack, publisher_for, scenario, counts)
        async with publisher_for(counter_stack.bootstrap, topics) as publisher:
            publishing = asyncio.create_task(publisher.publish(scenario.stream, rate=2_500))
            await wait_until(
                lambda: progress(scenario, counts.latest) >= 0.3, 120, "30% of the stream counted"
            )
            second = counter_stack.start_worker("second")  # the group rebalances
            await counter_stack.wait_ready(second)
            await publishing
        await wait_exact(scenario, counts, [first, second])
        # Whichever worker a request lands on, the answer is the same and exact.
        await assert_served_exactly(scenario, first)
        await assert_served_exactly(scenario, second)
        assert_milestones(scenario, milestones.records, allow_repeats=False)
        assert first.process.running() and second.process.running()


@pytest.mark.parametrize("seed", [1])
def test_the_scenario_is_what_the_issue_asks_for(seed: int) -> None:
    scenario = build_scenario(seed, "signatures")
    created = [e for e in scenario.stream if isinstance(e, SignatureCreated)]
    assert len({e.signature_id for e in created}) == SIGNATURES
    assert len({e.petition_id for e in created}) == PETITIONS
    assert len(created) > SIGNATURES  # some published twice
    kinds = Counter(type(e).__name__ for e in scenario.stream if not isinstance(e, tuple))
    assert kinds["SignatureConfirmed"] and kinds["SignatureWithdrawn"]
    assert kinds["SignatureInvalidated"] and kinds["SignatureDuplicateAttempted"]
