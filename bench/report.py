"""Judging steps against the targets, the parts' ratios, and the printed/JSON report."""

from __future__ import annotations

import itertools
import math
import statistics
from typing import TYPE_CHECKING, Any

import analysis
import numpy as np
import parts
from analysis import fmt
from stackrun import start_bare_endpoint

if TYPE_CHECKING:
    import argparse

    from surge import Run


def judge(step: dict[str, Any], counted: bool) -> dict[str, bool]:
    p99 = step["http_ms"]["p99"]
    targets = {
        "http_p99_under_50ms": p99 is not None and p99 < analysis.TARGET_HTTP_P99_MS,
        "no_errors_but_shedding": not step["errors"],
    }
    if counted:
        fresh = step["freshness_ms"]["p99"]
        targets["freshness_p99_under_1s"] = (
            fresh is not None and fresh < analysis.TARGET_FRESHNESS_P99_S * 1000
        )
        after = step["emails"]["all_in_sink_after_s"]
        targets["emails_in_sink_within_3min"] = (
            after is not None and after <= analysis.TARGET_EMAILS_S
        )
    return targets


def step_line(s: dict[str, Any]) -> str:
    h, f = s["http_ms"], s["freshness_ms"]
    missed = [k for k, ok in s["targets"].items() if not ok]
    return (
        f"  sent {s['achieved_send_rate']:,.0f}/s (generator CPU {s['generator_cpu_share']:.0%},"
        f" late p99 {fmt(s['generator_late_ms']['p99'], 1)} ms),"
        f" accepted {s['accepted_per_s']:,.0f}/s, shed {s['shed']}{_reasons(s)},"
        f" errors {s['errors'] or 0};"
        f" HTTP p99 {fmt(h['p99'], 1)} ms max {fmt(h['max'])} ms{_shed_latency(s)};"
        " freshness p99 "
        f"{fmt(f['p99'])} ms; emails {s['emails']['in_sink']}/{s['emails']['expected_total']}"
        f" {s['emails']['note']}; " + ("holds" if s["holds"] else f"misses {', '.join(missed)}")
    )


def _shed_latency(step: dict[str, Any]) -> str:
    shed = step.get("shed_ms") or {}
    return f" (503s p99 {fmt(shed['p99'], 1)} ms)" if shed.get("p99") is not None else ""


def _reasons(step: dict[str, Any]) -> str:
    reasons = {r: n for r, n in (step.get("shed_by_reason") or {}).items() if n}
    return f" ({', '.join(f'{r} {n}' for r, n in reasons.items())})" if reasons else ""


# Requests planned per second of a closed loop. The loop ends when its plan does, and
# then reports the plan's size, not the server's rate: at 8,000 a second the bare
# endpoint ran out of requests (2026-12-03, 23:20) and its rate, and so every ratio to
# it, was the plan's. A loop that still ends with its plan is marked (`exhausted`).
CLOSED_LOOP_PLAN_PER_S = 20_000


def closed_plan_size(seconds: float) -> int:
    return int(max(20_000, CLOSED_LOOP_PLAN_PER_S * seconds))


def closed_summary(
    gen: dict[str, Any], result: dict[str, Any], seconds: float, planned: int
) -> dict[str, Any]:
    status = result["status"]
    ok = status == analysis.ACCEPTED
    latency = (result["done_at"][ok] - result["sent_at"][ok]) * 1000
    return {
        "per_s": int(ok.sum()) / seconds,
        # Every planned request sent: the rate is a lower bound, not the server's.
        "exhausted": gen["sent"] >= planned,
        "errors": int((status != analysis.ACCEPTED).sum()),
        "p50_ms": analysis.pct(latency, 50),
        "p99_ms": analysis.pct(latency, 99),
        "generator_cpu_share": gen["cpu_share_sending"],
        "connections": gen["connections_max"],
    }


def _at_least(figures: dict[str, Any]) -> str:
    return "at least " if figures.get("exhausted") else ""


def fmt_share(share: float | None) -> str:
    return "-" if share is None else f"{share:.0%}"


def closed_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """Alternating closed loops (bare endpoint, signing, ...): each round's figures and
    ratio, and the median ratio, the figure quoted."""
    judged = []
    for r in rounds:
        bare = r["bare endpoint"]["per_s"]
        judged.append({**r, "signing_vs_bare": r["signing"]["per_s"] / bare if bare else None})
    ratios = [r["signing_vs_bare"] for r in judged if r["signing_vs_bare"] is not None]
    return {
        "rounds": judged,
        "signing_vs_bare": statistics.median(ratios) if ratios else None,
    }


