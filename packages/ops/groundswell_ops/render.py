"""The monitor's terminal view: a `Snapshot` as rich tables. No I/O beyond the console."""

from __future__ import annotations

from rich.columns import Columns
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from groundswell_ops.dlq import DLQ_SUFFIX
from groundswell_ops.snapshot import Snapshot

TREND_STYLE = {"growing": ("▲ growing", "bold red"), "shrinking": ("▼ falling", "green")}


def _rate(value: float | None) -> str:
    return "…" if value is None else f"{value:,.0f}/s" if value >= 10 else f"{value:,.1f}/s"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 60 else f"{seconds / 60:.1f}min"


def topics_table(snapshot: Snapshot) -> Table:
    table = Table(title="Topics: end offset per partition, records in", title_justify="left")
    table.add_column("topic")
    table.add_column("end offsets by partition (in/s)")
    table.add_column("total", justify="right")
    table.add_column("in", justify="right")
    for row in snapshot.topics:
        if row.topic.endswith(DLQ_SUFFIX):
            continue  # the dead-letter table shows these
        cells = Text()
        for part in row.partitions:
            cells.append(f"{part.partition}:", style="dim")
            cells.append(f"{part.end:,}")
            if part.per_second:
                cells.append(f" +{part.per_second:,.0f}", style="cyan")
            cells.append("  ")
        busy = bool(row.per_second)
        table.add_row(
            row.topic,
            cells,
            f"{row.end:,}",
            Text(_rate(row.per_second), style="cyan" if busy else "dim"),
        )
    return table


def groups_table(snapshot: Snapshot) -> Table:
    table = Table(title="Consumer groups: lag (records not yet handled)", title_justify="left")
    table.add_column("group")
    table.add_column("topic")
    table.add_column("lag by partition")
    table.add_column("lag", justify="right")
    table.add_column("trend")
    table.add_column("handled", justify="right")
    for group in snapshot.groups:
        by_topic: dict[str, list[tuple[int, int]]] = {}
        for (topic, partition), lag in group.partitions.items():
            by_topic.setdefault(topic, []).append((partition, lag))
        label, style = TREND_STYLE.get(group.trend, ("= steady", "dim"))
        first = True
        for topic, lags in by_topic.items() or {"-": []}.items():
            cells = Text()
            for partition, lag in lags:
                cells.append(f"{partition}:", style="dim")
                cells.append(f"{lag:,}  ", style="yellow" if lag else "")
            total = sum(lag for _, lag in lags)
            table.add_row(
                group.group if first else "",
                topic,
                cells,
                Text(f"{total:,}", style="bold yellow" if total else "green"),
                Text(label, style=style) if first else "",
                _rate(group.consumed_per_second) if first else "",
            )
            first = False
    return table


def side_tables(snapshot: Snapshot) -> Columns:
    dead = Table(title="Dead letters", title_justify="left")
    for name in ("topic", "held", "redriven", "waiting"):
        dead.add_column(name, justify="left" if name == "topic" else "right")
    for d in snapshot.dead_letters:
        waiting = Text(f"{d.waiting:,}", style="bold red" if d.waiting else "green")
        dead.add_row(d.topic, f"{d.total:,}", f"{d.redriven:,}", waiting)

    outbox = Table(title="Outbox (unpublished)", title_justify="left")
    for name in ("schema", "pending", "oldest"):
        outbox.add_column(name, justify="left" if name == "schema" else "right")
    for box in snapshot.outbox:
        if not box.present:
            outbox.add_row(box.schema, Text("no table", style="dim"), "-")
            continue
        pending = Text(f"{box.pending:,}", style="yellow" if box.pending else "green")
        outbox.add_row(box.schema, pending, _age(box.oldest_age_seconds))

    services = Table(title="Services", title_justify="left")
    for name in ("service", "healthz", "readyz"):
        services.add_column(name)
    for s in snapshot.services:
        alive = Text("ok", style="green") if s.alive else Text(s.error or "down", style="bold red")
        if s.ready:
            ready = Text("ready", style="green")
        else:
            ready = Text(", ".join(s.failing) or "not ready", style="bold red")
        services.add_row(f"{s.name} {s.url}", alive, ready)

    return Columns([dead, outbox, services], padding=(0, 3))


def findings_panel(snapshot: Snapshot) -> Panel:
    found = snapshot.findings
    if not found:
        return Panel(Text("events flow; nothing piles up", style="green"), title="findings")
    body = Text("\n".join(f"• {f}" for f in found), style="bold red")
    return Panel(body, title=f"findings ({len(found)})", border_style="red")


def render(snapshot: Snapshot) -> RenderableType:
    title = Text.assemble(
        ("groundswell-ops monitor", "bold"),
        f"   {snapshot.taken_at}   Kafka {snapshot.bootstrap}",
    )
    return Group(
        title,
        topics_table(snapshot),
        groups_table(snapshot),
        side_tables(snapshot),
        findings_panel(snapshot),
    )
