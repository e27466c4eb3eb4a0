"""What one dispatcher holds, shared by its tasks (entrypoints/dispatcher.py).

Every claimed email is in `held` from its claim until its outcome is recorded; on
the way it sits in `queue` (waiting for a sender), in `in_flight` (in conversation)
and in `outcomes` (delivered or not, waiting to be written). The events wake the tasks
that wait on each other: the claimer on NOTIFY or free room, the recorder on new
outcomes, the senders on the first lease renewal. One event loop runs all the tasks,
so the state needs no locks: nothing here awaits.
"""

from __future__ import annotations

import asyncio
import contextlib

from groundswell_mailer.adapters.queue import ClaimedEmail
from groundswell_mailer.config import MailerSettings
from groundswell_mailer.domain.delivery import Lease, Outcome


async def wait(event: asyncio.Event, seconds: float) -> None:
    """Wait for `event` at most `seconds`."""
    # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation that
    # coincides with its timeout.
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await event.wait()


class DispatchState:
    def __init__(self, settings: MailerSettings) -> None:
        self.claim_batch = settings.claim_batch
        self.max_held = 2 * settings.claim_batch
        self.lease = Lease(settings.send_lease_seconds)
        # Claimed and not yet recorded: queued, in flight, or with an outcome pending.
        self.held: dict[int, ClaimedEmail] = {}
        self.in_flight: dict[int, ClaimedEmail] = {}
        self.queue: asyncio.Queue[ClaimedEmail | None] = asyncio.Queue()
        self.outcomes: list[Outcome] = []
        self.outcomes_waiting = asyncio.Event()
        self.notified = asyncio.Event()  # NOTIFY: new emails may be due
        self.capacity = asyncio.Event()  # room to claim more
        self.renewed = asyncio.Event()  # the first lease renewal succeeded
        self.finished = asyncio.Event()  # every outcome is written: the run is over
        self.stopping = False
        # How long the oldest email of the latest claim had been due (surge_yield).
        self.due_for = 0.0

    def add_outcome(self, outcome: Outcome) -> None:
        self.outcomes.append(outcome)
        self.outcomes_waiting.set()

    def has_capacity(self) -> bool:
        return self.queue.qsize() < self.claim_batch and len(self.held) < self.max_held

    def wake_all(self) -> None:
        """Stopping: let every waiting task see it now."""
        for event in (self.notified, self.capacity, self.outcomes_waiting, self.renewed):
            event.set()
