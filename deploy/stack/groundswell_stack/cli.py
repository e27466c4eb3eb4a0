"""`groundswell-stack up` runs Groundswell locally; `groundswell-stack reconcile` checks counts;
`groundswell-stack chaos` runs it under load while faults hit it (`make chaos`);
`groundswell-stack seed` creates the demo petition (compose's one-shot `seed` service)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import httpx

from groundswell_stack.demo import DEMO_SLUG, seed_demo
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
    seed = commands.add_parser(
        "seed", help="create the demo petition through signing's admin API (ADMIN_TOKEN)"
    )
    seed.add_argument("--signing-url", default="http://127.0.0.1:8001")
    chaos = commands.add_parser(
        "chaos", help="run the stack under load while faults hit it; check every invariant"
    )
    chaos.add_argument("--short", action="store_true", help="three faults, low rate (tests)")
    chaos.add_argument("--rate", type=float, help="requests per second (default 50; short 10)")
    chaos.add_argument("--seed", type=int, help="for the random moments and the load's mix")
    chaos.add_argument(
        "--doc",
        type=Path,
        help="rewrite this file's chaos section (default: docs/reliability.md, full runs)",
    )
    chaos.add_argument("--no-doc", action="store_true", help="write no report section")
    chaos.add_argument("--json", type=Path, help="also write the results as JSON here")
    chaos.add_argument("--run-dir", type=Path, help="state and logs (default: a new temp dir)")
    args = parser.parse_args(argv)
    if args.command == "chaos":
        from groundswell_stack.chaos.main import chaos as run_chaos
        from groundswell_stack.chaos.main import cli_command

        doc = args.doc or (None if args.short else Path("docs/reliability.md"))
        sys.exit(
            run_chaos(
                short=args.short,
                rate=args.rate,
                seed=args.seed,
                doc=None if args.no_doc else doc,
                json_path=args.json,
                run_dir=args.run_dir.resolve() if args.run_dir else None,
                command=cli_command(),
            )
        )
    if args.command == "up":
        up(args.run_dir.resolve())
    elif args.command == "seed":
        token = os.environ.get("ADMIN_TOKEN")
        if not token:
            sys.exit("groundswell-stack seed: set ADMIN_TOKEN (the one signing uses).")
        try:
            seed_demo(args.signing_url.rstrip("/"), token)
        except (RuntimeError, httpx.TransportError) as exc:
            sys.exit(f"groundswell-stack seed: {exc}")
        public = os.environ.get("PUBLIC_BASE_URL", args.signing_url).rstrip("/")
        print(f"Demo petition ready: {public}/p/{DEMO_SLUG}")
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
