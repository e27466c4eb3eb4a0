"""Slow down guessing the admin token: repeated failures from one network are refused.

A 32-character random token cannot be guessed at any rate; this keeps a weak or
leaked-in-part token from being brute-forced and makes a guessing run visible.

After `free_failures` failed attempts within `window` seconds, a client network is
refused (429) for `base_delay` seconds, doubled with each further failure up to `max_delay`;
while refused, even a correct token is refused, or guessing could carry on at full
speed and learn the answer from which guess is not refused. State is in-process (each
worker counts its own) and bounded: the oldest entries are dropped past `max_networks`.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass


@dataclass
class _Record:
    failures: int
    first_failure: float
    refused_until: float


class AdminAuthThrottle:
    def __init__(
        self,
        *,
        free_failures: int = 5,
        window: float = 900.0,
        base_delay: float = 2.0,
        max_delay: float = 900.0,
        max_networks: int = 10_000,
    ) -> None:
        self.free_failures = free_failures
        self.window = window
        self.base_delay = base_delay
        self.max_delay = max_delay
        self.max_networks = max_networks
        self._records: OrderedDict[str, _Record] = OrderedDict()

    def refused_for(self, network: str, now: float) -> int:
        """Seconds this network must wait before trying again; 0 when it may try now."""
        record = self._records.get(network)
        if record is None:
            return 0
        if now - record.first_failure > self.window and now >= record.refused_until:
            del self._records[network]
            return 0
        return max(0, int(record.refused_until - now + 0.999))

    def failed(self, network: str, now: float) -> None:
        record = self._records.get(network)
        if record is None or (
            now - record.first_failure > self.window and now >= record.refused_until
        ):
            record = _Record(failures=0, first_failure=now, refused_until=now)
        record.failures += 1
        beyond = record.failures - self.free_failures
        if beyond >= 0:
            delay = min(self.max_delay, self.base_delay * 2 ** min(beyond, 30))
            record.refused_until = now + delay
        self._records[network] = record
        self._records.move_to_end(network)
        while len(self._records) > self.max_networks:
            self._records.popitem(last=False)

    def succeeded(self, network: str) -> None:
        self._records.pop(network, None)
