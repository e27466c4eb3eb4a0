"""Share codes, channels and where a share link leads."""

from __future__ import annotations

import re
from urllib.parse import quote, urlencode

# Channels the share buttons and emails use; anything else a link carries is "other".
CHANNELS = frozenset(
    {
        "email",
        "whatsapp",
        "facebook",
        "x",
        "copy",
        "sms",
        "telegram",
        "linkedin",
        "messenger",
        "bluesky",
        "mastodon",
        "reddit",
        "qr",
        # The phone's own share sheet (the Web Share API on the petition page).
        "webshare",
    }
)
DIRECT = "direct"  # the link was shared bare, without a channel
OTHER = "other"
UNKNOWN = "unknown"  # a referral whose channel cannot be told
_ALIASES = {"twitter": "x", "fb": "facebook", "wa": "whatsapp", "mail": "email", "tg": "telegram"}

_SHARE_CODE = re.compile(r"[A-Za-z0-9_-]{1,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Lone surrogates cannot be encoded as UTF-8, so no database or URL can hold them.
_UNENCODABLE = re.compile(r"[\ud800-\udfff]")
FIRST_NAME_MAX = 40
# Signing's slugs are at most 80 characters of [a-z0-9-]; sharing takes slugs from events
# and only rules out what no petition can have, so a change in signing's rule cannot
# make a real petition unreachable here.
SLUG_MAX = 200


def valid_share_code(code: str) -> bool:
    # fullmatch: `$` would also accept a trailing newline.
    return bool(_SHARE_CODE.fullmatch(code))


def possible_slug(slug: str) -> bool:
    """False for what cannot be a petition's slug: empty, too long, control characters
    (NUL among them, which PostgreSQL text refuses) or lone surrogates."""
    return (
        0 < len(slug) <= SLUG_MAX
        and not _CONTROL.search(slug)
        and not _UNENCODABLE.search(slug)
        and not slug.isspace()
    )


def normalize_channel(raw: str | None) -> str:
    """The channel a click is counted under: a fixed vocabulary keeps the chart readable."""
    if raw is None or not raw.strip():
        return DIRECT
    value = raw.strip().lower()
    value = _ALIASES.get(value, value)
    return value if value in CHANNELS else OTHER


def petition_url(public_base_url: str, slug: str, share_code: str, channel: str) -> str:
    """The petition page a share link redirects to, carrying the referral (and its channel)."""
    params = {"ref": share_code}
    if channel != DIRECT:
        params["ref_channel"] = channel
    return f"{public_base_url.rstrip('/')}/p/{quote(slug, safe='')}?{urlencode(params)}"


def first_name(name: str) -> str:
    """Only the first word of a signer's name is kept: it is all the stats ever show."""
    parts = _CONTROL.sub(" ", name).split()
    return parts[0][:FIRST_NAME_MAX] if parts else ""
