"""A private PostgreSQL cluster from the machine's own binaries (initdb, pg_ctl, postgres)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

from groundswell_stack.processes import ManagedProcess, wait_for_port
from groundswell_stack.state import cluster_root

DATABASE = "groundswell"

# Server settings for the write load of a surge; compose runs PostgreSQL with the same ones
# (deploy/compose/check_compose.py checks it). At 2,000 signatures/s the stack writes about
# 9 KB of WAL a signature, a new 16-MB segment every second (docs/performance.md,
# 2026-12-04/05). PostgreSQL zero-fills a new segment, and syncs it, inside whichever
# commit crosses into it, often signing's batch: 1.6% of the box's CPU in a profile of that
# surge. A cluster that has checkpointed renames old segments instead; a fresh one, or one
# that trimmed its spare segments in a quiet spell, cannot. With these settings the
# accepted requests' p99 at 2,000/s was 40-48 ms against 48-83 without (alternated runs).
SERVER_SETTINGS: dict[str, str] = {
    # A new segment is made by writing its last byte, not 16 MB of zeroes. What that gives up
    # is space reserved ahead: on a full disk the WAL write itself fails.
    "wal_init_zero": "off",
    # Keep 1 GB of spare segments to rename through a quiet spell (about a minute of surge).
    "min_wal_size": "1GB",
    # A checkpoint every 4 GB of WAL, not 1: fewer during a surge, and after each one the
    # first change to every page is logged whole.
    "max_wal_size": "4GB",
}


def postgres_bindir() -> Path:
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        candidate = Path(out.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), reverse=True)
    if versions:
        return versions[0].parent
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    raise RuntimeError(
        "PostgreSQL server binaries not found: install them (apt-get install postgresql) "
        "or set DATABASE_URL to an existing server"
    )


def _as_postgres_user(argv: list[str]) -> list[str]:
    # initdb and postgres refuse to run as root.
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


def _give_to_postgres(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, user="postgres")


class LocalPostgres:
    def __init__(self, root: Path, port: int) -> None:
        self.root = cluster_root(root)
        self.port = port
        self.data = self.root / "data"
        self.bindir = postgres_bindir()
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{DATABASE}"

    @property
    def socket_url(self) -> str:
        """The same database over the cluster's Unix socket (`-k` below), for processes on
        this machine: cheaper than loopback TCP at both ends, no TCP stack, no ACKs. At
        1,000 signatures/s end to end the stack took 2.12-2.14 ms of CPU a signature
        over it against 2.22-2.33 over TCP (docs/performance.md, 2026-12-03 evening)."""
        return f"postgresql://postgres@/{DATABASE}?host={self.root}&port={self.port}"

    def start(self) -> LocalPostgres:
        self.root.mkdir(parents=True, exist_ok=True)
        _give_to_postgres(self.root)
        if not (self.data / "PG_VERSION").exists():
            done = subprocess.run(
                _as_postgres_user(
                    [
                        str(self.bindir / "initdb"),
                        "-D",
                        str(self.data),
                        "-A",
                        "trust",
                        "-U",
                        "postgres",
                        "-E",
                        "UTF8",
                        "--no-sync",
                    ]
                ),
                capture_output=True,
                text=True,
                check=False,
                cwd=self.root,  # the postgres user may not be able to enter ours
            )
            if done.returncode != 0:
                raise RuntimeError(
                    f"initdb failed (the postgres user needs access to {self.root}): "
                    f"{done.stderr.strip()}"
                )
        # Run `postgres` in the foreground as our child so it dies with us.
        self.process = ManagedProcess(
            "postgres",
            _as_postgres_user(
                [
                    str(self.bindir / "postgres"),
                    "-D",
                    str(self.data),
                    "-p",
                    str(self.port),
                    "-k",
                    str(self.root),
                    "-c",
                    "listen_addresses=127.0.0.1",
                    "-c",
                    "max_connections=200",
                    "-c",
                    "fsync=off" if _ephemeral() else "fsync=on",
                    *(
                        arg
                        for name, value in SERVER_SETTINGS.items()
                        for arg in ("-c", f"{name}={value}")
                    ),
                    # Extra server settings, e.g. for diagnosis:
                    # GROUNDSWELL_POSTGRES_OPTIONS="shared_preload_libraries=pg_stat_statements"
                    *(
                        arg
                        for setting in os.environ.get("GROUNDSWELL_POSTGRES_OPTIONS", "").split()
                        for arg in ("-c", setting)
                    ),
                ]
            ),
            log_path=self.root / "postgres.log",
            stop_timeout=15,
            cwd=self.root,
        ).start()
        try:
            wait_for_port(self.port, 30, self.process.proc)
            self._wait_until_accepting(timeout=60)
            self._create_database()
        except BaseException:
            self.stop()  # never leave a half-started server behind
            raise
        return self

    def _wait_until_accepting(self, timeout: float) -> None:
        # The port opens before recovery or start-up finishes ("the database system is
        # starting up"); pg_isready says when connections are accepted.
        deadline = time.monotonic() + timeout
        while True:
            ready = subprocess.run(
                [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-q"],
                check=False,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"PostgreSQL not accepting connections; see {self.root}/postgres.log"
                )
            time.sleep(0.1)

    def _create_database(self) -> None:
        psql = self.bindir / "psql"
        psql_cmd = str(psql) if psql.exists() else "psql"
        exists = subprocess.run(
            [
                psql_cmd,
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                "postgres",
                "-tAc",
                f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE}'",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if exists.stdout.strip() != "1":
            subprocess.run(
                [
                    psql_cmd,
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-c",
                    f"CREATE DATABASE {DATABASE}",
                ],
                check=True,
                capture_output=True,
            )

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def shutdown(self, mode: str = "fast") -> None:
        """Stop the server the way an operator (or a crash, mode "immediate") does, and
        wait until it is gone, so `start` can run it again on the same data."""
        subprocess.run(
            _as_postgres_user(
                [str(self.bindir / "pg_ctl"), "-D", str(self.data), "stop", "-m", mode, "-w"]
            ),
            capture_output=True,
            check=True,
            cwd=self.root,
        )
        self.stop()


def _ephemeral() -> bool:
    # Test clusters are thrown away: durability costs time and buys nothing there.
    return os.environ.get("GROUNDSWELL_EPHEMERAL_DB") == "1"
