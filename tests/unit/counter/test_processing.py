"""Exactly-once application of events, including replays after simulated crashes (no I/O).

The crash simulation mirrors what faust and Kafka guarantee, and nothing more:
table writes go to one ordered changelog; offsets are committed only after every
write made so far is durable; a crash keeps an arbitrary prefix of the writes made
since the last commit; the restarted worker rebuilds its table from the durable
changelog and re-reads every event after the last commit.
"""

from __future__ import annotations

import random
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from groundswell_contracts.events import (
    AnyEvent,
    PetitionCreated,
    PetitionUpdated,
    ShareLinkClicked,
    SignatureConfirmed,
    SignatureCreated,
    SignatureDuplicateAttempted,
    SignatureInvalidated,
    SignatureWithdrawn,
)
from groundswell_counter.adapters.records import (
    petition_from_json,
    petition_to_json,
    signature_from_json,
    signature_to_json,
)
from groundswell_counter.domain.milestones import MilestonePolicy
from groundswell_counter.domain.processing import (
    Change,
    Delivery,
    MisroutedEvent,
    Outcome,
    PetitionRecord,
    Position,
    SignatureRecord,
    Source,
    delivery,
    from_lost_log,
    petition_key,
    process,
    signature_key,
)
from groundswell_counter.domain.tally import SignatureClass

NOW = datetime(2026, 1, 1, tzinfo=UTC)
POLICY = MilestonePolicy(default_thresholds=(5, 10, 20))
SIGNATURE_EVENTS = (SignatureCreated, SignatureConfirmed, SignatureWithdrawn, SignatureInvalidated)


def created(
    petition: uuid.UUID,
    sig: uuid.UUID,
    status: str = "signed",
    *,
    area: str = "OX",
    country: str = "GB",
    source: str | None = None,
    ref: str | None = None,
    slug: str = "owls",
) -> SignatureCreated:
    return SignatureCreated(
        petition_id=petition,
        signature_id=sig,
        petition_slug=slug,
        petition_title="Owls",
        status=status,  # type: ignore[arg-type]
        contact_consent=False,
        postcode_area=area,
        country=country,
        source=source,
        ref=ref,
        share_code="c",
        withdraw_token="w",
    )


def petition_created(petition: uuid.UUID, **fields: Any) -> PetitionCreated:
    return PetitionCreated(
        petition_id=petition, slug="owls", title="Owls", target="Parliament", **fields
    )


def sig_at(offset: int, partition: int = 0) -> Position:
    return Position(Source.SIGNATURES, partition, offset)


def run(
    event: AnyEvent,
    at: Position,
    petition: PetitionRecord | None = None,
    signature: SignatureRecord | None = None,
) -> Any:
    return process(event, at, petition, signature, policy=POLICY, now=NOW)


# --- single steps -------------------------------------------------------------


def test_an_event_for_an_unknown_petition_is_counted_under_its_id() -> None:
    petition, sig = uuid.uuid4(), uuid.uuid4()
    step = run(created(petition, sig, slug="owls-now"), sig_at(7, partition=3))
    assert step.outcome == Outcome.APPLIED
    assert step.petition.petition_id == petition and step.petition.slug == "owls-now"
    assert step.petition.partition == 3 and step.petition.applied == {"signatures": 7}
    assert step.petition.tally.signatures == 1
    assert step.signature.changes == (Change(Source.SIGNATURES, 7, SignatureClass.UNKNOWN),)


def test_an_applied_offset_is_never_applied_again() -> None:
    petition, sig = uuid.uuid4(), uuid.uuid4()
    first = run(created(petition, sig), sig_at(7))
    again = run(
        SignatureWithdrawn(petition_id=petition, signature_id=uuid.uuid4()),
        sig_at(7),
        first.petition,
    )
    assert again.outcome == Outcome.ALREADY_APPLIED
    assert again.petition is None and again.signature is None
    assert run(created(petition, sig), sig_at(3), first.petition).outcome == Outcome.ALREADY_APPLIED


def test_a_republished_event_at_a_new_offset_writes_nothing() -> None:
    petition, sig = uuid.uuid4(), uuid.uuid4()
    event = created(petition, sig)
    first = run(event, sig_at(7))
    repeat = run(event, sig_at(12), first.petition, first.signature)
    assert repeat.outcome == Outcome.NO_CHANGE
    assert repeat.petition is None and repeat.signature is None


