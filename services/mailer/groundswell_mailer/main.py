"""`groundswell-mailer serve | migrate`."""

from __future__ import annotations

import argparse
import asyncio

from groundswell_runtime.db import migrate
from groundswell_runtime.logging import configure_logging
from groundswell_runtime.serving import serve

from groundswell_mailer.adapters import repository as repo
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.entrypoints.http import create_app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="groundswell-mailer", description="Groundswell's email service."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("serve", help="run the HTTP app, the consumer and the sender")
    commands.add_parser("migrate", help="apply the database migrations, then exit")
    args = parser.parse_args(argv)

    settings = MailerSettings()
    configure_logging("mailer", settings.log_level)
    if args.command == "migrate":
        asyncio.run(migrate(settings.database_url, repo.SCHEMA, repo.migrations()))
        return
    serve(create_app(settings), host=settings.host, port=settings.port)


if __name__ == "__main__":
    main()
