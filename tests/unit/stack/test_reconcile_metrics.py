from __future__ import annotations

from groundswell_stack.reconcile import Drift, prometheus_text


def test_drift_metrics() -> None:
    text = prometheus_text(3, [Drift("p1", "pending", 2, 3), Drift("p2", "signatures", 5, None)])
    lines = text.splitlines()
    assert 'groundswell_count_drift{slug="p1",figure="pending"} 1' in lines
    assert 'groundswell_count_drift{slug="p2",figure="signatures"} -5' in lines
    assert "groundswell_reconcile_petitions 3" in lines
    assert "groundswell_reconcile_drifts 2" in lines


def test_no_drift_is_zero() -> None:
    lines = prometheus_text(4, []).splitlines()
    assert "groundswell_reconcile_drifts 0" in lines
    assert not any(line.startswith("groundswell_count_drift{") for line in lines)
