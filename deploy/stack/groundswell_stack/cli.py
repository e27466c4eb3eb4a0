"""`groundswell-stack up` runs Groundswell locally; `groundswell-stack reconcile` checks counts."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx

from groundswell_stack.reconcile import prometheus_text, reconcile
from groundswell_stack.up import up


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="groundswell-stack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the whole stack in the foreground")
    start.add_argument(
        "--run-dir", type=Path, default=Path(".run"), help="state and logs (git-ignored)"
    )
    check = commands.add_parser(
        "reconcile", help="compare the counter's figures with PostgreSQL; exit 1 on any drift"
    )
    check.add_argument(
        "--signing-url", default=os.environ.get("PUBLIC_BASE_URL", "http://127.0.0.1:8001")
    )
    check.add_argument(
        "--counter-url", default=os.environ.get("COUNTER_PUBLIC_URL", "http://127.0.0.1:8002")
    )
    check.add_argument(
        "--metrics-file",
        type=Path,
        help="also write the result as Prometheus text (node_exporter textfile collector)",
    )
    args = parser.parse_args(argv)
    if args.command == "up":
        up(args.run_dir.resolve())
    elif args.command == "reconcile":
        token = os.environ.get("ADMIN_TOKEN")
        if not token:
            sys.exit("Set ADMIN_TOKEN (printed by `make up`).")
        try:
            checked, drifts = reconcile(args.signing_url, args.counter_url, token)
        except httpx.TransportError as exc:
            # Exit 3 = cannot connect, as groundswell-ops: cron and scripts tell it from drift.
            print(
                f"groundswell-stack reconcile: cannot reach the services "
                f"({args.signing_url}, {args.counter_url}): {type(exc).__name__}",
                file=sys.stderr,
            )
            sys.exit(3)
        for drift in drifts:
            print(
                f"DRIFT {drift.slug} {drift.figure}: "
                f"PostgreSQL {drift.expected}, counter {drift.actual}"
            )
        print(f"{checked} petitions checked, {len(drifts)} drifts")
        if args.metrics_file:
            partial = args.metrics_file.with_suffix(".tmp")
            partial.write_text(prometheus_text(checked, drifts))
            partial.rename(args.metrics_file)  # the collector never reads half a file
        sys.exit(1 if drifts else 0)


if __name__ == "__main__":
    main()
