"""The stack under test, started as `make up` starts it, plus what the bench adds around it.

`start_stack` uses groundswell_stack's own infra and service code (free ports, its own run
folder), with the SMTP settings pointing at Postfix's `smtp-sink`, a C program that
counts messages and throws them away, so the sink is not what the benchmark measures.
Only when smtp-sink is not installed does the project's aiosmtpd sink stand in (it writes
every message to a file: far slower), and the results say so.
"""

from __future__ import annotations

import os
import secrets
import sys
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from groundswell_stack.infra import Infra, start_infra
from groundswell_stack.processes import ManagedProcess, free_port, wait_for_port
from groundswell_stack.services import (
    ServiceSpec,
    clean_env,
    service_env,
    service_specs,
    start_service,
    wait_until_ready,
)

SMTP_SINK = "/usr/sbin/smtp-sink"
# "signing-relay": signing's outbox relay, a process of its own where the stack runs one.
ALL_SERVICES = ("signing", "signing-relay", "counter", "mailer", "sharing")


class SinkCounter:
    """How many messages the sink has taken so far."""

    def __init__(self, kind: str, output: Path | None, mail_dir: Path | None) -> None:
        self.kind = kind
        self._output = output
        self._mail_dir = mail_dir

    def count(self) -> int:
        if self._output is not None:
            # smtp-sink -c rewrites "sess=N quit=N mesg=N" after every message (\r-separated).
            with self._output.open("rb") as f:
                f.seek(max(0, self._output.stat().st_size - 200))
                tail = f.read()
            at = tail.rfind(b"mesg=")
            if at < 0:
                return 0
            digits = tail[at + 5 :].split(b"\r", 1)[0].split()[0]
            return int(digits)
        assert self._mail_dir is not None
        if not self._mail_dir.exists():
            return 0
        return sum(1 for e in os.scandir(self._mail_dir) if e.name.endswith(".eml"))


def start_smtp_sink(run_dir: Path) -> tuple[ManagedProcess, int, Path] | None:
    if not Path(SMTP_SINK).exists():
        return None
    port = free_port()
    output = run_dir / "smtp-sink.out"
    argv = [SMTP_SINK, "-c"]
    if os.geteuid() == 0:
        argv += ["-u", "nobody"]  # it refuses to run as root
    # -m: up to 512 sessions at once (the default 256 could queue a busy mailer).
    argv += ["-m", "512", f"127.0.0.1:{port}", "1024"]
    process = ManagedProcess("smtp-sink", argv, log_path=output, stop_timeout=3).start()
    wait_for_port(port, 10, process.proc)
    return process, port, output


@dataclass
class Stack:
    infra: Infra
    run_dir: Path
    specs: dict[str, ServiceSpec]
    processes: dict[str, ManagedProcess]
    sink: SinkCounter
    sink_process: ManagedProcess | None
    admin_token: str
    env: dict[str, str]
    extra: dict[str, ManagedProcess] = field(default_factory=dict)

    def url(self, service: str) -> str:
        return self.specs[service].url

    def process_roots(self) -> dict[str, int]:
        """The processes whose CPU and memory are reported, by name (each with its children)."""
        roots = {name: p.pid for name, p in self.processes.items() if p.running()}
        if self.infra.postgres is not None and self.infra.postgres.process is not None:
            roots["postgres"] = self.infra.postgres.process.pid
        if self.infra.broker is not None and self.infra.broker.process is not None:
            roots["broker"] = self.infra.broker.process.pid
        sink = self.sink_process or self.infra.smtp
        if sink is not None:
            roots["smtp sink"] = sink.pid
        for name, p in self.extra.items():
            if p.running():
                roots[name] = p.pid
        return roots

    def close(self) -> None:
        for process in [*self.extra.values(), *reversed(list(self.processes.values()))]:
            process.stop()
        self.infra.close()
        if self.sink_process is not None:
            self.sink_process.stop()