async def measure_parts(run: Run, args: argparse.Namespace) -> dict[str, Any]:
    stack, seconds = run.stack, args.part_seconds
    print(f"parts alone, {seconds:.0f} s each ...", flush=True)
    result: dict[str, Any] = {}
    try:
        _, port = start_bare_endpoint(stack, args.bare_workers)
        n = closed_plan_size(seconds)
        gen, raw = await run.loadgen(run.planner.plan(n), port, seconds, closed=args.connections)
        result["bare endpoint"] = closed_summary(gen, raw, seconds, n)
        result["bare endpoint"]["what"] = (
            f"FastAPI + pydantic, same uvicorn settings, closed loop {args.connections} connections"
        )
    except Exception as exc:
        result["bare endpoint"] = {"error": f"{type(exc).__name__}: {exc}"[:300]}
    infra = stack.infra
    result["asyncpg inserts"] = await parts.asyncpg_inserts(infra.database_url, seconds)
    result["aiokafka produce"] = await parts.kafka_produce(
        infra.kafka_bootstrap, run.partitions, seconds
    )
    for reuse in (False, True):
        name = "raw SMTP, reused connections" if reuse else "raw SMTP"
        result[name] = await parts.smtp_send(infra.smtp_host, infra.smtp_port, seconds, reuse)
    return result


def knee(steps: list[dict[str, Any]]) -> dict[str, Any] | None:
    held = [s for s in steps if s["holds"]]
    if not held:
        return None
    best = max(held, key=lambda s: s["rate"])
    return {
        "rate": best["rate"],
        "accepted_per_s": best["accepted_per_s"],
        "shed_share": best["shed"] / max(1, best["requests"]),
    }


def ratios(steps: list[dict[str, Any]], part: dict[str, Any]) -> dict[str, Any]:
    """What the system achieved as a share of each part's limit alone."""
    if not steps:
        return {}
    best = knee(steps) or {"rate": None, "accepted_per_s": 0.0}
    top = max(steps, key=lambda s: s["accepted_per_s"])
    emails = max((s["emails"]["per_s"] or 0 for s in steps), default=0)
    out: dict[str, Any] = {"at_knee_accepted_per_s": best["accepted_per_s"]}
    out["best_accepted_per_s"] = top["accepted_per_s"]
    out["best_emails_per_s"] = emails
    for name, figures in part.items():
        limit = figures.get("per_s")
        if not limit:
            continue
        mine = emails if name.startswith("raw SMTP") else top["accepted_per_s"]
        out[name] = mine / limit
    return out


def timeline(run: Run) -> dict[str, Any]:
    t0 = run.t0

    def cat(key: str) -> np.ndarray:
        return np.concatenate(run.tl[key]) if run.tl[key] else np.array([])

    due, lat, acc, offered = cat("due"), cat("lat"), cat("acc"), cat("offered")
    fresh_at, fresh = cat("fresh_at"), cat("fresh")
    samples = [s for s in run.monitor.samples if s.t >= t0]
    rel = [s.t - t0 for s in samples]
    emails: dict[int, float] = {}
    for a, b in itertools.pairwise(samples):
        emails[int(b.t - t0)] = (b.sink - a.sink) / (b.t - a.t)
    return {
        "http_p50_ms": analysis.per_second(due, lat, t0, 50),
        "http_p99_ms": analysis.per_second(due, lat, t0, 99),
        "freshness_p50_s": analysis.per_second(fresh_at, fresh, t0, 50),
        "freshness_p99_s": analysis.per_second(fresh_at, fresh, t0, 99),
        "offered_per_s": analysis.per_second(offered, None, t0, None),
        "accepted_per_s": analysis.per_second(acc, None, t0, None),
        "outbox_rows": {round(t): s.outbox_pending for t, s in zip(rel, samples, strict=True)},
        "outbox_oldest_s": {round(t): s.outbox_oldest_s for t, s in zip(rel, samples, strict=True)},
        "lag": {
            g: {round(t): s.lag.get(g) for t, s in zip(rel, samples, strict=True)}
            for g in run.monitor.lag_groups
        },
        "emails_per_s": emails,
        # Cores each process used, second by second: a cost that grows with the run (as
        # the local broker's did, docs/performance.md) shows as a slope here.
        "cpu_cores": {
            name: {
                round(b.t - t0): (b.cpu[name] - a.cpu[name]) / (b.t - a.t)
                for a, b in itertools.pairwise(samples)
                # (less CPU than before: a new process, such as each step's generator)
                if name in a.cpu and name in b.cpu and b.t > a.t and b.cpu[name] >= a.cpu[name]
            }
            for name in sorted({name for s in samples for name in s.cpu})
        },
    }


GENERATOR_ENGINES = {"c": "compiled (bench/loadgen.c)", "python": "Python (uvloop)"}


