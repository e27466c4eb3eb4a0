"""The table a chaos run prints, and the section of docs/reliability.md it rewrites.

Only the text between `<!-- chaos:begin -->` and `<!-- chaos:end -->` is ever written;
everything else in the file is left as it is (others edit it).
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from pathlib import Path

from groundswell_stack.chaos.driver import Row

BEGIN = "<!-- chaos:begin -->"
END = "<!-- chaos:end -->"
COLUMNS = (
    "202 in PostgreSQL",
    "count = PostgreSQL",
    "sharing knows every signer",
    "one thank-you each",
    "every DLQ entry explained",
    "no 5xx outside faults",
    "no 503 shed outside faults",
)


def _seconds(value: float | None, missing: str) -> str:
    return missing if value is None else f"{value:.1f}"


def table(rows: Sequence[Row]) -> str:
    head = ["#", "fault", "recovery after it (s)", "quiet after (s)", *COLUMNS, "result"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n, row in enumerate(rows, 1):
        by_name = {v.name: v for v in row.verdicts}
        cells = [
            "ok" if (v := by_name.get(c)) and v.ok else ("**FAIL**" if v else "-") for c in COLUMNS
        ]
        extra = [v for v in row.verdicts if v.name not in COLUMNS and not v.ok]
        result = "pass" if row.ok else "**FAIL**"
        if extra:
            result += " (" + ", ".join(v.name for v in extra) + ")"
        lines.append(
            "| "
            + " | ".join(
                [
                    str(n),
                    row.fault,
                    _seconds(row.recovery, "**none**"),
                    _seconds(row.drain, "**never**"),
                    *cells,
                    result,
                ]
            )
            + " |"
        )
    return "\n".join(lines)


def details(rows: Sequence[Row]) -> str:
    """What each fault did, and the evidence of each check that failed first after it
    (checks cover the whole run, so a failure stays in the rows after)."""
    lines = []
    failing: set[str] = set()
    for n, row in enumerate(rows, 1):
        lines.append(
            f"{n}. **{row.fault}** (at {row.at:.1f} s into the load): {row.note}. "
            f"Answers: {row.requests or 'none'}."
        )
        for verdict in row.verdicts:
            if not verdict.ok and verdict.name not in failing:
                lines.append(f"   - FAIL {verdict.name}: {verdict.detail}")
        failing |= {v.name for v in row.verdicts if not v.ok}
    last = rows[-1].verdicts if rows else []
    if last:
        lines.append("")
        lines.append("At the end of the run:")
        lines.extend(f"- {v.name}: {v.detail}" for v in last)
    return "\n".join(lines)


def machine() -> str:
    return f"{platform.node()}: {os.cpu_count()} cores, {platform.platform()}"


def load_average() -> str:
    return ", ".join(f"{x:.2f}" for x in os.getloadavg())


def section(
    rows: Sequence[Row], command: str, started: str, took: float, where: str, load_at_start: str
) -> str:
    passed = sum(1 for r in rows if r.ok)
    return "\n".join(
        [
            BEGIN,
            "## Chaos run (latest)",
            "",
            "Written by `make chaos` (`groundswell-stack chaos`): the stack as `make up` runs it,",
            "an open-loop signing load, and one fault at a time at a random moment; after each,",
            "recovery (a probe signature counted, mailed and known to sharing, every service",
            "ready) and the checks once the stack is quiet. Checks cover the whole run so far.",
            "",
            f"- started {started}, took {took / 60:.1f} min; `{command}`",
            f"- machine {where}; load average (1, 5, 15 min) {load_at_start} at the start, "
            f"{load_average()} at the end (other work shares the machine)",
            f"- {passed} of {len(rows)} faults passed every check",
            "",
            table(rows),
            "",
            details(rows),
            END,
        ]
    )


def write_section(path: Path, text: str) -> None:
    """Replace the chaos section (or add it at the end), touching nothing else."""
    current = path.read_text() if path.exists() else ""
    if BEGIN in current and END in current:
        before = current[: current.index(BEGIN)]
        after = current[current.index(END) + len(END) :]
        updated = before + text + after
    else:
        updated = current.rstrip("\n") + "\n\n" + text + "\n"
    path.write_text(updated)
