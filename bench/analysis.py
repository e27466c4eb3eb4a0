"""Figures from the raw measurements: per-step summaries, the timeline, the table, the plot."""

from __future__ import annotations

import math
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

ACCEPTED, SHED = 202, 503
TARGET_HTTP_P99_MS = 50.0
TARGET_FRESHNESS_P99_S = 1.0
TARGET_EMAILS_S = 180.0


def pct(values: np.ndarray, q: float) -> float | None:
    if len(values) == 0:
        return None
    # Nearest rank, no interpolation: an unanswered request (inf) stays inf, not nan.
    value = float(np.percentile(values, q, method="inverted_cdf"))
    return value if math.isfinite(value) else math.inf


def http_summary(result: dict[str, np.ndarray]) -> dict[str, Any]:
    status = result["status"]
    answered = status > 0
    latency_ms = (result["done_at"][answered] - result["due_at"][answered]) * 1000
    # A request never answered has an unbounded latency: it counts in the percentiles.
    unanswered = int((~answered).sum())
    if unanswered:
        latency_ms = np.concatenate([latency_ms, np.full(unanswered, np.inf)])
    codes = Counter(int(s) for s in status)
    names = {0: "connection failed", -1: "no answer"}
    errors = {names.get(c, str(c)): n for c, n in sorted(codes.items()) if c not in (202, 503, -1)}
    # An open-loop request still waiting for a free connection at the end was never sent.
    never_sent = int(((status == -1) & np.isnan(result["sent_at"])).sum())
    if never_sent:
        errors["timeout, never sent (every connection busy)"] = never_sent
    if codes.get(-1, 0) - never_sent:
        errors["timeout, sent but no answer"] = codes[-1] - never_sent
    server_ms = (result["done_at"][answered] - result["sent_at"][answered]) * 1000
    # Each kind of answer apart: how long an accepted signature took, and how fast a
    # refusal came (the "503 with Retry-After within 100 ms").
    by_status = {
        name: (result["done_at"][status == code] - result["due_at"][status == code]) * 1000
        for name, code in (("accepted_ms", ACCEPTED), ("shed_ms", SHED))
    }
    send_lag_ms = (result["sent_at"] - result["due_at"]) * 1000
    send_lag_ms = send_lag_ms[~np.isnan(send_lag_ms)]
    late_ms = (result["dispatched_at"] - result["due_at"]) * 1000
    late_ms = late_ms[~np.isnan(late_ms)]
    return {
        "requests": len(status),
        "accepted": codes.get(ACCEPTED, 0),
        "shed": codes.get(SHED, 0),
        "errors": errors,
        "http_ms": {
            "p50": pct(latency_ms, 50),
            "p95": pct(latency_ms, 95),
            "p99": pct(latency_ms, 99),
            "max": float(latency_ms.max()) if len(latency_ms) else None,
        },
        **{
            name: {
                "p50": pct(ms, 50),
                "p99": pct(ms, 99),
                "max": float(ms.max()) if len(ms) else None,
            }
            for name, ms in by_status.items()
        },
        "from_send_ms": {"p50": pct(server_ms, 50), "p99": pct(server_ms, 99)},
        "send_lag_ms": {"p50": pct(send_lag_ms, 50), "p99": pct(send_lag_ms, 99)},
        # How late the generator itself was (its loop, not the connections): when this is
        # large, the latencies above overstate the server's.
        "generator_late_ms": {"p50": pct(late_ms, 50), "p99": pct(late_ms, 99)},
    }


