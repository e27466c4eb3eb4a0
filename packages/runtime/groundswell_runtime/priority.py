"""Who yields the cores in a surge: a process's CPU priority, and that of its database work.

`make up` runs what can wait (the mailer, sharing) at a lower priority than the live
path, and signing, where it may, at a higher one (groundswell_stack.services.PRIORITY).
Where the kernel groups processes by session for scheduling (autogroup, on by default in
Debian and desktop kernels) it first shares the cores between sessions and only then
between the processes of one session by their nice values; each of the stack's children
leads a session of its own, so the session's nice value is what weighs, and
`set_niceness` sets both.

PostgreSQL's backends are sessions of their own as well (each calls setsid() when it
starts): one per connection, each at nice 0 whatever the client's priority. So the
statements of a lowered service ran at the live path's priority, although the process
that sent them did not (measured in docs/performance.md). `lend_priority`, asyncpg's
`init` for every new pooled connection (`db.create_pool`), gives the backend serving a
lowered (or raised) process's connection that process's nice value. It asks the server
for the backend's pid and for our end's port, and changes the niceness only when /proc
on this host shows that pid as a PostgreSQL backend whose title names that port: a
database on another host or in another pid namespace, another user's cluster (no
permission), a Unix socket (no port to check) or a kernel without autogroup leave
everything as it was. Raising a backend's priority takes the privilege that raised the
process's (else nothing changes). Measured (docs/performance.md, 2026-12-04): with
signing at -5 and its backends at 0, its commits waited behind the rest and its accepted
requests' p99 at 1,000/s was 70 ms (16 refused); with them at -5 too, 33.5 ms (none). A
priority is a preference, never an error.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import asyncpg


def set_niceness(pid: int, value: int) -> None:
    """`pid`'s nice value and its scheduling group's, where there is one."""
    os.setpriority(os.PRIO_PROCESS, pid, value)
    # Absent without autogroup support; the process's own value then does it all.
    with contextlib.suppress(OSError), open(f"/proc/{pid}/autogroup", "w") as group:
        group.write(str(value))


def is_local_backend(pid: int, port: int) -> bool:
    """Whether `pid` on this host is the PostgreSQL backend of a client on `port`: its
    title (update_process_title, on by default) reads `postgres: user db host(port) ...`."""
    try:
        title = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return title.startswith(b"postgres: ") and f"({port}) ".encode() in title


async def lend_priority(conn: asyncpg.Connection) -> None:
    """Give the backend serving `conn` this process's nice value, if it is not 0."""
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    if niceness == 0:  # nothing to lend, not even a query
        return
    row = await conn.fetchrow("SELECT pg_backend_pid() AS pid, inet_client_port() AS port")
    if row is None or row["port"] is None or not is_local_backend(row["pid"], row["port"]):
        return
    with contextlib.suppress(OSError):
        set_niceness(row["pid"], niceness)
