"""What the monitor flags and shows, from a hand-built snapshot (no broker)."""

from __future__ import annotations

import io

from groundswell_ops.config import OpsConfig
from groundswell_ops.database import OutboxBacklog
from groundswell_ops.dlq import DeadLetterTopic
from groundswell_ops.health import ServiceHealth
from groundswell_ops.lag import GroupLag
from groundswell_ops.render import render
from groundswell_ops.snapshot import PartitionRow, Snapshot, TopicRow
from rich.console import Console


def snapshot() -> Snapshot:
    return Snapshot(
        taken_at="2026-01-01T00:00:00Z",
        bootstrap="kafka:9092",
        topics=[TopicRow("signatures", [PartitionRow(0, 120, 40.0), PartitionRow(1, 80, 10.0)])],
        groups=[
            GroupLag("mailer", {("signatures", 0): 30, ("signatures", 1): 0}, 30, "growing", 5.0),
            GroupLag("sharing", {("signatures", 0): 0, ("signatures", 1): 0}, 0, "steady", 50.0),
        ],
        dead_letters=[DeadLetterTopic("mailer.dlq", 3, 1, 2)],
        outbox=[
            OutboxBacklog("signing", True, 900, 45.0),
            OutboxBacklog("mailer", True, 0, None),
            OutboxBacklog("sharing", False, 0, None),
        ],
        services=[
            ServiceHealth("signing", "http://s:8001", True, True),
            ServiceHealth("mailer", "http://m:8003", True, False, ["consumer"]),
            ServiceHealth("counter", "http://c:8002", False, False, error="ConnectError"),
        ],
    )


def test_findings_name_every_pile_up_and_nothing_else() -> None:
    assert snapshot().findings == [
        "mailer not ready (consumer)",
        "counter not answering at http://c:8002",
        "group mailer: lag growing (30)",
        "mailer.dlq: 2 dead letters waiting",
        "signing outbox: 900 pending, oldest 45s",
    ]


def test_a_quiet_system_has_no_findings() -> None:
    quiet = Snapshot(taken_at="t", bootstrap="b")
    quiet.groups = [
        GroupLag("mailer", {("signatures", 0): 5}, 5, "shrinking", 100.0),
        # A busy group with a few records in flight is not piling up.
        GroupLag("sharing", {("signatures", 0): 3}, 3, "growing", 40.0),
    ]
    assert quiet.findings == []


def test_the_frame_shows_rates_lag_and_backlog() -> None:
    console = Console(file=io.StringIO(), width=160, record=True)
    console.print(render(snapshot()))
    text = console.export_text()
    assert "50/s" in text  # signatures: 40 + 10 records in per second
    assert "▲ growing" in text
    assert "no table" in text  # sharing has not migrated yet
    assert "45.0s" in text
    assert "findings (5)" in text


def test_json_document_carries_partition_lag_and_findings() -> None:
    document = snapshot().to_json()
    assert document["groups"][0]["partitions"] == [
        {"topic": "signatures", "partition": 0, "lag": 30},
        {"topic": "signatures", "partition": 1, "lag": 0},
    ]
    assert document["topics"][0]["end"] == 200
    assert len(document["findings"]) == 5


def test_config_reads_the_services_variables() -> None:
    config = OpsConfig.from_env(
        {
            "SIGNING_URL": "https://sign.example/",
            "MAILER_PORT": "9003",
            "MAILER_CONSUMER_GROUP": "mailer-blue",
            "COUNTER_TOPIC_PREFIX": "t1.",
        }
    )
    assert config.services["signing"] == "https://sign.example"
    assert config.services["mailer"] == "http://127.0.0.1:9003"
    assert config.groups["mailer-blue"] == ("signatures",)
    assert config.groups["counter"] == ("t1.signatures", "t1.petitions")
