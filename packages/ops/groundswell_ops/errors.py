"""Exit codes every command shares, and the errors that map onto them."""

from __future__ import annotations

from enum import IntEnum


class Exit(IntEnum):
    OK = 0
    # Something an operator should look at: lag growing, dead letters waiting, a
    # service not ready, an outbox backlog getting old, nothing found.
    FINDING = 1
    USAGE = 2
    CANNOT_CONNECT = 3


class OpsError(Exception):
    """A failure reported as one line, with its exit code; never a traceback."""

    code = Exit.FINDING


class UsageError(OpsError):
    code = Exit.USAGE


class CannotConnect(OpsError):
    code = Exit.CANNOT_CONNECT
