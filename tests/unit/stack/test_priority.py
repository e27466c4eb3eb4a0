"""What can wait in a surge runs at a lower CPU priority (groundswell_stack.services)."""

from __future__ import annotations

import os
import sys

from groundswell_stack.processes import ManagedProcess
from groundswell_stack.services import service_specs


def test_the_mailer_and_sharing_yield_the_cores_and_the_rest_do_not() -> None:
    niceness = {spec.name: spec.niceness for spec in service_specs({})}
    assert niceness["mailer"] > niceness["sharing"] > 0
    assert niceness["signing"] == niceness["signing-relay"] == niceness["counter"] == 0


def test_a_process_starts_with_its_niceness() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    process = ManagedProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], niceness=5
    ).start()
    try:
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == min(own + 5, 19)
    finally:
        process.stop()