def assemble(
    run: Run, steps: list[dict[str, Any]], part: dict[str, Any], counts: dict[str, int]
) -> dict[str, Any]:
    expected = {s: run.expected[i] for i, s in enumerate(run.slugs)}
    # Every accepted signature counted, and nothing counted that was not sent: requests
    # the server took but never answered in time may be counted too.
    surplus = sum(counts.values()) - sum(expected.values()) if counts else None
    all_counted = bool(counts) and all(counts[s] >= n for s, n in expected.items())
    return {
        "steps": steps,
        "knee": knee(steps),
        "parts": part,
        "ratios": ratios(steps, part),
        "checks": {
            "expected_counts": expected,
            "final_counts": counts,
            "every_accepted_signature_counted": all_counted,
            "counted_beyond_accepted": surplus,
            "sent_but_unanswered": run.unanswered_sent,
            "nothing_counted_that_was_not_sent": surplus is not None
            and 0 <= surplus <= run.unanswered_sent,
            "emails_expected": run.expected_emails,
            "emails_in_sink": run.sink_final,
        },
        "timeline": timeline(run),
        "generator": " and ".join(GENERATOR_ENGINES[e] for e in sorted(run.engines)) or "none ran",
    }


def title(body: dict[str, Any]) -> str:
    m = body["machine"]
    return (
        f"{body['command']}\n{m['when']}, {m['cores']} cores, load average before "
        f"{m['load_average_before'][0]:.2f}, after {m['load_average_after'][0]:.2f}"
    )


def render(body: dict[str, Any]) -> str:
    m = body["machine"]
    lines = [
        f"machine: {m['cores']} cores, {m['memory_gb']} GB, {m['platform']}, Python "
        f"{m['python']}; load average before {m['load_average_before'][0]:.2f}, after "
        f"{m['load_average_after'][0]:.2f}",
        f"command: {body['command']}",
        f"SMTP sink: {body['sink']}",
        f"load generator: {body.get('generator', 'Python (uvloop)')}",
        "",
        analysis.steps_table(body["steps"]) if body["steps"] else "(no step ran)",
    ]
    if body["steps"]:
        lines += [
            "CPU ms per accepted signature, peak RSS, and seconds a second spent waiting for a "
            "core while the load ran:",
            "",
            analysis.cpu_table(body["steps"]),
        ]
    k = body.get("knee")
    lines.append(
        f"knee: {k['rate']:,.0f}/s offered, {k['accepted_per_s']:,.0f}/s accepted "
        f"({k['shed_share']:.1%} shed)"
        if k
        else "knee: below the lowest step (no step held every target)"
    )
    if body.get("parts"):
        lines += ["", "parts alone (and what the system achieved as a share of each):"]
        for name, figures in body["parts"].items():
            if "error" in figures:
                lines.append(f"- {name}: could not measure ({figures['error']})")
                continue
            share = body["ratios"].get(name)
            lines.append(
                f"- {name}: {_at_least(figures)}{figures['per_s']:,.0f}/s ({figures['what']})"
                + (f"; the system's best = {share:.1%} of it" if share is not None else "")
            )
    if "closed_loop" in body:
        c = body["closed_loop"]
        lines += ["", "closed loop (signing alone vs the bare endpoint, alternated):"]
        for number, r in enumerate(c["rounds"], 1):
            for name in ("bare endpoint", "signing"):
                f = r[name]
                lines.append(
                    f"- round {number}, {name}: {_at_least(f)}{f['per_s']:,.0f}/s with "
                    f"{f['connections']} "
                    f"connections, p50 {fmt(f['p50_ms'], 1)} ms, p99 {fmt(f['p99_ms'], 1)} ms, "
                    f"errors {f['errors']}"
                )
            share = r["signing_vs_bare"]
            lines.append(f"- round {number}, signing / bare endpoint: {fmt_share(share)}")
        median = fmt_share(c["signing_vs_bare"])
        lines.append(f"- signing / bare endpoint, median of the rounds: {median}")
    checks = body["checks"]
    if checks["final_counts"]:
        lines.append(
            f"\nevery accepted signature counted: {checks['every_accepted_signature_counted']} "
            f"(accepted {checks['expected_counts']}, counted {checks['final_counts']}; "
            f"{checks['sent_but_unanswered']} sent but never answered, which may count too)"
        )
    if checks["final_counts"]:
        lines.append(
            f"emails: {checks['emails_in_sink']} in the sink, {checks['emails_expected']} expected"
        )
    return "\n".join(lines)


def clean(value: Any) -> Any:
    """Plain JSON: numpy numbers as Python ones, infinity ("never") as null."""
    if isinstance(value, dict):
        return {str(k): clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [clean(v) for v in value]
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    return value
