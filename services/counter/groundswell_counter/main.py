"""`groundswell-counter serve` (groundswell_runtime.cli): the faust worker and the counts API.

The counter keeps no database (its tables live in Kafka), so it has no `migrate` or
`retention`; `worker` is the name its command had before every service said `serve`.
"""

from __future__ import annotations

import logging

from groundswell_runtime.cli import Command, ServiceCli

from groundswell_counter.config import CounterSettings


def _serve(settings: CounterSettings) -> None:
    # Imported here: faust is slow to import and only serving needs it.
    from groundswell_counter.entrypoints.worker import run_worker

    if not settings.verbose_framework_logs:
        for noisy in ("faust", "mode", "aiokafka"):
            logging.getLogger(noisy).setLevel(max(logging.WARNING, logging.getLogger().level))
    run_worker(settings)


cli = ServiceCli(
    name="counter",
    description="Counts petition signatures from Kafka and serves the counts "
    "(settings from COUNTER_* and the shared KAFKA_* variables).",
    settings=CounterSettings,
    serve=Command(
        "consume signatures and petitions, publish counts and milestones, serve HTTP", _serve
    ),
    database=None,
    extra={"worker": Command("the same as serve (its earlier name)", _serve)},
)
main = cli.main

if __name__ == "__main__":
    main()