def freshness(
    accepted_at: dict[int, np.ndarray],
    prior: dict[int, int],
    samples: dict[int, list[tuple[float, int]]],
) -> tuple[np.ndarray, np.ndarray]:
    """Acceptance times, and seconds from each to the first poll counting it.

    For petition p, the k-th acceptance is counted when a poll shows prior[p] + k.

    Acceptances are taken in time order: the count cannot say which signature it holds,
    only how many, so the k-th one to be accepted is matched with the k-th count.
    """
    out: list[np.ndarray] = []
    when: list[np.ndarray] = []
    for petition, times in accepted_at.items():
        if len(times) == 0:
            continue
        times = np.sort(times)
        when.append(times)
        seen = samples.get(petition, [])
        targets = prior.get(petition, 0) + np.arange(1, len(times) + 1)
        if not seen:
            out.append(np.full(len(times), np.inf))
            continue
        t = np.array([s[0] for s in seen])
        counts = np.maximum.accumulate(np.array([s[1] for s in seen]))
        idx = np.searchsorted(counts, targets, side="left")
        visible = np.where(idx < len(t), t[np.minimum(idx, len(t) - 1)], np.inf)
        out.append(np.maximum(visible - times, 0.0))
    if not out:
        return np.array([]), np.array([])
    return np.concatenate(when), np.concatenate(out)


def ms_summary(seconds: np.ndarray) -> dict[str, float | None]:
    ms = seconds * 1000
    return {
        "p50": pct(ms, 50),
        "p99": pct(ms, 99),
        "max": float(ms.max()) if len(ms) else None,
    }


def per_second(times: np.ndarray, values: np.ndarray | None, t0: float, q: float | None) -> dict:
    """Per whole second since t0: the count (values None) or the q-th percentile."""
    if len(times) == 0:
        return {}
    seconds = np.floor(times - t0).astype(int)
    result: dict[int, float] = {}
    if values is None:
        # Counts: a second with none is a zero, not a gap.
        result = dict.fromkeys(range(int(seconds.min()), int(seconds.max()) + 1), 0.0)
        for s, n in zip(*np.unique(seconds, return_counts=True), strict=True):
            result[int(s)] = float(n)
        return result
    order = np.argsort(seconds, kind="stable")
    seconds, values = seconds[order], values[order]
    bounds = np.flatnonzero(np.diff(seconds)) + 1
    for chunk_s, chunk_v in zip(np.split(seconds, bounds), np.split(values, bounds), strict=True):
        finite = chunk_v[np.isfinite(chunk_v)]
        if len(finite):
            result[int(chunk_s[0])] = float(np.percentile(finite, q or 50, method="inverted_cdf"))
    return result


def fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "-"
    if math.isinf(value):
        return "never"
    return f"{value:,.{digits}f}"


