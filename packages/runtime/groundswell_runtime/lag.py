"""`groundswell_consumer_lag_messages`: how far behind each consumer is, as it sees itself.

One gauge for every kind of consumer in the platform, filled at scrape time from the
sources registered here: the aiokafka `EventConsumer` (mailer, sharing) registers the
figures it measures after each poll; the counter's faust app registers `faust_lag`, which
reads faust's own monitor. Reading at scrape time costs nothing per message and leaves no
stale series behind: a consumer that stops unregisters, and its partitions disappear.

Why not a plain `Gauge` set by each consumer: two kinds of consumer would each need to
clear series of partitions they lost in a rebalance, and a crashed loop would leave its
last figures standing as if they were current.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import structlog
from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = structlog.get_logger()

LAG_METRIC = "groundswell_consumer_lag_messages"

# (topic, partition, messages written but not yet handled)
LagRows = Iterable[tuple[str, int, int]]
LagSource = Callable[[], LagRows]

_sources: dict[str, LagSource] = {}


def register_lag_source(consumer: str, source: LagSource) -> None:
    """Report `source`'s figures under `consumer`; a newer source replaces an older one."""
    _sources[consumer] = source


def unregister_lag_source(consumer: str, source: LagSource) -> None:
    """Stop reporting `consumer`, unless a newer run already replaced this source."""
    if _sources.get(consumer) == source:
        del _sources[consumer]


def faust_lag(app: Any) -> LagSource:
    """A faust app's lag, from the monitor faust keeps for every app (no broker round trip).

    Per partition: the high-water mark faust saw with its last fetched record minus the
    offset it last committed (the next one to process: faust commits "acked + 1"). Until
    the first commit of a partition, the last offset read stands in for it. Both maps are
    cleared by faust on a rebalance, so revoked partitions drop out by themselves.
    """

    def rows() -> LagRows:
        monitor = app.monitor
        committed = dict(monitor.tp_committed_offsets or {})
        read = dict(monitor.tp_read_offsets or {})
        found = []
        for tp, end in dict(monitor.tp_end_offsets or {}).items():
            done = committed.get(tp)
            if done is None and read.get(tp) is not None:
                done = read[tp] + 1
            if end is None or done is None:
                continue
            found.append((str(tp.topic), int(tp.partition), max(int(end) - int(done), 0)))
        return found

    return rows


class _LagCollector(Collector):
    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily(
            LAG_METRIC,
            "Messages written to a partition and not yet handled, as the consumer sees it",
            labels=["consumer", "topic", "partition"],
        )
        for consumer, source in list(_sources.items()):
            try:
                rows = list(source())
            except Exception as exc:  # a scrape must never fail because one source did
                log.warning("lag_source_failed", consumer=consumer, error=type(exc).__name__)
                continue
            for topic, partition, lag in rows:
                family.add_metric([consumer, topic, str(partition)], lag)
        yield family

    def describe(self) -> Iterator[Metric]:
        # Names only, so registering does not call the sources.
        yield GaugeMetricFamily(LAG_METRIC, "", labels=["consumer", "topic", "partition"])


REGISTRY.register(_LagCollector())


def total_lag() -> int:
    """Every registered consumer's lag, summed: this process's backlog of events."""
    total = 0
    for source in list(_sources.values()):
        with contextlib.suppress(Exception):  # a source mid-rebalance: counted next time
            total += sum(value for _, _, value in source())
    return total
