"""Who an email goes to, and what of them it may say."""

from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
FIRST_NAME_MAX = 40


def canonical_address(email: str) -> str:
    """The key an unsubscribe is stored under: one per mailbox, whatever the case typed."""
    return email.strip().lower()


def first_name(name: str) -> str:
    """Greet people by the first word of the name they typed; never more of it than that.

    Names are user input: control characters are dropped so nothing they type can
    reach a header or break a line of the text part.
    """
    cleaned = _CONTROL.sub(" ", name)
    parts = cleaned.split()
    return parts[0][:FIRST_NAME_MAX] if parts else ""
