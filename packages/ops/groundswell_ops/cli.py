"""groundswell-ops: see whether events flow and where they pile up; act on what failed.

Servers come from KAFKA_BOOTSTRAP_SERVERS, DATABASE_URL and the services' <NAME>_URL or
<NAME>_PORT (defaults: what `make up` starts). Exit codes: 0 ok, 1 something needs a
look (lag growing, dead letters waiting, a service not ready, nothing found),
2 bad usage, 3 cannot connect.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import structlog
from aiokafka.errors import (
    KafkaConnectionError,
    KafkaError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)
from rich.console import Console

from groundswell_ops import commands
from groundswell_ops.config import OpsConfig
from groundswell_ops.errors import Exit, OpsError

# Errors that mean the broker went away or never answered.
CONNECTION_ERRORS = (
    KafkaConnectionError,
    KafkaTimeoutError,
    NodeNotReadyError,
    RequestTimedOutError,
)


def positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", action="store_true", help="machine-readable output")
    main = argparse.ArgumentParser(
        prog="groundswell-ops",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = main.add_subparsers(dest="command", required=True)

    mon = sub.add_parser("monitor", parents=[common], help="live view of flow, lag and health")
    mon.add_argument("--once", action="store_true", help="one reading (two, a second apart)")
    mon.add_argument("--interval", type=positive, default=1.0, help="seconds between readings")
    mon.add_argument("--svg", type=Path, help="also save the frame as SVG (implies --once)")

    tail = sub.add_parser("tail", parents=[common], help="readable records of one topic")
    tail.add_argument("topic")
    tail.add_argument("--from-beginning", action="store_true")
    tail.add_argument("--petition", metavar="SLUG", help="only this petition (slug or id)")
    tail.add_argument(
        "--no-follow", action="store_true", help="stop at the end instead of waiting for more"
    )

    dead = sub.add_parser("dlq", parents=[common], help="dead letters: list, show, redrive")
    actions = dead.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", parents=[common], help="every <consumer>.dlq")
    listing.add_argument("topics", nargs="*")
    show = actions.add_parser("show", parents=[common], help="records waiting in a DLQ")
    show.add_argument("topics", nargs="+")
    show.add_argument("--limit", type=int, help="at most this many per topic")
    again = actions.add_parser("redrive", parents=[common], help="send them back to their source")
    again.add_argument("topics", nargs="*", help="default: every DLQ with records waiting")
    again.add_argument("--dry-run", action="store_true", help="show what would be sent")

    top = sub.add_parser("topics", parents=[common], help="topics, partitions, configuration")
    top.add_argument(
        "--create", action="store_true", help="create missing topics with the configured layout"
    )

    tr = sub.add_parser("trace", parents=[common], help="one request's path through topics/logs")
    tr.add_argument("correlation_id")
    tr.add_argument("--logs", type=Path, help="directory of service logs (make up: .run/logs)")
    tr.add_argument(
        "--topic", action="append", dest="topic_names", help="only these topics (repeatable)"
    )
    return main


def dispatch(args: argparse.Namespace, config: OpsConfig) -> Coroutine[Any, Any, int]:
    console = Console()
    as_json = bool(args.json)
    if args.command == "monitor":
        return commands.monitor(
            config,
            once=args.once,
            interval=args.interval,
            as_json=as_json,
            svg=args.svg,
            console=console,
        )
    if args.command == "tail":
        return commands.tail_topic(
            config,
            args.topic,
            from_beginning=args.from_beginning,
            petition=args.petition,
            follow=not args.no_follow,
            as_json=as_json,
        )
    if args.command == "dlq":
        return commands.dead_letters(
            config,
            args.action,
            list(args.topics),
            limit=getattr(args, "limit", None),
            dry_run=getattr(args, "dry_run", False),
            as_json=as_json,
        )
    if args.command == "topics":
        return commands.topics(config, create=args.create, as_json=as_json)
    return commands.trace(
        config,
        args.correlation_id,
        logs=args.logs,
        topic_names=args.topic_names,
        as_json=as_json,
    )


def run(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # aiokafka logs every refused connection with a traceback; the one line below says it.
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)
    # The runtime's own log lines (e.g. `topics_ready`) go to stderr: stdout is the output.
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
    try:
        config = OpsConfig.from_env(os.environ)
    except ValueError as exc:
        return fail(f"bad environment: {exc}", Exit.USAGE)
    try:
        return asyncio.run(dispatch(args, config))
    except KeyboardInterrupt:
        return Exit.OK
    except OpsError as exc:
        return fail(str(exc), exc.code)
    except CONNECTION_ERRORS as exc:
        return fail(f"lost Kafka at {config.bootstrap}: {exc or type(exc).__name__}", 3)
    except KafkaError as exc:
        return fail(f"Kafka error: {exc or type(exc).__name__}", Exit.FINDING)
    except BrokenPipeError:
        return Exit.OK  # `| head` closed the pipe


def fail(message: str, code: int) -> int:
    print(f"groundswell-ops: {message}", file=sys.stderr)
    return code


def main() -> None:
    sys.exit(run())


if __name__ == "__main__":
    main()
