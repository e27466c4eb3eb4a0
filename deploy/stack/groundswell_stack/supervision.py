"""What `make up` does while it runs: bring back whatever stops, without a human.

- A service that exits is started again, after a pause that doubles on each quick
  exit (1 s up to 30 s) so a crash loop does not eat the machine; the rest of the stack
  keeps running meanwhile.
- The local broker keeps everything in memory. If it stops, it is started again empty;
  every service is then restarted (their Kafka clients, offsets and the counter's tables
  belonged to the lost broker), and `groundswell-signing replay` republishes everything
  PostgreSQL knows, so counts and share stats come back exact. Topics are re-created by
  the services themselves, with the configured partitions (no client auto-creates one).
- The local PostgreSQL and SMTP sink are started again on the same data.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from groundswell_stack.infra import Infra
from groundswell_stack.processes import ManagedProcess
from groundswell_stack.services import ServiceSpec, executable, start_service, wait_until_ready

MIN_PAUSE = 1.0
MAX_PAUSE = 30.0
# A service that ran this long before exiting was healthy: its next pause starts short.
HEALTHY_RUN = 60.0


@dataclass
class Supervised:
    spec: ServiceSpec
    process: ManagedProcess
    started_at: float = field(default_factory=time.monotonic)
    pause: float = MIN_PAUSE
    due: float | None = None  # when a stopped service is started again
    restarts: int = 0


class StackSupervisor:
    def __init__(
        self,
        services: list[Supervised],
        infra: Infra,
        env: Mapping[str, str],
        log_dir: Path,
        say: Callable[[str], None] = print,
    ) -> None:
        self.services = services
        self.infra = infra
        self.env = dict(env)
        self.log_dir = log_dir
        self.say = say

    def tick(self) -> None:
        """One look at everything; call every half second or so."""
        self._infra()
        if self._replay_due:
            self._replay()
        now = time.monotonic()
        for s in self.services:
            if s.process.running():
                continue
            if s.due is None:
                ran = now - s.started_at
                s.pause = MIN_PAUSE if ran > HEALTHY_RUN else min(s.pause * 2, MAX_PAUSE)
                s.due = now + s.pause
                code = s.process.proc.returncode if s.process.proc else None
                self.say(
                    f"  {s.spec.name} stopped (exit {code}); starting it again in "
                    f"{s.pause:.0f}s; see {self.log_dir}/{s.spec.name}.log"
                )
            elif now >= s.due:
                self._start(s)

    def _start(self, s: Supervised) -> None:
        s.process.stop()  # reap the old group, grandchildren included
        s.process = start_service(s.spec, self.env, self.log_dir)
        s.started_at = time.monotonic()
        s.due = None
        s.restarts += 1

    def _infra(self) -> None:
        infra = self.infra
        if infra.postgres is not None and not _running(infra.postgres.process):
            self.say("  PostgreSQL stopped; starting it again on the same data")
            infra.postgres.stop()
            infra.postgres.start()
        if infra.smtp is not None and not infra.smtp.running():
            self.say("  SMTP sink stopped; starting it again")
            infra.smtp.stop()
            infra.smtp.start()
        if infra.broker is not None and not _running(infra.broker.process):
            self.say("  Kafka broker stopped; starting it again (empty) and replaying PostgreSQL")
            # Every client goes before the new broker comes: one still connected when it
            # starts can write records there that nobody can read back (the counter's
            # table recovery then waits for them forever; /work/shared/notes/tansu.md).
            for s in self.services:
                s.process.stop()
            infra.broker.stop()
            infra.broker.start()
            self.rebuild_downstream()

    def rebuild_downstream(self) -> None:
        """After the broker lost its data: every service afresh, then the replay.

        Nothing here may end `make up`: a service that does not get ready is started once
        more (and then left to the usual supervision), and a failed replay is said and
        tried again on the next tick.
        """
        for s in self.services:
            self._start(s)
        for s in self.services:
            for attempt in (1, 2):
                try:
                    wait_until_ready(s.spec, s.process, timeout=120)
                    break
                except (TimeoutError, RuntimeError) as exc:
                    self.say(f"  {s.spec.name} not ready after the rebuild ({exc})")
                    if attempt == 1:
                        self._start(s)
        self._replay_due = True
        self._replay()

    _replay_due = False

    def _replay(self) -> None:
        try:
            replay(self.env)
        except (subprocess.CalledProcessError, OSError) as exc:
            self.say(f"  Replay failed ({exc}); trying again")
            return
        self._replay_due = False
        self.say("  Replay done: counts and share stats are being rebuilt")


def replay(env: Mapping[str, str]) -> None:
    subprocess.run(
        [executable("groundswell-signing"), "replay"],
        env=dict(env),
        check=True,
        stdout=subprocess.DEVNULL,
    )


def _running(process: ManagedProcess | None) -> bool:
    return process is not None and process.running()
