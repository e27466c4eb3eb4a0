"""Telling people from link-preview robots, and one visitor's repeat clicks from new ones.

No IP address is stored: a visitor is an HMAC of (day, network) under a secret salt,
where the network is what `groundswell_runtime.client_address.client_network` makes of
the caller's address (the IPv4 address, or the IPv6 /64 a host usually holds). The user
agent is deliberately not part of it: anyone can change it on every request, so a
(network, user agent) visitor let one person count every click they made. The day is
part of the input, so a network cannot be followed across days and a click a day later
counts again.

The salt must be the same in every instance and across restarts, or a restart (or a
second replica) would count the same visitor's click again: it is `SHARING_VISITOR_SALT`
when set, else derived from `ADMIN_TOKEN`, which every instance of a stack shares.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import date

# Messengers and social sites fetch every link posted to build a preview card, and
# crawlers and scripts follow links too; counting those would credit a share with
# clicks nobody made. In-app browsers (Instagram, Facebook's FBAV, Snapchat) are people.
_AUTOMATED_AGENTS = (
    "facebookexternalhit",
    "facebookcatalog",
    "whatsapp/",
    "twitterbot",
    "slackbot",
    "slack-imgproxy",
    "telegrambot",
    "linkedinbot",
    "discordbot",
    "skypeuripreview",
    "pinterestbot",
    "redditbot",
    "applebot",
    "googlebot",
    "bingbot",
    "duckduckbot",
    "yandexbot",
    "embedly",
    "iframely",
    "mastodon/",
    "cardyb",
    "vkshare",
    "microsoftpreview",
    "google-pagerenderer",
    "headlesschrome",
    "python-requests",
    "python-httpx",
    "curl/",
    "wget/",
    "go-http-client",
    "spider",
    "crawler",
)


def is_automated(user_agent: str | None) -> bool:
    """A link-preview fetcher, crawler or script rather than a person's browser."""
    if not user_agent:
        return True
    agent = user_agent.lower()
    return any(marker in agent for marker in _AUTOMATED_AGENTS)


# A fixed label, so the derived salt is a key of its own: knowing it tells nothing of the
# admin token, and no other use of the token can produce the same bytes.
_SALT_LABEL = b"groundswell-sharing visitor salt v1"


def visitor_salt(configured: str | None, admin_token: str | None) -> bytes:
    """The key of every visitor hash: the configured salt, else one derived from the token.

    An empty value (e.g. `${SHARING_VISITOR_SALT:-}` in compose) means unset, never an
    empty key. Raises ValueError when neither is set: a random salt would silently count
    repeat clicks again after every restart.
    """
    if configured:
        return configured.encode()
    if admin_token:
        return hmac.new(admin_token.encode(), _SALT_LABEL, hashlib.sha256).digest()
    raise ValueError(
        "sharing needs a stable visitor salt: set ADMIN_TOKEN (the salt is derived from it) "
        "or SHARING_VISITOR_SALT"
    )


def visitor_hash(salt: bytes, day: date, kind: str, network: str | None) -> str:
    """One network's identity for one day; `kind` ("network", "site") keeps scopes apart.

    A caller whose address is unknown (a Unix socket with no forwarded header) is one
    shared "unknown" network, so such clicks are collapsed rather than all counted.
    """
    material = f"{day.isoformat()}\x00{kind}\x00{network or 'unknown'}".encode()
    return hmac.new(salt, material, hashlib.sha256).hexdigest()[:32]
