"""The stack under chaos: `groundswell-stack up` itself, as `make up` runs it, on free ports.

The chaos run starts `up` as a child process (its supervisor is what heals the stack, so
it is what is tested) and points it at a sink of its own (`SMTP_HOST`/`SMTP_PORT`), which
`up` then uses instead of starting one. Processes to hurt are found among `up`'s children:
each service, the broker and PostgreSQL are group leaders started by it.
"""

from __future__ import annotations

import contextlib
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from groundswell_stack.postgres import LocalPostgres
from groundswell_stack.processes import ManagedProcess, free_port, wait_for_port
from groundswell_stack.services import clean_env, executable

SERVICES = ("signing", "counter", "mailer", "sharing")
# Settings the chaos run gives the stack, and why.
CHAOS_SETTINGS = {
    # The load names each request's client address, so per-network limits apply as for
    # real visitors instead of all requests counting against 127.0.0.1.
    "TRUSTED_PROXIES": "127.0.0.1",
    # A 451 is retried after seconds, not the default 30 s, so 451-then-550 fits a cycle.
    "MAILER_RETRY_BASE_SECONDS": "2",
}


@dataclass
class Sink:
    port: int
    log: Path
    control: Path
    process: ManagedProcess | None = None

    def start(self) -> None:
        self.process = ManagedProcess(
            "chaos-sink",
            [
                sys.executable,
                "-m",
                "groundswell_stack.chaos.sink",
                "--port",
                str(self.port),
                "--log",
                str(self.log),
                "--control",
                str(self.control),
            ],
            log_path=self.log.with_suffix(".out"),
            stop_timeout=5,
        ).start()
        wait_for_port(self.port, 20, self.process.proc)

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.stop()

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@dataclass
class ChaosStack:
    run_dir: Path
    ports: dict[str, int]
    admin_token: str
    sink: Sink
    env: dict[str, str]
    up: subprocess.Popen[bytes] | None = None
    up_log: Path = field(init=False)

    def __post_init__(self) -> None:
        self.up_log = self.run_dir / "up.out"

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{self.ports[service.upper() + '_PORT']}"

    @property
    def database_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.ports['POSTGRES_PORT']}/groundswell"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['LOCAL_KAFKA_PORT']}"

    def service_env(self) -> dict[str, str]:
        """What a service (or `groundswell-signing replay`) started by `up` sees."""
        return self.env | {
            "DATABASE_URL": self.database_url,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
        }

    def postgres(self) -> LocalPostgres:
        """A handle on `up`'s cluster (same folder, same port) to shut it down with."""
        return LocalPostgres(self.run_dir / "postgres", self.ports["POSTGRES_PORT"])

    def up_exited(self) -> str | None:
        """Why the stack is gone, if `groundswell-stack up` itself exited."""
        if self.up is None or self.up.poll() is None:
            return None
        return f"groundswell-stack up exited ({self.up.returncode}); see {self.up_log}"

    def output(self) -> str:
        return self.up_log.read_text(errors="replace") if self.up_log.exists() else ""

    def pid_of(self, part: str) -> int:
        """The group leader `up` started for a service, "broker" or "postgres"."""
        assert self.up is not None
        marks = {
            "broker": "tansu",
            "postgres": "postgres",
            **{s: f"groundswell-{s}" for s in SERVICES},
        }
        for pid, argv in children(self.up.pid):
            if part == "signing" and "relay" in argv[:4]:
                continue  # `groundswell-signing relay`, the outbox relay's own process
            if any(marks[part] in Path(arg).name for arg in argv[:4]):
                return pid
        raise LookupError(f"no {part} process under groundswell-stack up ({self.up.pid})")

    def start(self, timeout: float = 300) -> None:
        self.sink.start()
        log = self.up_log.open("ab")
        self.up = subprocess.Popen(
            [executable("groundswell-stack"), "up", "--run-dir", str(self.run_dir)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while "Groundswell is running" not in self.output():
            if self.up.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("groundswell-stack up did not start:\n" + self.output()[-3000:])
            time.sleep(0.5)

    def close(self) -> None:
        if self.up is not None and self.up.poll() is None:
            # Ctrl-C, as a person stops `make up`; it stops everything it started.
            self.up.send_signal(2)
            try:
                self.up.wait(timeout=120)
            except subprocess.TimeoutExpired:
                self.up.kill()
                self.up.wait()
        self.sink.stop()


def children(pid: int) -> list[tuple[int, list[str]]]:
    """(pid, argv) of each direct child of `pid`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
            if ppid == pid:
                argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
                found.append((int(entry.name), [a for a in argv if a]))
    return found


def new_stack(run_dir: Path | None = None) -> ChaosStack:
    if run_dir is None:
        # Not under /root: PostgreSQL runs as the postgres user and must reach its folder.
        run_dir = Path(tempfile.mkdtemp(prefix="groundswell-chaos-"))
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)
    names = ("SIGNING", "COUNTER", "MAILER", "SHARING", "LOCAL_KAFKA", "POSTGRES", "SMTP")
    ports = {f"{n}_PORT": free_port() for n in names}
    token = secrets.token_urlsafe(24)
    sink = Sink(ports["SMTP_PORT"], run_dir / "mail.jsonl", run_dir / "sink-rules.json")
    outside = ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_HOST", "SMTP_PORT", "ADMIN_TOKEN")
    env = {k: v for k, v in clean_env().items() if k not in outside}
    env |= {k: str(v) for k, v in ports.items() if k != "SMTP_PORT"}
    env |= CHAOS_SETTINGS | {
        "ADMIN_TOKEN": token,
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": str(ports["SMTP_PORT"]),
        "COUNTER_DATA_DIR": str(run_dir / "counter-data"),
        "PYTHONUNBUFFERED": "1",
    }
    return ChaosStack(run_dir, ports, token, sink, env)
