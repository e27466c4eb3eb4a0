"""Records as operators read them (groundswell_ops.records): personal data never in clear."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from uuid import uuid4

from groundswell_contracts.events import SignatureCreated, parse_event
from groundswell_ops.dlq import source_topic
from groundswell_ops.records import masked, scrub, summarize, view


@dataclass
class FakeRecord:
    """Stands in for aiokafka's ConsumerRecord: plain data, no broker behaviour."""

    value: bytes | None
    key: bytes | None = b"k-1"
    topic: str = "signatures"
    partition: int = 2
    offset: int = 41
    timestamp: int = 1_767_225_600_000  # 2026-01-01T00:00:00Z
    headers: list[tuple[str, bytes]] = field(default_factory=list)


def created_v1() -> dict[str, object]:
    """A version-1 SignatureCreated, as records written before contacts were sealed
    still hold it: the address, name and tokens in clear."""
    return {
        "event_id": str(uuid4()),
        "event_type": "SignatureCreated",
        "schema_version": 1,
        "occurred_at": "2026-01-01T00:00:00Z",
        "petition_id": str(uuid4()),
        "signature_id": str(uuid4()),
        "petition_slug": "save-the-library",
        "petition_title": "Save it",
        "status": "pending",
        "email": "grace.hopper@navy.example",
        "name": "Grace Hopper",
        "contact_consent": True,
        "country": "GB",
        "share_code": "abc",
        "confirmation_token": "secret-confirm",
        "withdraw_token": "secret-withdraw",
    }


def test_masking_reaches_every_depth_and_keeps_only_an_email_domain() -> None:
    document = {
        "email": "a.b@example.org",
        "nested": [{"name": "Ada", "referrer_email": "x@y.org", "client_ip": "10.0.0.1"}],
        "confirmation_token": "t",
        "country": "GB",
        "note": "write to ada@example.org",
    }
    assert masked(document) == {
        "email": "***@example.org",
        "nested": [{"name": "***", "referrer_email": "***@y.org", "client_ip": "***"}],
        "confirmation_token": "***",
        "country": "GB",
        "note": "write to ***@example.org",
    }


def test_scrub_masks_addresses_in_free_text() -> None:
    assert scrub("SMTP 550 <grace@navy.example> refused") == "SMTP 550 <***@navy.example> refused"


def test_a_record_line_has_time_type_key_cid_and_a_masked_summary() -> None:
    event = created_v1()
    # Still a valid event today: the upcaster lifts it to the current version.
    assert isinstance(parse_event(json.dumps(event)), SignatureCreated)
    record = FakeRecord(
        json.dumps(event).encode(),
        key=str(event["petition_id"]).encode(),
        headers=[("correlation_id", b"req-1"), ("event_type", b"SignatureCreated")],
    )
    line = view(record).line()
    assert line.startswith("2026-01-01T00:00:00.000Z  signatures[2]@41  SignatureCreated")
    assert f"key={event['petition_id']}" in line and "cid=req-1" in line
    assert "email=***@navy.example" in line and "petition_slug=save-the-library" in line
    for secret in ("grace.hopper", "Grace", "Hopper", "secret-confirm", "secret-withdraw"):
        assert secret not in line
        assert secret not in json.dumps(view(record).to_json())


def test_records_that_are_not_events_are_described_not_printed() -> None:
    shown = view(FakeRecord(b"\x00\x01 grace@navy.example", key=b"\xff\xfe"))
    assert shown.event_type == "(not JSON)"
    assert "grace" not in shown.line()
    assert shown.key == "(2 bytes)"


def test_summary_is_one_short_line() -> None:
    text = summarize({"reason": "x" * 500})
    assert len(text) == 160 and text.endswith("…")


def test_dlq_source_header_names_the_topic_to_redrive_to() -> None:
    assert source_topic(FakeRecord(b"{}", headers=[("dlq_source", b"signatures:3:1207")])) == (
        "signatures"
    )
    assert source_topic(FakeRecord(b"{}", headers=[("dlq_source", b"a:b:c:2:9")])) == "a:b:c"
    assert source_topic(FakeRecord(b"{}", headers=[("dlq_source", b"nonsense")])) is None
    assert source_topic(FakeRecord(b"{}")) is None
