"""One retry pause for every loop that waits out a failure (database, broker, SMTP).

Doubling from `first` up to `cap`, then spread by up to a quarter at random: loops that
failed together (every consumer when the broker restarts, every sender when the relay
drops) would otherwise all try again in the same instant and fail together again.
"""

from __future__ import annotations

import random


def backoff(failures: int, *, first: float = 0.2, cap: float = 5.0, spread: float = 0.25) -> float:
    """The pause after the n-th failure in a row (n >= 1)."""
    delay = min(first * float(2 ** max(failures - 1, 0)), cap)
    return delay * (1.0 + spread * random.random())  # noqa: S311 - spreading, not a secret
