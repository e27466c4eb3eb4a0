"""`tail` and `trace` on produced events: readable, complete, and never personal data."""

from __future__ import annotations

import json
from pathlib import Path
from uuid import uuid4

import pytest
from groundswell_contracts.events import PetitionCreated, SignatureConfirmed
from groundswell_ops.cluster import Cluster
from groundswell_ops.errors import UsageError
from groundswell_ops.streams import petition_key
from groundswell_stack.infra import Infra

from .conftest import (
    SECRET_EMAIL,
    RunOps,
    assert_no_personal_data,
    make_topics,
    produce,
    signature,
    unique,
)


async def test_tail_prints_every_record_masked_and_filters_by_petition(
    infra: Infra, run_ops: RunOps
) -> None:
    topic = unique("tail")
    await make_topics(infra, topic)
    ours, other = uuid4(), uuid4()
    events = [signature(ours), signature(other), signature(ours)]
    confirmed = SignatureConfirmed(petition_id=ours, signature_id=events[0].signature_id)
    await produce(infra, topic, [*events, confirmed], correlation_id="cid-tail-1")

    run = await run_ops("tail", topic, "--from-beginning", "--no-follow")
    assert run.code == 0, run.stderr
    lines = run.stdout.splitlines()
    assert len(lines) == 4
    assert sum("SignatureCreated" in line for line in lines) == 3
    assert sum("SignatureConfirmed" in line for line in lines) == 1
    assert all("cid=cid-tail-1" in line for line in lines)
    assert all(f"{topic}[" in line for line in lines)
    assert "contact=(sealed)" in run.stdout
    assert "petition_slug=ops-test" in run.stdout and "country=GB" in run.stdout
    assert_no_personal_data(run.stdout)

    as_json = await run_ops("tail", topic, "--from-beginning", "--no-follow", "--json")
    records = [json.loads(line) for line in as_json.stdout.splitlines()]
    assert {r["event_id"] for r in records} == {str(e.event_id) for e in [*events, confirmed]}
    assert_no_personal_data(as_json.stdout)

    only = await run_ops(
        "tail", topic, "--from-beginning", "--no-follow", "--json", "--petition", str(ours)
    )
    keys = {json.loads(line)["key"] for line in only.stdout.splitlines()}
    assert keys == {str(ours)}
    assert len(only.stdout.splitlines()) == 3

    # Without --from-beginning, only what arrives after the start: nothing here.
    new_only = await run_ops("tail", topic, "--no-follow")
    assert new_only.code == 0 and new_only.stdout == ""


async def test_a_slug_is_resolved_through_the_petitions_topic(infra: Infra) -> None:
    topic = unique("petitions")
    await make_topics(infra, topic)
    petition = PetitionCreated(petition_id=uuid4(), slug="save-the-library", title="t", target="x")
    await produce(infra, topic, [petition])
    async with Cluster(infra.kafka_bootstrap) as cluster:
        assert await petition_key(cluster, "save-the-library", topic) == str(petition.petition_id)
        with pytest.raises(UsageError, match="no petition with slug 'nope'"):
            await petition_key(cluster, "nope", topic)


async def test_trace_follows_one_correlation_id_through_topics_and_logs(
    infra: Infra, run_ops: RunOps, tmp_path: Path
) -> None:
    prefix = unique("trace") + "-"
    signatures, dead = prefix + "signatures", prefix + "mailer.dlq"
    await make_topics(infra, signatures, dead)
    wanted = f"req-{uuid4().hex[:12]}"
    created = signature()
    await produce(infra, signatures, [created], correlation_id=wanted)
    await produce(infra, signatures, [signature(), signature()], correlation_id="someone-else")
    confirmed = SignatureConfirmed(
        petition_id=created.petition_id, signature_id=created.signature_id
    )
    await produce(infra, dead, [confirmed], correlation_id=wanted)

    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "signing.log").write_text(
        json.dumps(
            {
                "event": "signature_accepted",
                "service": "signing",
                "level": "info",
                "timestamp": "2026-01-01T00:00:00.000001Z",
                "correlation_id": wanted,
                "email": SECRET_EMAIL,
            }
        )
        + "\nnot json at all "
        + wanted
        + "\n"
        + json.dumps({"event": "other", "service": "signing", "correlation_id": "someone-else"})
        + "\n"
    )
    (logs / "mailer.log").write_text(
        json.dumps(
            {
                "event": "email_sent",
                "service": "mailer",
                "level": "info",
                "timestamp": "2026-01-01T00:00:01Z",
                "correlation_id": wanted,
                "event_id": str(created.event_id),
            }
        )
        + "\n"
    )

    run = await run_ops(
        "trace", wanted, "--topic", signatures, "--topic", dead, "--logs", str(logs), "--json"
    )
    assert run.code == 0, run.stderr
    document = run.json()
    assert [(r["topic"], r["event_type"]) for r in document["records"]] == [
        (signatures, "SignatureCreated"),
        (dead, "SignatureConfirmed"),
    ]
    assert [(g["service"], g["event"]) for g in document["logs"]] == [
        ("signing", "signature_accepted"),
        ("mailer", "email_sent"),
    ]
    assert_no_personal_data(run.stdout)

    # By default every Groundswell topic (prefixed ones too) is searched.
    text = await run_ops("trace", wanted, "--logs", str(logs))
    assert text.code == 0
    lines = text.stdout.splitlines()
    assert len(lines) == 4
    assert lines[0].startswith("2026-01-01T00:00:00.000001Z  log:signing")
    assert any(f"{signatures}[" in line for line in lines)
    assert_no_personal_data(text.stdout)

    missing = await run_ops("trace", "no-such-request", "--topic", signatures)
    assert missing.code == 1
