"""`groundswell-sharing serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio
import sys

from groundswell_runtime.db import migrate
from groundswell_runtime.logging import configure_logging
from groundswell_runtime.serving import serve

from groundswell_sharing.adapters import repository as repo
from groundswell_sharing.config import SharingSettings
from groundswell_sharing.entrypoints.http import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="groundswell-sharing", description="Groundswell share links and sharing stats."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP app and the event consumer")
    commands.add_parser("migrate", help="apply the database migrations, then exit")
    args = parser.parse_args(argv)

    settings = SharingSettings()
    configure_logging("sharing", settings.log_level)
    if args.command == "migrate":
        asyncio.run(migrate(settings.database_url, repo.SCHEMA, repo.migrations()))
        return
    if settings.admin_token is None or not settings.admin_token.get_secret_value():
        # It guards the organisers' stats and keys the visitor salt (unless
        # SHARING_VISITOR_SALT is set): serving without it would do neither.
        sys.exit("groundswell-sharing: set ADMIN_TOKEN (the same one signing uses).")
    # Header size, count and time limits, idle timeout and a concurrency cap.
    serve(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