def steps_table(steps: list[dict[str, Any]]) -> str:
    head = (
        "| offered/s | sent/s (generator CPU, late p99) | accepted/s | shed | errors "
        "| HTTP p50/p95/p99/max ms "
        "| count freshness p50/p99/max ms | outbox max rows / oldest s | max lag c/m/s "
        "| emails/s | all mail in sink | holds |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    rows = []
    for s in steps:
        h, f, lag = s["http_ms"], s["freshness_ms"], s["lag_max"]
        errors = ", ".join(f"{k}: {v}" for k, v in s["errors"].items()) or "0"
        mail = s["emails"]
        after = mail["all_in_sink_after_s"]
        mail_cell = f"{after:.0f} s after the end" if after is not None else mail["note"]
        rows.append(
            f"| {s['rate']:,.0f} | {s['achieved_send_rate']:,.0f} "
            f"({s['generator_cpu_share']:.0%}, {fmt(s['generator_late_ms']['p99'], 1)} ms) "
            f"| {s['accepted_per_s']:,.0f} | {s['shed']} "
            f"| {errors} | {fmt(h['p50'], 1)} / {fmt(h['p95'], 1)} / {fmt(h['p99'], 1)} / "
            f"{fmt(h['max'])} | {fmt(f['p50'])} / {fmt(f['p99'])} / {fmt(f['max'])} "
            f"| {fmt(s['outbox_max_rows'])} / {fmt(s['outbox_max_age_s'], 1)} "
            f"| {' / '.join(fmt(lag.get(g)) for g in ('counter', 'mailer', 'sharing'))} "
            f"| {fmt(mail['per_s'])} | {mail_cell} | {'yes' if s['holds'] else 'no'} |"
        )
    return head + "\n".join(rows) + "\n"


def cpu_table(steps: list[dict[str, Any]]) -> str:
    names = sorted({n for s in steps for n in s["cpu_ms_per_signature"]})
    head = "| process | " + " | ".join(f"{s['rate']:,.0f}/s" for s in steps) + " |\n"
    head += "|---|" + "---|" * len(steps) + "\n"
    rows = []
    for name in names:
        cells = []
        for s in steps:
            cpu = s["cpu_ms_per_signature"].get(name)
            rss = s["peak_rss_mb"].get(name)
            wait = s.get("core_wait_share_during_load", {}).get(name)
            cells.append(
                f"{fmt(cpu, 2)} ms, {fmt(rss)} MB"
                + (f", {wait:.2f} s/s" if wait is not None else "")
            )
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return head + "\n".join(rows) + "\n"


def plot(timeline: dict[str, Any], steps: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(6, 1, figsize=(11, 15.5), sharex=True)

    def line(ax: Any, series: dict, label: str, **kw: Any) -> None:
        # Seconds without a value stay gaps, not lines drawn across them.
        if series:
            xs = list(range(min(series), max(series) + 1))
            ys = [series.get(x) for x in xs]
            ax.plot(xs, [np.nan if y is None else y for y in ys], label=label, **kw)

    ax = axes[0]
    line(ax, timeline["http_p50_ms"], "p50")
    line(ax, timeline["http_p99_ms"], "p99")
    ax.axhline(TARGET_HTTP_P99_MS, color="red", lw=0.8, ls="--", label="p99 target")
    ax.set_yscale("log")
    ax.set_ylabel("HTTP latency ms\n(from due time)")
    ax = axes[1]
    line(ax, timeline["freshness_p50_s"], "p50")
    line(ax, timeline["freshness_p99_s"], "p99")
    ax.axhline(TARGET_FRESHNESS_P99_S, color="red", lw=0.8, ls="--", label="p99 target")
    ax.set_yscale("log")
    ax.set_ylabel("count freshness s\n(accepted -> count API)")
    ax = axes[2]
    line(ax, timeline["outbox_rows"], "outbox pending rows")
    ax.set_ylabel("outbox rows")
    twin = ax.twinx()
    line(twin, timeline["outbox_oldest_s"], "oldest pending age (s)", color="tab:orange")
    twin.set_ylabel("oldest age s")
    twin.legend(loc="upper right", fontsize=8)
    ax = axes[3]
    for group, series in timeline["lag"].items():
        line(ax, series, group)
    ax.set_ylabel("consumer lag\n(records, signatures)")
    ax = axes[4]
    line(ax, timeline["offered_per_s"], "offered/s", ls=":")
    line(ax, timeline["accepted_per_s"], "accepted/s")
    line(ax, timeline["emails_per_s"], "emails into sink/s")
    ax.set_ylabel("per second")
    ax = axes[5]
    for name, series in timeline.get("cpu_cores", {}).items():
        # Averaged over 5 s: one-second samples of a process's CPU are too jumpy to read.
        smooth = {
            t: float(np.mean([series[u] for u in range(t - 4, t + 1) if u in series]))
            for t in series
        }
        line(ax, smooth, name)
    ax.set_ylabel("CPU, cores\n(5-s average)")
    ax.set_xlabel("seconds since the first step started")
    for ax in axes:
        for s in steps:
            ax.axvspan(s["t_start"], s["t_end"], color="grey", alpha=0.08)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    for s in steps:
        where = axes[0].get_xaxis_transform()
        axes[0].text(s["t_start"], 1.02, f"{s['rate']:,.0f}/s", transform=where, fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
