"""In a surge the front door gets the cores first (groundswell_stack.services.PRIORITY)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from groundswell_stack.processes import ManagedProcess
from groundswell_stack.services import PRIORITY, service_specs


def test_three_tiers_signing_first_then_the_live_count_then_what_can_wait() -> None:
    niceness = {spec.name: spec.niceness for spec in service_specs({})}
    assert niceness["signing"] == 0
    assert 0 < niceness["signing-relay"] == niceness["counter"] == PRIORITY["broker"]
    assert niceness["mailer"] == niceness["sharing"] > niceness["counter"]


def test_a_process_starts_with_its_niceness_and_so_does_its_scheduling_group() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    process = ManagedProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], niceness=5
    ).start()
    try:
        assert os.getpriority(os.PRIO_PROCESS, process.pid) == min(own + 5, 19)
        # Each child leads a session of its own, so where the kernel groups processes by
        # session (autogroup) only the group's nice value weighs against the others.
        group = Path(f"/proc/{process.pid}/autogroup")
        if group.exists():
            assert group.read_text().split()[-1] == str(min(own + 5, 19)), group.read_text()
    finally:
        process.stop()
