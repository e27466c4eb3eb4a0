"""The retention jobs in `make up`: what cron or a Kubernetes CronJob does in production.

Every `RETENTION_INTERVAL_SECONDS` (3600 by default) the three `retention` commands run
one after the other (never two at once: the machine's cores are for the services), each
as a child process like any service, with its output in `<run>/logs/retention.log` and
its figures in `<run>/metrics/groundswell-<service>-retention.prom` (the files
node_exporter's textfile collector would read). The first round runs as soon as the
stack is up. A command that fails is said once and tried again next round; nothing here
stops `make up`. `tick` never waits: the supervisor's loop calls it every half second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from groundswell_stack.processes import ManagedProcess
from groundswell_stack.services import executable

SERVICES = ("signing", "mailer", "sharing")
DEFAULT_INTERVAL = 3600.0


class RetentionLoop:
    def __init__(
        self,
        env: Mapping[str, str],
        run_dir: Path,
        say: Callable[[str], None] = print,
    ) -> None:
        self.env = dict(env)
        self.log_path = run_dir / "logs" / "retention.log"
        self.metrics_dir = run_dir / "metrics"
        self.say = say
        self.interval = float(env.get("RETENTION_INTERVAL_SECONDS", DEFAULT_INTERVAL))
        self.due = time.monotonic()
        self.queue: list[str] = []
        self.current: tuple[str, ManagedProcess] | None = None
        self.rounds = 0

    def tick(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if self.current is not None:
            service, process = self.current
            if process.running():
                return
            code = process.proc.returncode if process.proc else None
            process.stop()  # closes its log
            self.current = None
            if code != 0:
                self.say(
                    f"  Retention for {service} failed (exit {code}); see {self.log_path}. "
                    "It runs again next round."
                )
        if not self.queue and self.current is None and now >= self.due:
            self.queue = list(SERVICES)
            self.due = now + self.interval
            self.rounds += 1
        if self.queue and self.current is None:
            self._start(self.queue.pop(0))

    def _start(self, service: str) -> None:
        metrics = self.metrics_dir / f"groundswell-{service}-retention.prom"
        process = ManagedProcess(
            f"{service}-retention",
            [executable(f"groundswell-{service}"), "retention", "--metrics-file", str(metrics)],
            env=self.env,
            log_path=self.log_path,
            stop_timeout=30,
        ).start()
        self.current = (service, process)

    def stop(self) -> None:
        if self.current is not None:
            self.current[1].stop()
            self.current = None