def test_signature_writes_that_survived_without_their_petition_write_are_completed() -> None:
    petition, sig = uuid.uuid4(), uuid.uuid4()
    create = created(petition, sig, "pending")
    confirm = SignatureConfirmed(petition_id=petition, signature_id=sig)
    withdraw = SignatureWithdrawn(petition_id=petition, signature_id=sig)
    first = run(create, sig_at(1))
    second = run(confirm, sig_at(2), first.petition, first.signature)
    third = run(withdraw, sig_at(3), second.petition, second.signature)
    # Crash: the signature record as of offset 3 is durable, no petition record is.
    landed = third.signature
    assert [c.offset for c in landed.changes] == [1, 2, 3]
    replay = run(create, sig_at(1), None, landed)
    assert replay.outcome == Outcome.APPLIED and replay.signature is None
    assert replay.petition.tally == first.petition.tally
    replay = run(confirm, sig_at(2), replay.petition, landed)
    assert replay.petition.tally == second.petition.tally
    replay = run(withdraw, sig_at(3), replay.petition, landed)
    assert replay.petition.tally == third.petition.tally
    assert (replay.petition.tally.signatures, replay.petition.tally.withdrawn) == (0, 1)


def test_an_event_on_another_partition_than_its_petition_is_rejected() -> None:
    petition, sig = uuid.uuid4(), uuid.uuid4()
    first = run(created(petition, sig), sig_at(1, partition=0))
    with pytest.raises(MisroutedEvent):
        run(created(petition, uuid.uuid4()), sig_at(2, partition=1), first.petition)


def test_duplicate_attempts_count_nothing_but_name_the_petition() -> None:
    petition = uuid.uuid4()
    attempt = SignatureDuplicateAttempted(
        petition_id=petition,
        signature_id=uuid.uuid4(),
        petition_slug="owls",
        petition_title="Owls",
        share_code="c",
    )
    step = run(attempt, sig_at(1))
    assert step.petition.slug == "owls" and step.petition.tally.signatures == 0
    assert run(attempt, sig_at(2), step.petition).outcome == Outcome.NO_CHANGE


def test_events_the_counter_does_not_use_are_ignored() -> None:
    click = ShareLinkClicked(petition_id=uuid.uuid4(), share_code="c")
    assert run(click, sig_at(1)).outcome == Outcome.IGNORED


def test_petition_settings_drive_milestones_and_a_new_goal_replaces_a_raised_one() -> None:
    petition = uuid.uuid4()
    at = Position(Source.PETITIONS, 0, 0)
    step = run(petition_created(petition, goal=2, auto_raise_goal=True, milestones=[1, 3]), at)
    record = step.petition
    for offset in range(3):
        step = run(created(petition, uuid.uuid4()), sig_at(offset), record)
        record = step.petition
    assert record.reached == (1, 2, 3) and record.goal == 4
    # A title edit keeps the raised goal; a new goal from the organiser replaces it.
    update = PetitionUpdated(
        petition_id=petition,
        slug="owls",
        title="Owls!",
        target="P",
        goal=2,
        auto_raise_goal=True,
        milestones=[1, 3],
    )
    step = run(update, Position(Source.PETITIONS, 0, 1), record)
    assert step.petition.goal == 4 and step.milestones == ()
    update = update.model_copy(update={"goal": 50})
    step = run(update, Position(Source.PETITIONS, 0, 2), step.petition)
    assert step.petition.goal == 50 and step.petition.requested_goal == 50


def test_defaults_apply_when_a_petition_has_no_milestones_of_its_own() -> None:
    petition = uuid.uuid4()
    record = None
    hits: list[int] = []
    for offset in range(10):
        step = run(created(petition, uuid.uuid4()), sig_at(offset), record)
        record = step.petition
        hits += [hit.threshold for hit in step.milestones]
    assert hits == [5, 10]


def test_records_survive_the_changelog_format() -> None:
    petition, sig = uuid.uuid4(), uuid.uuid4()
    step = run(created(petition, sig, source="tw", ref="r"), sig_at(4))
    assert signature_from_json(signature_to_json(step.signature)) == step.signature
    assert petition_from_json(petition_to_json(step.petition)) == step.petition


def test_delivered_offsets_are_checked_against_the_partition_watermark() -> None:
    assert delivery(0, None) == Delivery.NEXT  # nothing applied yet
    assert delivery(42, None) == Delivery.NEXT
    assert delivery(8, 7) == Delivery.NEXT
    assert delivery(7, 7) == Delivery.REPLAY
    assert delivery(3, 7) == Delivery.REPLAY
    assert delivery(10, 7) == Delivery.GAP  # 8 and 9 were skipped over


