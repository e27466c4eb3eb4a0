"""Infrastructure for a run: PostgreSQL, a Kafka broker and an SMTP sink.

Each part is either started here (local processes, or testcontainers when a Docker
engine answers) or taken from the environment (`DATABASE_URL`,
`KAFKA_BOOTSTRAP_SERVERS`, `SMTP_HOST`/`SMTP_PORT`).
"""

from __future__ import annotations

import os
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from groundswell_stack.broker import LocalBroker
from groundswell_stack.postgres import LocalPostgres
from groundswell_stack.processes import ManagedProcess, free_port, wait_for_port


@dataclass
class Infra:
    database_url: str
    kafka_bootstrap: str
    smtp_host: str
    smtp_port: int
    mail_dir: Path | None
    run_dir: Path
    broker: LocalBroker | None = None
    postgres: LocalPostgres | None = None
    smtp: ManagedProcess | None = None
    _stack: ExitStack = field(default_factory=ExitStack)

    def env(self) -> dict[str, str]:
        """The services' view of the parts. A cluster of our own is reached over its Unix
        socket; `database_url` (loopback TCP) stays what people and tools are shown."""
        return {
            "DATABASE_URL": self.postgres.socket_url if self.postgres else self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "SMTP_HOST": self.smtp_host,
            "SMTP_PORT": str(self.smtp_port),
        }

    def close(self) -> None:
        self._stack.close()


def docker_available() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
        return True
    except Exception:
        return False


def start_infra(
    run_dir: Path,
    *,
    kafka_port: int | None = None,
    smtp_port: int | None = None,
    postgres_port: int | None = None,
    use_environment: bool = True,
    prefer_containers: bool = False,
) -> Infra:
    """Start what is not given by the environment. Ports default to free ones."""
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = ExitStack()
    env: dict[str, str] = dict(os.environ) if use_environment else {}
    containers = prefer_containers and docker_available()
    try:
        postgres = None
        if env.get("DATABASE_URL"):
            database_url = env["DATABASE_URL"]
        elif containers:
            database_url = _postgres_container(stack)
        else:
            postgres = LocalPostgres(run_dir / "postgres", postgres_port or free_port()).start()
            stack.callback(postgres.stop)
            database_url = postgres.url

        broker = None
        if env.get("KAFKA_BOOTSTRAP_SERVERS"):
            bootstrap = env["KAFKA_BOOTSTRAP_SERVERS"]
        elif containers:
            bootstrap = _kafka_container(stack)
        else:
            broker = LocalBroker(kafka_port or free_port(), run_dir / "tansu.log").start()
            stack.callback(broker.stop)
            bootstrap = broker.bootstrap

        smtp = None
        mail_dir: Path | None = None
        if env.get("SMTP_HOST"):
            smtp_host, port = env["SMTP_HOST"], int(env.get("SMTP_PORT", "25"))
        else:
            smtp_host, port = "127.0.0.1", smtp_port or free_port()
            mail_dir = run_dir / "mail"
            smtp = ManagedProcess(
                "smtp-sink",
                [
                    sys.executable,
                    "-m",
                    "groundswell_stack.smtp_sink",
                    "--port",
                    str(port),
                    "--dir",
                    str(mail_dir),
                ],
                log_path=run_dir / "smtp-sink.log",
                stop_timeout=5,
            ).start()
            stack.callback(smtp.stop)
            wait_for_port(port, 20, smtp.proc)
    except BaseException:
        stack.close()
        raise
    return Infra(
        database_url, bootstrap, smtp_host, port, mail_dir, run_dir, broker, postgres, smtp, stack
    )


def _postgres_container(stack: ExitStack) -> str:
    from testcontainers.postgres import PostgresContainer

    container: Any = PostgresContainer("postgres:15-alpine", dbname="groundswell")
    container.start()
    stack.callback(container.stop)
    return str(container.get_connection_url(driver=None))


def _kafka_container(stack: ExitStack) -> str:
    from testcontainers.kafka import KafkaContainer

    container: Any = KafkaContainer().with_kraft()
    container.start()
    stack.callback(container.stop)
    return str(container.get_bootstrap_server())
