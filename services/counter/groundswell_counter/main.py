"""`groundswell-counter worker`: run the counter (faust worker + counts API)."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from groundswell_runtime.logging import configure_logging

from groundswell_counter.config import CounterSettings


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="groundswell-counter",
        description="Counts petition signatures from Kafka and serves the counts.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser(
        "worker",
        help="consume signatures/petitions, publish counts and milestones, serve HTTP "
        "(settings from COUNTER_* and the shared KAFKA_* variables)",
    )
    args = parser.parse_args(argv)
    settings = CounterSettings()
    configure_logging("counter", settings.log_level)
    if args.command == "worker":
        # Imported here: faust is slow to import and only the worker needs it.
        from groundswell_counter.entrypoints.worker import run_worker

        run_worker(settings)


if __name__ == "__main__":
    main()