# --- crash simulation ---------------------------------------------------------------


@dataclass
class Read:
    event: AnyEvent
    at: Position


@dataclass
class SimulatedWorker:
    """One partition's worker, as the faust worker runs it: batches of events, signature
    records written per event, petition records once at the end of the batch, and a
    table rebuilt from a changelog that keeps an arbitrary prefix on crash."""

    changelog: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    durable: int = 0  # changelog entries that survive any crash
    table: dict[str, dict[str, Any]] = field(default_factory=dict)
    announced: list[tuple[uuid.UUID, int]] = field(default_factory=list)

    def write(self, key: str, doc: dict[str, Any]) -> None:
        self.changelog.append((key, doc))
        self.table[key] = doc

    def apply_batch(self, reads: list[Read]) -> None:
        touched: dict[uuid.UUID, PetitionRecord] = {}
        for read in reads:
            event = read.event
            petition_doc = self.table.get(petition_key(event.petition_id))
            petition = touched.get(event.petition_id) or (
                None if petition_doc is None else petition_from_json(petition_doc)
            )
            signature_doc = (
                self.table.get(signature_key(event.signature_id))
                if isinstance(event, SIGNATURE_EVENTS)
                else None
            )
            step = process(
                event,
                read.at,
                petition,
                None if signature_doc is None else signature_from_json(signature_doc),
                policy=POLICY,
                now=NOW,
            )
            if step.petition is not None:
                self.announced += [
                    (step.petition.petition_id, hit.threshold) for hit in step.milestones
                ]
                touched[step.petition.petition_id] = step.petition
            if step.signature is not None:
                self.write(
                    signature_key(step.signature.signature_id), signature_to_json(step.signature)
                )
        for record in touched.values():
            self.write(petition_key(record.petition_id), petition_to_json(record))

    def commit(self) -> None:
        self.durable = len(self.changelog)

    def crash(self, rng: random.Random) -> None:
        kept = rng.randint(self.durable, len(self.changelog))
        del self.changelog[kept:]
        self.table = {}
        for key, doc in self.changelog:
            self.table[key] = doc


def generate(rng: random.Random, petitions: list[uuid.UUID]) -> list[Read]:
    """A realistic stream: creations, follow-ups later, and republished duplicates."""
    timed: list[tuple[float, AnyEvent]] = []
    for petition in petitions:
        timed.append(
            (
                -1.0,
                petition_created(
                    petition, goal=rng.choice([None, 6, 12]), auto_raise_goal=rng.random() < 0.5
                ),
            )
        )
    for _ in range(rng.randint(20, 60)):
        petition, sig = rng.choice(petitions), uuid.uuid4()
        at = rng.random()
        status = rng.choices(["signed", "pending", "fraudulent"], [6, 3, 1])[0]
        timed.append(
            (
                at,
                created(
                    petition,
                    sig,
                    status,
                    area=rng.choice(["OX", "CB", "M"]),
                    country=rng.choice(["GB", "FR"]),
                    source=rng.choice([None, "tw"]),
                    ref=rng.choice([None, "r1"]),
                ),
            )
        )
        if status == "pending" and rng.random() < 0.7:
            timed.append(
                (
                    at + rng.random() * 0.2,
                    SignatureConfirmed(petition_id=petition, signature_id=sig),
                )
            )
        if rng.random() < 0.15:
            timed.append(
                (
                    at + rng.random() * 0.3,
                    SignatureWithdrawn(petition_id=petition, signature_id=sig),
                )
            )
        if rng.random() < 0.1:
            timed.append(
                (
                    at + rng.random() * 0.3,
                    SignatureInvalidated(petition_id=petition, signature_id=sig, reason="ip"),
                )
            )
    for at, event in list(timed):
        if rng.random() < 0.15:  # the outbox publishes the same event again, later
            timed.append((at + rng.random() * 0.3, event))
    timed.sort(key=lambda pair: pair[0])
    offsets: Counter[Source] = Counter()
    reads = []
    for _, event in timed:
        source = Source.PETITIONS if isinstance(event, PetitionCreated) else Source.SIGNATURES
        reads.append(Read(event, Position(source, 0, offsets[source])))
        offsets[source] += 1
    return reads