def start_stack(run_dir: Path, services: tuple[str, ...] = ALL_SERVICES) -> Stack:
    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)  # the database runs as the postgres user when we are root
    sink = start_smtp_sink(run_dir) if not os.environ.get("SMTP_HOST") else None
    if sink is not None:
        # start_infra takes SMTP_HOST/SMTP_PORT from the environment: ours, this process.
        os.environ["SMTP_HOST"], os.environ["SMTP_PORT"] = "127.0.0.1", str(sink[1])
    infra: Infra | None = None
    processes: dict[str, ManagedProcess] = {}
    try:
        infra = start_infra(run_dir)
        if sink is not None:
            counter = SinkCounter("smtp-sink (Postfix)", sink[2], None)
        elif infra.mail_dir is not None:
            counter = SinkCounter(
                "aiosmtpd (FALLBACK: smtp-sink not installed; the sink writes files)",
                None,
                infra.mail_dir,
            )
        else:
            raise SystemExit("SMTP_HOST points elsewhere: the bench cannot count the emails")
        admin_token = secrets.token_urlsafe(24)
        ports = {
            f"{name.upper().replace('-', '_')}_PORT": str(free_port()) for name in ALL_SERVICES
        }
        base = (
            clean_env()
            | infra.env()
            | ports
            | {
                "ADMIN_TOKEN": admin_token,
                # Every request names its own client address; both spellings of "trust
                # the proxy at 127.0.0.1", so the bench works before and after the change.
                "TRUSTED_PROXIES": "127.0.0.1",
                "SIGNING_TRUST_FORWARDED_FOR": "true",
                "COUNTER_DATA_DIR": str(run_dir / "counter-data"),
                # No milestone notes to organisers: the sink's count is then exactly the
                # signers' mail the bench expects (one per accepted request).
                "ORG_NOTIFY_ADDRESS": "",
            }
        )
        specs = [s for s in service_specs(base) if s.name in services]
        env = service_env(base, service_specs(base))
        log_dir = run_dir / "logs"
        for spec in specs:
            processes[spec.name] = start_service(spec, env, log_dir)
        for spec in specs:
            try:
                wait_until_ready(spec, processes[spec.name], timeout=120)
            except Exception:
                log = log_dir / f"{spec.name}.log"
                print(log.read_text()[-3000:] if log.exists() else "", file=sys.stderr)
                raise
    except BaseException:
        for process in processes.values():
            process.stop()
        if infra is not None:
            infra.close()
        if sink is not None:
            sink[0].stop()
        raise
    return Stack(
        infra,
        run_dir,
        {s.name: s for s in specs},
        processes,
        counter,
        sink[0] if sink else None,
        admin_token,
        env,
    )


def start_bare_endpoint(stack: Stack, workers: int | None) -> tuple[ManagedProcess, int]:
    port = free_port()
    workers = workers or int(stack.env.get("SIGNING_WORKERS", "1"))
    process = ManagedProcess(
        "bare-endpoint",
        [
            sys.executable,
            str(Path(__file__).with_name("bare_endpoint.py")),
            "--port",
            str(port),
            "--workers",
            str(workers),
        ],
        env=stack.env,
        log_path=stack.run_dir / "logs" / "bare-endpoint.log",
    ).start()
    wait_for_port(port, 30, process.proc)
    stack.extra["bare endpoint"] = process
    return process, port


def children_map() -> dict[int, list[int]]:
    """Parent pid -> child pids, from one pass over the process table."""
    children: dict[int, list[int]] = {}
    for p in psutil.process_iter(["ppid"]):
        children.setdefault(p.info["ppid"] or 0, []).append(p.pid)
    return children


def run_queue_wait(pid: int) -> float | None:
    """Seconds `pid`'s threads have spent runnable but waiting for a core, so far
    (`/proc/PID/task/TID/schedstat`, second field, in ns); None where the kernel keeps no
    such figures (not Linux, or built without schedstats) or the process is gone.

    CPU seconds say what a process did; this says how long it waited to do it. On a full
    box a process that wants more than the scheduler's fair share of the cores waits
    whatever its own code does, and anything it answers waits with it (measured in
    docs/performance.md: signing's refusals over capacity).
    """
    total, seen = 0, False
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    for task in tasks:
        try:
            total += int((task / "schedstat").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
        seen = True
    return total / 1e9 if seen else None


class ProcessTree:
    """CPU seconds and memory of a process and all its descendants, dead ones included.

    A child's CPU moves into its parent's `children_*` times when the parent reaps it,
    so live descendants plus every member's reaped children is the whole tree's CPU.
    The run-queue wait (`core_wait`) covers live members only: the kernel hands no such
    figure to the parent of a process that ended.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._members: dict[int, psutil.Process] = {}

    def _refresh(self, children: dict[int, list[int]]) -> list[psutil.Process]:
        pids, todo = [], [self.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(children.get(pid, []))
        current = []
        for pid in pids:
            if pid not in self._members:
                try:
                    self._members[pid] = psutil.Process(pid)  # caches create_time
                except psutil.NoSuchProcess:
                    continue
            current.append(self._members[pid])
        return current

    def sample(self, children: dict[int, list[int]] | None = None) -> tuple[float, int]:
        """(CPU seconds so far, resident memory in bytes now).

        Memory counts each process's own pages plus the largest shared part once:
        PostgreSQL's backends all map the same shared buffers, and summing plain RSS
        would count those once per backend.
        """
        cpu, private, shared = 0.0, 0, 0
        for p in self._refresh(children if children is not None else children_map()):
            try:
                with p.oneshot():
                    t = p.cpu_times()
                    cpu += t.user + t.system + t.children_user + t.children_system
                    m = p.memory_info()
                    private += m.rss - m.shared
                    shared = max(shared, m.shared)
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
        return cpu, private + shared

    def core_wait(self, children: dict[int, list[int]] | None = None) -> float | None:
        """Seconds the tree's live processes have waited for a core so far (None: unknown)."""
        waits = [
            run_queue_wait(p.pid)
            for p in self._refresh(children if children is not None else children_map())
        ]
        known = [w for w in waits if w is not None]
        return sum(known) if known else None
