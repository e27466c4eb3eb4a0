"""Compare the counter's live figures with PostgreSQL, the source of truth.

Expected figures come from the signing service's admin tally (computed in PostgreSQL);
actual ones from the counter's count API. Any difference is drift. `prometheus_text`
renders the result for node_exporter's textfile collector (the metric side of the check).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import httpx

FIGURES = ("signatures", "pending")


@dataclass(frozen=True)
class Drift:
    slug: str
    figure: str
    expected: int
    actual: int | None


def reconcile(signing_url: str, counter_url: str, admin_token: str) -> tuple[int, list[Drift]]:
    """Returns (petitions checked, drifts found)."""
    admin = {"Authorization": f"Bearer {admin_token}"}
    with httpx.Client(timeout=10) as client:
        petitions = client.get(f"{signing_url}/api/admin/petitions", headers=admin)
        petitions.raise_for_status()
        drifts: list[Drift] = []
        slugs = [p["slug"] for p in petitions.json()]
        for slug in slugs:
            expected = client.get(f"{signing_url}/api/admin/petitions/{slug}/tally", headers=admin)
            expected.raise_for_status()
            counted = client.get(f"{counter_url}/api/petitions/{slug}/count")
            actual = counted.json() if counted.status_code == 200 else {}
            for figure in FIGURES:
                want = int(expected.json()[figure])
                have = actual.get(figure)
                # A petition nobody has signed may not be known to the counter yet.
                if have is None and want == 0:
                    continue
                if have != want:
                    drifts.append(Drift(slug, figure, want, have))
    return len(slugs), drifts


def prometheus_text(checked: int, drifts: list[Drift]) -> str:
    """`groundswell_count_drift` per drifting figure (counter minus PostgreSQL; absent = 0)."""
    lines = [
        "# HELP groundswell_count_drift Counter figure minus PostgreSQL figure.",
        "# TYPE groundswell_count_drift gauge",
    ]
    for drift in drifts:
        gap = (drift.actual or 0) - drift.expected
        lines.append(
            f'groundswell_count_drift{{slug="{drift.slug}",figure="{drift.figure}"}} {gap}'
        )
    lines += [
        "# HELP groundswell_reconcile_petitions Petitions compared in the last run.",
        "# TYPE groundswell_reconcile_petitions gauge",
        f"groundswell_reconcile_petitions {checked}",
        "# HELP groundswell_reconcile_drifts Figures that differed in the last run.",
        "# TYPE groundswell_reconcile_drifts gauge",
        f"groundswell_reconcile_drifts {len(drifts)}",
        "# HELP groundswell_reconcile_last_run_seconds When the last run finished (Unix time).",
        "# TYPE groundswell_reconcile_last_run_seconds gauge",
        f"groundswell_reconcile_last_run_seconds {time.time():.0f}",
    ]
    return "\n".join(lines) + "\n"
