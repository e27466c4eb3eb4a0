"""A lowered process's database work is lowered with it (groundswell_runtime.priority)."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest
from groundswell_runtime.db import close_pool, create_pool
from groundswell_runtime.priority import is_local_backend

# A process at `os.nice(5)` opens a pool of two and prints each connection's backend pid,
# then holds the pool until its stdin closes.
_LOWERED_CLIENT = """
import asyncio, os, sys
from groundswell_runtime.db import create_pool

async def main():
    os.nice(5)
    pool = await create_pool(sys.argv[1], min_size=2, max_size=2)
    async with pool.acquire() as a, pool.acquire() as b:
        for conn in (a, b):
            print(await conn.fetchval("SELECT pg_backend_pid()"), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)

asyncio.run(main())
"""


def _niceness(pid: int) -> tuple[int, str | None]:
    group = Path(f"/proc/{pid}/autogroup")
    return os.getpriority(os.PRIO_PROCESS, pid), (
        group.read_text().split()[-1] if group.exists() else None
    )


async def test_backends_serve_a_lowered_process_at_its_priority_and_others_at_theirs(
    fresh_database: str,
) -> None:
    ours = await create_pool(fresh_database, min_size=1, max_size=1)
    try:
        async with ours.acquire() as conn:
            row = await conn.fetchrow("SELECT pg_backend_pid() AS pid, inet_client_port() AS port")
        assert row is not None
        if row["port"] is None or not is_local_backend(row["pid"], row["port"]):
            pytest.skip("the database's backends are not processes of this host")
        group = Path(f"/proc/{row['pid']}/autogroup")
        if group.exists() and not os.access(group, os.W_OK):
            pytest.skip("the database runs as another user, whose backends we may not lower")
        own = os.getpriority(os.PRIO_PROCESS, 0)
        assert own <= 14, "the test process is already lowered too far to tell"
        # A backend starts at its postmaster's priority and keeps it for a client
        # whose priority is 0 (a test run at another one lends its own).
        postmaster = int(Path(f"/proc/{row['pid']}/stat").read_text().rsplit(")", 1)[1].split()[1])
        expected = own if own != 0 else os.getpriority(os.PRIO_PROCESS, postmaster)
        assert _niceness(row["pid"])[0] == expected

        child = await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _LOWERED_CLIENT,
            fresh_database,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        try:
            assert child.stdout is not None and child.stdin is not None
            pids = [int(await asyncio.wait_for(child.stdout.readline(), 30)) for _ in range(2)]
            for pid in pids:
                niceness, group = _niceness(pid)
                assert niceness == own + 5, (pid, niceness)
                assert group in (None, str(own + 5)), (pid, group)
        finally:
            if child.stdin is not None:
                child.stdin.close()
            await asyncio.wait_for(child.wait(), 30)
    finally:
        await close_pool(ours)
