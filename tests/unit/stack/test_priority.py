"""What can wait in a surge runs at a lower CPU priority (groundswell_stack.services)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from groundswell_stack.processes import ManagedProcess
from groundswell_stack.services import PRIORITY, service_specs


def test_the_mailer_and_sharing_yield_the_cores_and_signing_goes_first() -> None:
    niceness = {spec.name: spec.niceness for spec in service_specs({})}
    assert niceness["mailer"] == niceness["sharing"] == PRIORITY["mailer"] > 0
    assert niceness["signing-relay"] == niceness["counter"] == 0
    assert niceness["signing"] == PRIORITY["signing"] < 0


def test_a_raised_priority_is_taken_where_permitted_and_never_an_error() -> None:
    own = os.getpriority(os.PRIO_PROCESS, 0)
    process = ManagedProcess(
        "sleeper", [sys.executable, "-c", "import time; time.sleep(30)"], niceness=-5
    ).start()
    try:
        got = os.getpriority(os.PRIO_PROCESS, process.pid)
        try:
            os.setpriority(os.PRIO_PROCESS, os.getpid(), own - 1)
        except PermissionError:  # not permitted here: the child kept ours
            assert got == own
        else:
            os.setpriority(os.PRIO_PROCESS, os.getpid(), own)
            assert got == max(own - 5, -20)
    finally:
        process.stop()


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