Counts = dict[uuid.UUID, tuple[int, int, int, int, dict[str, int]]]


def reference_counts(reads: list[Read]) -> Counts:
    """Counts by the plainest possible rule: drop repeated event ids, then tally final states."""
    seen: set[uuid.UUID] = set()
    status: dict[uuid.UUID, str] = {}
    confirmed: set[uuid.UUID] = set()
    excluded: dict[uuid.UUID, str] = {}
    area: dict[uuid.UUID, str] = {}
    owner: dict[uuid.UUID, uuid.UUID] = {}
    for read in reads:
        event = read.event
        if event.event_id in seen:
            continue
        seen.add(event.event_id)
        if isinstance(event, SignatureCreated):
            status[event.signature_id] = event.status
            area[event.signature_id] = event.postcode_area or "unknown"
            owner[event.signature_id] = event.petition_id
        elif isinstance(event, SignatureConfirmed):
            confirmed.add(event.signature_id)
        elif isinstance(event, SignatureWithdrawn):
            excluded.setdefault(event.signature_id, "withdrawn")
        elif isinstance(event, SignatureInvalidated):
            excluded.setdefault(event.signature_id, "invalidated")
    totals: dict[uuid.UUID, list[Any]] = defaultdict(lambda: [0, 0, 0, 0, Counter()])
    for sig, petition in owner.items():
        row = totals[petition]
        if status[sig] == "fraudulent":
            continue
        if sig in excluded:
            row[2 if excluded[sig] == "withdrawn" else 3] += 1
        elif status[sig] == "signed" or sig in confirmed:
            row[0] += 1
            row[4][area[sig]] += 1
        else:
            row[1] += 1
    return {p: (r[0], r[1], r[2], r[3], dict(r[4])) for p, r in totals.items()}


def tallies(table: dict[str, dict[str, Any]]) -> Counts:
    result = {}
    for key, doc in table.items():
        if key.startswith("p:"):
            tally = petition_from_json(doc).tally
            if tally.signatures or tally.pending or tally.withdrawn or tally.invalidated:
                result[uuid.UUID(doc["id"])] = (
                    tally.signatures,
                    tally.pending,
                    tally.withdrawn,
                    tally.invalidated,
                    dict(tally.by_area),
                )
    return result


@pytest.mark.parametrize("seed", range(150))
def test_counts_are_exact_through_duplicates_and_crashes(seed: int) -> None:
    rng = random.Random(seed)
    petitions = [uuid.uuid4() for _ in range(3)]
    reads = generate(rng, petitions)
    clean = SimulatedWorker()
    clean.apply_batch(reads)

    worker = SimulatedWorker()
    committed = 0  # index of the first event not committed
    position = 0
    crashes = 0
    while position < len(reads):
        batch = reads[position : position + rng.randint(1, 12)]
        worker.apply_batch(batch)
        position += len(batch)
        if rng.random() < 0.3:
            worker.commit()  # only between batches: faust acks a batch after it is applied
            committed = position
        if rng.random() < 0.15 and crashes < 6:
            worker.crash(rng)
            position = committed
            crashes += 1

    expected = reference_counts(reads)
    assert tallies(clean.table) == expected
    assert tallies(worker.table) == expected
    # Milestones: each announced at least once (a replay may repeat one, with the same
    # event id), and exactly the ones a clean run announces.
    assert set(worker.announced) == set(clean.announced)
    assert len(clean.announced) == len(set(clean.announced))


@pytest.mark.parametrize(
    ("offset", "timestamp", "highwater", "applied", "lost"),
    [
        (3, 1.0, 10, (5, 2.0), False),  # an ordinary replay
        (5, 2.0, 10, (5, 2.0), False),  # the watermark's own record, read again
        (5, 2.0, None, (5, 2.0), False),  # no high-water mark known yet
        (5, None, 10, (5, 2.0), False),  # no timestamp to compare
        (5, 2.0, 10, (5, None), False),  # a watermark written before timestamps
        (0, 9.0, 2, (5, 2.0), True),  # the log is shorter than what was applied from it
        (5, 9.0, 10, (5, 2.0), True),  # another record at the watermark's offset
    ],
)
def test_a_replay_from_a_lost_log_is_recognised(
    offset: int,
    timestamp: float | None,
    highwater: int | None,
    applied: tuple[int, float | None],
    lost: bool,
) -> None:
    assert from_lost_log(offset, timestamp, highwater, *applied) is lost
