"""The sharing rules, without I/O: channels, redirects, visitors, statistics."""

from __future__ import annotations

from datetime import date

import pytest
from groundswell_sharing.domain.links import (
    first_name,
    normalize_channel,
    petition_url,
    valid_share_code,
)
from groundswell_sharing.domain.stats import (
    ChannelTally,
    ReferrerTally,
    by_channel,
    top_referrers,
    viral_coefficient,
)
from groundswell_sharing.domain.visitors import is_automated, visitor_hash

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:131.0) Gecko/20100101 Firefox/131.0"


@pytest.mark.parametrize(
    ("raw", "channel"),
    [
        (None, "direct"),
        ("", "direct"),
        ("  ", "direct"),
        ("WhatsApp", "whatsapp"),
        ("twitter", "x"),
        ("x", "x"),
        ("fb", "facebook"),
        ("copy", "copy"),
        ("email", "email"),
        ("<script>", "other"),
        ("myspace", "other"),
    ],
)
def test_channels_come_from_a_fixed_vocabulary(raw: str | None, channel: str) -> None:
    assert normalize_channel(raw) == channel


@pytest.mark.parametrize(
    ("code", "valid"),
    [
        ("abc123", True),
        ("A_b-9", True),
        ("", False),
        ("a b", False),
        ("a/b", False),
        ("x" * 64, True),
        ("x" * 65, False),
        ("<script>", False),
        ("abc\n", False),  # `$` alone would let a trailing newline through
        ("a\x00b", False),
    ],
)
def test_share_code_shape(code: str, valid: bool) -> None:
    assert valid_share_code(code) is valid


def test_redirect_carries_the_referral_and_a_named_channel_only() -> None:
    assert petition_url("https://sign.example/", "save-it", "abc", "direct") == (
        "https://sign.example/p/save-it?ref=abc"
    )
    assert petition_url("https://sign.example", "save-it", "abc", "whatsapp") == (
        "https://sign.example/p/save-it?ref=abc&ref_channel=whatsapp"
    )
    assert petition_url("https://s.example", "a/b c", "abc", "direct") == (
        "https://s.example/p/a%2Fb%20c?ref=abc"
    )


def test_only_a_first_name_is_kept() -> None:
    assert first_name("Ada Lovelace") == "Ada"
    assert first_name(" \t\n") == ""
    assert first_name("Bob\x00Smith") == "Bob"


@pytest.mark.parametrize(
    ("agent", "automated"),
    [
        (FIREFOX, False),
        ("Mozilla/5.0 (iPhone) Mobile/15E148 [FBAN/FBIOS;FBAV/400.0]", False),  # in-app browser
        ("Mozilla/5.0 (iPhone) Instagram 300.0", False),
        ("facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)", True),
        ("WhatsApp/2.23.20.0 A", True),
        ("Twitterbot/1.0", True),
        ("Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)", True),
        ("TelegramBot (like TwitterBot)", True),
        ("Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)", True),
        ("curl/8.4.0", True),
        ("python-httpx/0.28.1", True),
        ("", True),
        (None, True),
    ],
)
def test_link_previews_and_scripts_are_not_people(agent: str | None, automated: bool) -> None:
    assert is_automated(agent) is automated


def test_visitor_hash_is_stable_within_a_day_and_unlinkable_across() -> None:
    salt = b"s" * 32
    day = date(2026, 3, 1)
    one = visitor_hash(salt, day, "network", "203.0.113.9")
    assert one == visitor_hash(salt, day, "network", "203.0.113.9")
    assert len(one) == 32 and "203" not in one
    others = {
        visitor_hash(salt, date(2026, 3, 2), "network", "203.0.113.9"),
        visitor_hash(b"t" * 32, day, "network", "203.0.113.9"),
        visitor_hash(salt, day, "network", "203.0.113.10"),
        visitor_hash(salt, day, "site", "203.0.113.9"),
        visitor_hash(salt, day, "network", None),
    }
    assert one not in others and len(others) == 5


def test_viral_coefficient() -> None:
    assert viral_coefficient(0, 0) == 0.0
    assert viral_coefficient(3, 0) == 0.0
    assert viral_coefficient(1, 4) == 0.25
    assert viral_coefficient(1, 3) == 0.3333
    assert viral_coefficient(12, 10) == 1.2


def test_by_channel_merges_clicks_and_signatures() -> None:
    assert by_channel({"email": 3, "x": 1}, {"email": 1, "unknown": 2}) == {
        "email": ChannelTally(3, 1),
        "unknown": ChannelTally(0, 2),
        "x": ChannelTally(1, 0),
    }


def test_top_referrers_rank_by_signatures_then_clicks() -> None:
    tallies = [
        ReferrerTally("a", "Ann", clicks=10, signatures=1),
        ReferrerTally("b", "Bob", clicks=2, signatures=3),
        ReferrerTally("c", "Cy", clicks=0, signatures=0),
        ReferrerTally("n", None, clicks=50, signatures=9),  # gave no name: still ranks
        ReferrerTally("d", "Di", clicks=11, signatures=1),
    ]
    assert [t.share_code for t in top_referrers(tallies, 10)] == ["n", "b", "d", "a"]
    assert [t.share_code for t in top_referrers(tallies, 2)] == ["n", "b"]
