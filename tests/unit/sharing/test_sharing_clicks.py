"""Which clicks count, the visitor salt and impossible slugs: the rules without I/O."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from groundswell_sharing.domain.clicks import (
    ClickBudget,
    Outcome,
    decide,
    total_wait,
    visitor,
    wait_delay,
)
from groundswell_sharing.domain.links import possible_slug
from groundswell_sharing.domain.visitors import visitor_salt

SALT = b"k" * 32
NOON = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
BUDGET = ClickBudget(per_network_hour=3, per_site_hour=5)


def test_item8_a_visitor_is_its_network_not_its_address_or_agent() -> None:
    # No user agent goes in at all; an IPv6 host's addresses share one /64.
    assert visitor(SALT, "2001:db8:1:2::1", NOON) == visitor(SALT, "2001:db8:1:2:ffff::9", NOON)
    one, other = visitor(SALT, "2001:db8:1:2::1", NOON), visitor(SALT, "2001:db8:1:3::1", NOON)
    assert one.network != other.network
    assert one.site == other.site is not None  # one /48 site
    v4 = visitor(SALT, "203.0.113.9", NOON)
    assert v4.site is None and v4.window_sites == ()
    assert v4.lock_key == v4.network and one.lock_key == one.site
    assert visitor(SALT, "::ffff:203.0.113.9", NOON) == v4  # IPv4-mapped is IPv4
    assert visitor(SALT, "203.0.113.10", NOON).network != v4.network
    assert "203.0.113" not in repr(v4)  # hashes only


def test_item8_the_hourly_window_counts_yesterday_just_after_midnight() -> None:
    noon = visitor(SALT, "203.0.113.9", NOON)
    assert noon.window_networks == (noon.network,)
    after_midnight = visitor(SALT, "203.0.113.9", datetime(2026, 3, 2, 0, 20, tzinfo=UTC))
    assert len(after_midnight.window_networks) == 2
    assert after_midnight.window_networks[1] == noon.network  # yesterday's hash


@pytest.mark.parametrize(
    ("seen", "network", "site", "outcome"),
    [
        (False, 0, 0, Outcome.COUNTED),
        (False, 2, 4, Outcome.COUNTED),
        (False, 3, 3, Outcome.LIMITED),  # the network's budget
        (False, 0, 5, Outcome.LIMITED),  # the site's budget
        (True, 0, 0, Outcome.REPEAT),
        (True, 9, 9, Outcome.REPEAT),  # a repeat costs nothing, whatever the budget
    ],
)
def test_item8_which_clicks_count(seen: bool, network: int, site: int, outcome: Outcome) -> None:
    assert (
        decide(seen_today=seen, network_clicks=network, site_clicks=site, budget=BUDGET) is outcome
    )


def test_issue9_the_salt_is_stable_and_comes_from_configuration() -> None:
    derived = visitor_salt(None, "admin-token")
    assert derived == visitor_salt("", "admin-token")  # an empty setting means unset
    assert derived != visitor_salt(None, "another-token")
    assert b"admin-token" not in derived and len(derived) == 32
    assert visitor_salt("explicit", "admin-token") == b"explicit"
    with pytest.raises(ValueError, match="ADMIN_TOKEN"):
        visitor_salt(None, None)
    restart = visitor(visitor_salt(None, "admin-token"), "203.0.113.9", NOON)
    assert restart == visitor(derived, "203.0.113.9", NOON)


def test_issue9_an_unknown_link_is_waited_for_a_bounded_time() -> None:
    assert [wait_delay(a) for a in range(10)] == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert wait_delay(100) == 5
    assert total_wait(8) == 20
    assert total_wait(0) == 0


@pytest.mark.parametrize(
    ("slug", "possible"),
    [
        ("clean-rivers", True),
        ("a", True),
        ("x" * 200, True),
        ("x" * 201, False),
        ("", False),
        ("   ", False),
        ("a\x00b", False),
        ("a\nb", False),
        ("a\udc80b", False),  # a lone surrogate: not encodable
        ("caf\u00e9", True),  # not signing's shape, but not impossible
    ],
)
def test_item12_impossible_slugs(slug: str, possible: bool) -> None:
    assert possible_slug(slug) is possible
