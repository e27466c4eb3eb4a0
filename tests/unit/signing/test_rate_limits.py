"""The pure core of the rate limits: ordinals handed out in arrival order."""

from __future__ import annotations

import uuid

from groundswell_signing.domain.rate_limits import Window, added_hits, admit, hits_for

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
    attempts = [hits_for(WINDOWS, PETITION, "198.51.100.7", NOW) for _ in range(3)]
    added = added_hits(attempts)
    assert set(added.values()) == {3}
    # One hit was already counted in each window before this batch.
    totals = {counter: 1 + n for counter, n in added.items()}
    verdicts = admit(attempts, totals, NOW)
    assert verdicts[0] is None  # ordinal 2 of 2 in the burst window
    assert verdicts[1] is not None and verdicts[2] is not None
    assert 1 <= verdicts[1] <= 60


def test_refused_attempts_still_count() -> None:
    # Every attempt uses an ordinal, refused or not: the 4th attempt in the global window
    # is refused even though the 3rd was refused by the burst window.
    hits = hits_for(WINDOWS, PETITION, "198.51.100.7", NOW)
    attempts = [hits] * 4
    totals = {counter: n for counter, n in added_hits(attempts).items()}
    assert [v is None for v in admit(attempts, totals, NOW)] == [True, True, False, False]


def test_window_boundaries_align_for_everyone() -> None:
    early = hits_for(WINDOWS, PETITION, "198.51.100.7", 1_000_019.0)
    late = hits_for(WINDOWS, PETITION, "198.51.100.7", 1_000_020.0)
    assert early[0].window_start == 999_960 and late[0].window_start == 1_000_020
