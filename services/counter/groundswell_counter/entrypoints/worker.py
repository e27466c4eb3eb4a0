"""Start-up of the counter: topics, then the faust worker (`entrypoints.faust_app`) with
the HTTP API serving the `counts` topic (`adapters.counts_view`) in the same loop."""

from __future__ import annotations

import asyncio
import time

import faust
import mode
import structlog
from aiokafka.errors import KafkaError
from groundswell_runtime.accepting import AcceptingLoop
from groundswell_runtime.heap import settle_heap
from groundswell_runtime.kafka import broker_reachable, ensure_topics
from groundswell_runtime.lag import faust_lag, register_lag_source

from groundswell_counter.adapters.counts_view import CountsView
from groundswell_counter.adapters.embedded_http import CountsViewService, HttpService
from groundswell_counter.config import CounterSettings
from groundswell_counter.entrypoints.faust_app import CounterWorker
from groundswell_counter.entrypoints.http import create_http_app

log = structlog.get_logger()


async def _ensure_topics(settings: CounterSettings) -> None:
    # At start-up the broker may still be coming up.
    deadline = time.monotonic() + 60
    while True:
        try:
            await ensure_topics(
                settings.kafka_bootstrap_servers,
                settings.kafka_topic_partitions,
                settings.kafka_replication_factor,
                settings.topics.all(),
            )
            return
        except (KafkaError, OSError) as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("broker_not_ready", error=type(exc).__name__)
            await asyncio.sleep(1)


def run_worker(settings: CounterSettings) -> None:
    """Run until SIGTERM/SIGINT: the faust worker, and the HTTP API unless disabled."""
    # uvloop, as every other service runs on (with the listener that takes a surge's
    # connections at once, for the HTTP API below): on asyncio's selector loop, socket
    # writes were 12% and the selector 11% of py-spy's samples of the worker at 800/s;
    # on uvloop the worker took 3-7% less CPU a signature (docs/performance.md).
    loop = AcceptingLoop()
    asyncio.set_event_loop(loop)
    loop.run_until_complete(_ensure_topics(settings))
    counter = CounterWorker(settings)
    register_lag_source("counter", faust_lag(counter.app))  # groundswell_consumer_lag_messages
    services: list[mode.ServiceT] = []
    if settings.serves_http:
        view = CountsView(
            settings.kafka_bootstrap_servers,
            settings.topics.counts,
            source_limit=settings.public_source_limit,
        )

        async def broker_ok() -> bool:
            return await broker_reachable(settings.kafka_bootstrap_servers)

        async def recovery_done() -> bool:
            return counter.recovered

        async def view_caught_up() -> bool:
            return view.caught_up

        http_app = create_http_app(
            settings,
            view,
            {"broker": broker_ok, "recovery": recovery_done, "counts_view": view_caught_up},
        )
        services += [CountsViewService(view), HttpService(http_app, settings.host, settings.port)]
    log.info(
        "counter_starting",
        worker=settings.worker_name,
        app_id=settings.app_id,
        http_port=settings.port if settings.serves_http else None,
    )
    worker = faust.Worker(
        counter.app,
        *services,
        loop=loop,
        quiet=True,
        override_logging=False,
        redirect_stdouts=False,
    )
    worker.spinner = None  # no terminal progress spinner in logs
    settle_heap()
    worker.execute_from_commandline()
