"""Telling people from link-preview robots, and one visitor's repeat clicks from new ones.

No IP address is stored: a visitor is an HMAC of (day, IP, user agent) under a secret
salt. The day is part of the input, so the same person cannot be followed across days
and a click a day later counts again.
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


def visitor_hash(salt: bytes, day: date, ip: str | None, user_agent: str | None) -> str:
    material = f"{day.isoformat()}\x00{ip or ''}\x00{user_agent or ''}".encode()
    return hmac.new(salt, material, hashlib.sha256).hexdigest()[:32]
