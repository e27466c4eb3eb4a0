"""The pure core of the rate limits: ordinals handed out in arrival order."""

from __future__ import annotations

import uuid

from groundswell_signing.domain.rate_limits import RateCounters, Window, hits_for, nested

PETITION = uuid.uuid4()
WINDOWS = (
    Window("burst", 2, 60, per_petition=True),
    Window("global", 3, 300, per_petition=False),
    Window("site", 4, 300, per_petition=False, site_wide=True),
)
NOW = 1_000_000.0


def test_unknown_address_has_no_limits() -> None:
    assert hits_for(WINDOWS, PETITION, None, NOW) == []


def test_ipv4_has_no_site_window_and_ipv6_counts_its_64_and_48() -> None:
    assert [h.key.split(":")[0] for h in hits_for(WINDOWS, PETITION, "198.51.100.7", NOW)] == [
        "burst",
        "global",
    ]
    a = hits_for(WINDOWS, PETITION, "2001:db8:1:2::1", NOW)
    b = hits_for(WINDOWS, PETITION, "2001:db8:1:2:ffff::2", NOW)
    c = hits_for(WINDOWS, PETITION, "2001:db8:1:3::1", NOW)
    assert [h.counter for h in a] == [h.counter for h in b]  # one /64: one client
    assert a[0].counter != c[0].counter  # another /64: another client...
    assert a[2].counter == c[2].counter  # ...in the same /48 site budget


def test_a_batch_gets_the_ordinals_after_what_was_counted_before() -> None:
    counters = RateCounters()
    hits = hits_for(WINDOWS, PETITION, "198.51.100.7", NOW)
    assert counters.admit([hits], NOW) == [None]  # counted before this batch
    verdicts = counters.admit([hits] * 3, NOW)
    assert verdicts[0] is None  # ordinal 2 of 2 in the burst window
    assert verdicts[1] is not None and verdicts[2] is not None
    assert 1 <= verdicts[1] <= 60


def test_refused_attempts_still_count() -> None:
    # Every attempt uses an ordinal, refused or not: the 4th attempt in the global window
    # is refused even though the 3rd was refused by the burst window.
    hits = hits_for(WINDOWS, PETITION, "198.51.100.7", NOW)
    verdicts = RateCounters().admit([hits] * 4, NOW)
    assert [v is None for v in verdicts] == [True, True, False, False]


def test_a_networks_first_attempt_writes_only_its_network_counter() -> None:
    counters = RateCounters()
    counters.admit([hits_for(WINDOWS, PETITION, "198.51.100.7", NOW)], NOW)
    assert [key.split(":")[0] for key, _ in counters.hits] == ["global"]
    # ...and still counts in its per-petition window: the burst allows two, so the third
    # attempt within the minute is refused, as if all three had been counted there.
    later = [hits_for(WINDOWS, PETITION, "198.51.100.7", NOW + 1)] * 2
    assert counters.admit(later, NOW + 1)[1] is not None
    assert counters.hits[later[0][0].counter] == 2  # the burst counter holds the later two


def test_the_first_attempt_counts_only_on_its_own_petition_and_window() -> None:
    windows = (Window("burst", 1, 60, per_petition=True), Window("global", 9, 300, False))
    counters = RateCounters()
    counters.admit([hits_for(windows, PETITION, "198.51.100.7", NOW)], NOW)
    other = hits_for(windows, uuid.uuid4(), "198.51.100.7", NOW)
    assert counters.admit([other, other], NOW)[0] is None  # burst 1 of another petition
    next_minute = hits_for(windows, PETITION, "198.51.100.7", NOW + 60)
    assert counters.admit([next_minute], NOW + 60) == [None]  # burst 1 of the next minute
    assert counters.admit([next_minute], NOW + 60) != [None]  # burst 2 of it


def test_windows_that_do_not_nest_count_every_attempt_everywhere() -> None:
    assert nested(WINDOWS)
    windows = (Window("burst", 2, 90, per_petition=True), *WINDOWS[1:])
    assert not nested(windows)
    counters = RateCounters()
    counters.admit([hits_for(windows, PETITION, "198.51.100.7", NOW)], NOW)
    assert sorted(key.split(":")[0] for key, _ in counters.hits) == ["burst", "global"]


def test_window_boundaries_align_for_everyone() -> None:
    early = hits_for(WINDOWS, PETITION, "198.51.100.7", 1_000_019.0)
    late = hits_for(WINDOWS, PETITION, "198.51.100.7", 1_000_020.0)
    assert early[0].window_start == 999_960 and late[0].window_start == 1_000_020
