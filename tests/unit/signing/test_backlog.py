"""Admission by the outbox's backlog (service_layer/backlog.py): the rule alone."""

from __future__ import annotations

from groundswell_signing.service_layer.backlog import STALLED_AFTER, behind


def test_backlog_sheds_only_while_the_relay_moves() -> None:
    assert behind(age=3.0, since_moved=0.5, limit=2.0)  # moving, but behind
    assert not behind(age=1.0, since_moved=0.5, limit=2.0)  # keeping up
    assert not behind(age=30.0, since_moved=STALLED_AFTER + 1, limit=2.0)  # away: accept
    assert not behind(age=30.0, since_moved=0.5, limit=0)  # turned off
