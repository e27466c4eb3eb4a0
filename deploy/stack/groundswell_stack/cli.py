"""`groundswell-stack up`: run Groundswell locally."""

from __future__ import annotations

import argparse
from pathlib import Path

from groundswell_stack.up import up


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="groundswell-stack", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the whole stack in the foreground")
    start.add_argument(
        "--run-dir", type=Path, default=Path(".run"), help="state and logs (git-ignored)"
    )
    args = parser.parse_args(argv)
    if args.command == "up":
        up(args.run_dir.resolve())


if __name__ == "__main__":
    main()
