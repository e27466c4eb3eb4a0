"""The monitor's data layer on the real broker: exact end offsets and lag (issue 11)."""

from __future__ import annotations

import re
from pathlib import Path

from groundswell_ops.cluster import Cluster
from groundswell_ops.commands import save_svg
from groundswell_ops.config import OpsConfig
from groundswell_ops.snapshot import Monitor, Snapshot
from groundswell_runtime.kafka import make_consumer
from groundswell_stack.infra import Infra

from ...conftest import TEST_PARTITIONS
from .conftest import RunOps, make_topics, produce, signature, unique

N = 137


async def consume_all(infra: Infra, group: str, topic: str, expected: int) -> None:
    """A real group member reads `expected` records and commits, then leaves."""
    consumer = make_consumer(infra.kafka_bootstrap, group, topic)
    await consumer.start()
    try:
        seen = 0
        while seen < expected:
            batches = await consumer.getmany(timeout_ms=1000)
            seen += sum(len(records) for records in batches.values())
            if batches:
                await consumer.commit()
    finally:
        await consumer.stop()


def lag_of(snapshot: Snapshot, group: str) -> int:
    [found] = [g for g in snapshot.groups if g.group == group]
    return found.total


async def test_lag_equals_what_a_stopped_consumer_has_not_read_then_falls_to_zero(
    infra: Infra, tmp_path: Path
) -> None:
    topic, group = unique("lag"), unique("group")
    await make_topics(infra, topic)
    petitions = [signature().petition_id for _ in range(5)]
    # The consumer is up to date on a first load, then stops.
    await produce(infra, topic, [signature(petitions[i % 5]) for i in range(20)])
    await consume_all(infra, group, topic, 20)

    config = OpsConfig(bootstrap=infra.kafka_bootstrap, database_url=infra.database_url)
    async with Cluster(infra.kafka_bootstrap) as cluster:
        monitor = Monitor(config, cluster)
        try:
            before = await monitor.tick()
            assert lag_of(before, group) == 0

            await produce(infra, topic, [signature(petitions[i % 5]) for i in range(N)])
            during = await monitor.tick()
            [row] = [t for t in during.topics if t.topic == topic]
            assert row.end == 20 + N  # exact although the producer batched records
            assert lag_of(during, group) == N
            [lagging] = [g for g in during.groups if g.group == group]
            assert lagging.trend == "growing"
            assert any(group in finding for finding in during.findings)
            save_svg(during, tmp_path / "frame.svg")
            assert group in (tmp_path / "frame.svg").read_text()

            await consume_all(infra, group, topic, N)
            after = await monitor.tick()
            assert lag_of(after, group) == 0
            [caught_up] = [g for g in after.groups if g.group == group]
            assert caught_up.trend != "growing"
            assert not any(group in finding for finding in after.findings)
        finally:
            await monitor.close()


async def test_end_offsets_come_from_fetch_not_the_listed_offset(infra: Infra) -> None:
    topic = unique("ends")
    await make_topics(infra, topic)
    pid = signature().petition_id
    await produce(infra, topic, [signature(pid) for _ in range(50)], linger_ms=200)
    async with Cluster(infra.kafka_bootstrap) as cluster:
        layout = (await cluster.layout([topic]))[topic]
        ends = await cluster.end_offsets(layout.partitions)
    # All 50 share a key, so one partition holds them all.
    assert sorted(ends.values()) == [0, 0, 0, 50]


async def test_monitor_command_json_and_exit_codes(infra: Infra, run_ops: RunOps) -> None:
    topic, group = unique("cmd"), unique("cmdgroup")
    await make_topics(infra, topic)
    await produce(infra, topic, [signature() for _ in range(3)])
    await consume_all(infra, group, topic, 3)
    run = await run_ops("monitor", "--once", "--json", "--interval", "0.2")
    # No services run in the integration session: a finding, not a failure to connect.
    assert run.code == 1, run.stderr
    document = run.json()
    [row] = [g for g in document["groups"] if g["group"] == group]
    assert row["total"] == 0
    assert any("not answering" in f for f in document["findings"])
    assert [o["schema"] for o in document["outbox"]] == ["signing", "mailer", "sharing"]

    text = await run_ops("monitor", "--once", "--interval", "0.2", env={"COLUMNS": "200"})
    assert text.code == 1
    assert "Consumer groups" in text.stdout and group in text.stdout

    gone = await run_ops("monitor", "--once", env={"KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:1"})
    assert gone.code == 3
    assert re.fullmatch(r"groundswell-ops: cannot reach Kafka at 127\.0\.0\.1:1: .*\n", gone.stderr)

    no_db = await run_ops(
        "monitor",
        "--once",
        "--interval",
        "0.2",
        env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/nothing"},
    )
    assert no_db.code == 3
    assert "cannot reach PostgreSQL at 127.0.0.1:1/nothing" in no_db.stdout


async def test_bad_usage_exits_2(run_ops: RunOps) -> None:
    run = await run_ops("monitor", "--interval", "-1")
    assert run.code == 2
    assert "must be more than 0" in run.stderr
    assert (await run_ops("dlq", "show", "signatures")).code == 2


async def test_topics_lists_layout_and_create_is_idempotent(infra: Infra, run_ops: RunOps) -> None:
    env = {"KAFKA_TOPIC_PARTITIONS": str(TEST_PARTITIONS)}
    first = await run_ops("topics", "--create", "--json", env=env)
    second = await run_ops("topics", "--create", "--json", env=env)
    assert first.code == second.code == 0, first.stderr
    document = second.json()
    assert document["missing"] == [] and document["wrong_partitions"] == []
    by_name = {t["topic"]: t for t in document["topics"]}
    assert by_name["signatures"]["partitions"] == TEST_PARTITIONS
    assert by_name["mailer.dlq"]["partitions"] == TEST_PARTITIONS
    wrong = await run_ops(
        "topics", "--json", env={"KAFKA_TOPIC_PARTITIONS": str(TEST_PARTITIONS + 2)}
    )
    assert wrong.code == 1
    assert "signatures" in wrong.json()["wrong_partitions"]
