"""Child processes that are always stopped: SIGTERM, then SIGKILL after a grace period."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from groundswell_runtime.priority import set_niceness

# Ports for our servers are taken from here up to the kernel's ephemeral range.
_FIRST_PORT = 20_000
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Handed out by this process: two servers started one after the other must not both be
# given a port neither has bound yet.
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on, for a server started next.

    Taken below the kernel's ephemeral range, not by binding port 0: a port from that
    range can become, before our server binds it, the local end of any outgoing
    connection (a service opening its database pool), and the server then fails with
    "Address already in use" (seen in CI: the mailer of a benchmark's stack)."""
    low = _ephemeral_low()
    if low - _FIRST_PORT >= 1_000:
        for port in random.sample(range(_FIRST_PORT, low), 64):
            if port not in _handed_out and _bindable(port):
                _handed_out.add(port)
                return port
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(port: int, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not port_open(port):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode} before port {port} opened")
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing listening on port {port} after {timeout:.0f}s")
        time.sleep(0.05)


def set_priority(pid: int, niceness: int) -> None:
    """Make `pid` yield the cores by `niceness` more than this process does (less, when
    negative: only where this process may, see below).

    Set before it starts any thread or worker of its own: they inherit it. Each child is
    the leader of a session of its own, and where the kernel groups processes by session
    for scheduling (autogroup) only the group's nice value weighs between groups, so
    `set_niceness` sets that too (measured: with only the process's nice value set, the
    mailer at nice 10 still took as much of the cores as signing did;
    docs/performance.md). The child's database pools lend a lowered value to their
    backends. Raising a priority takes CAP_SYS_NICE (or an RLIMIT_NICE allowing it):
    without it the child keeps this process's, and the stack runs as before.
    """
    current = os.getpriority(os.PRIO_PROCESS, 0)
    with contextlib.suppress(PermissionError):
        set_niceness(pid, max(-20, min(current + niceness, 19)))


class ManagedProcess:
    """One child in its own process group, so stopping it also stops its children."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        *,
        env: Mapping[str, str] | None = None,
        log_path: Path | None = None,
        stop_timeout: float = 10.0,
        cwd: Path | None = None,
        niceness: int = 0,
    ) -> None:
        self.name = name
        self.niceness = niceness
        self.argv = list(argv)
        self.env = dict(env) if env is not None else None
        self.log_path = log_path
        self.stop_timeout = stop_timeout
        self.cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def start(self) -> ManagedProcess:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            env=self.env,
            stdout=self._log if self._log else None,
            stderr=subprocess.STDOUT if self._log else None,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=self.cwd,
        )
        if self.niceness:
            set_priority(self.proc.pid, self.niceness)
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the whole group at once (crash tests)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        # The group may hold grandchildren that outlived the leader.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        if self._log is not None:
            self._log.close()
            self._log = None
