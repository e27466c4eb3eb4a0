"""The share buttons' links, one definition for the petition pages and the emails.

Each channel gets its own copy of the link, tagged with the channel (`tag(channel)`), so
the sharing stats can tell a WhatsApp share from a Facebook one: a personal link
`/s/{code}` takes `?c=whatsapp`, the petition's own page `?ref_channel=whatsapp`. The
texts are percent-encoded here once per title (`lru_cache`): the mailer renders these
for every thank-you email, and encoding the pitch was a visible part of its cost.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, quote_plus, urlencode

# The buttons, in the order shown. "webshare" is the phone's own share sheet (Web Share
# API), whose destination app cannot be known.
CHANNELS = ("whatsapp", "facebook", "x", "email")
WEB_SHARE = "webshare"
COPY = "copy"
LABELS = {"whatsapp": "WhatsApp", "facebook": "Facebook", "x": "X", "email": "Email"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]+")


@dataclass(frozen=True)
class ShareLinks:
    """The bare link (shown and copied) and each channel's button."""

    link: str
    whatsapp: str
    facebook: str
    x: str
    email: str
    copy: str  # what the "Copy link" button copies
    web_share: str  # what the phone's share sheet gets

    def buttons(self) -> list[tuple[str, str, str]]:
        """(channel, label, href) for each button, in order."""
        return [(channel, LABELS[channel], getattr(self, channel)) for channel in CHANNELS]


def pitch(title: str) -> str:
    return f"I just signed \u201c{_one_line(title)}\u201d. Will you sign too?"


def tagged(url: str, parameter: str) -> Callable[[str], str]:
    """`tag(channel)` for a URL without a query: `url?{parameter}={channel}`."""
    return lambda channel: f"{url}?{urlencode({parameter: channel})}"


def share_links(link: str, title: str, tag: Callable[[str], str]) -> ShareLinks:
    """Each channel's link; the same as `urlencode` of each query, built from pieces."""
    title_q, pitch_plus, pitch_then_body = _encoded(title)
    return ShareLinks(
        link=link,
        whatsapp="https://wa.me/?text=" + pitch_plus + "+" + quote_plus(tag("whatsapp")),
        facebook="https://www.facebook.com/sharer/sharer.php?u=" + quote_plus(tag("facebook")),
        x="https://x.com/intent/tweet?text=" + pitch_plus + "&url=" + quote_plus(tag("x")),
        email="mailto:?subject="
        + title_q
        + "&body="
        + pitch_then_body
        + quote(tag("email"), safe=""),
        copy=tag(COPY),
        web_share=tag(WEB_SHARE),
    )


def _one_line(text: str) -> str:
    return _CONTROL.sub(" ", text).strip()


@lru_cache(maxsize=1024)
def _encoded(title: str) -> tuple[str, str, str]:
    """(title, pitch) percent-encoded as each channel's query needs them."""
    text = pitch(title)
    return quote(_one_line(title), safe=""), quote_plus(text), quote(f"{text}\n\n", safe="")
