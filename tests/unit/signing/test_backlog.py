"""Admission by the outbox's backlog and the counter's lag (service_layer/backlog.py):
the rule alone."""

from __future__ import annotations

from groundswell_signing.service_layer.backlog import MIN_SHARE, STALLED_AFTER, Admission


def test_behind_a_moving_relay_the_share_let_in_falls_then_recovers() -> None:
    admission = Admission(limit=2.0)
    shares = []
    for _ in range(8):
        admission.observe(age=3.0, since_moved=0.5)
        shares.append(admission.share)
    assert shares == sorted(shares, reverse=True) and shares[-1] < 0.2
    assert admission.admits(0.0) and not admission.admits(0.5)
    admission.observe(age=1.5, since_moved=0.5)  # between half the limit and the limit: hold
    assert admission.share == shares[-1]
    for _ in range(200):
        admission.observe(age=0.2, since_moved=0.1)  # caught up: back to everyone
    assert admission.share == 1.0 and admission.admits(0.999)


def test_some_always_get_in_while_behind() -> None:
    admission = Admission(limit=2.0)
    for _ in range(100):
        admission.observe(age=30.0, since_moved=0.5)
    assert admission.share == MIN_SHARE and admission.admits(MIN_SHARE / 2)


def test_a_relay_that_does_not_move_or_a_limit_of_zero_sheds_nothing() -> None:
    stalled = Admission(limit=2.0)
    for _ in range(10):
        stalled.observe(age=3.0, since_moved=0.5)
    stalled.observe(age=30.0, since_moved=STALLED_AFTER + 1)  # broker away: accept
    assert stalled.share == 1.0
    off = Admission(limit=0)
    off.observe(age=30.0, since_moved=0.5)
    assert off.share == 1.0


def test_the_counters_lag_adds_to_the_outboxs_age() -> None:
    admission = Admission(limit=2.0)
    admission.observe(age=0.5, since_moved=0.5, lag=1.0)  # 1.5 s in all: hold
    assert admission.share == 1.0
    admission.observe(age=0.5, since_moved=0.5, lag=1.8)  # 2.3 s: cut
    assert admission.share < 1.0
    cut = admission.share
    admission.observe(age=0.1, since_moved=0.5, lag=0.6)  # 0.7 s: grow back
    assert admission.share > cut


def test_behind_the_counter_it_sheds_even_while_the_relay_looks_stalled() -> None:
    # An outbox emptied between readings never shows the relay moving; the lag still counts.
    admission = Admission(limit=2.0)
    for _ in range(5):
        admission.observe(age=0.0, since_moved=STALLED_AFTER + 1, lag=4.0)
    assert admission.share < 0.5
    admission.observe(age=30.0, since_moved=STALLED_AFTER + 1, lag=0.5)  # broker away
    assert admission.share == 1.0
