"""`make up`: the whole stack in the foreground; Ctrl-C stops everything it started."""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

from groundswell_stack.demo import DEMO_SLUG, seed_demo
from groundswell_stack.infra import Infra, start_infra
from groundswell_stack.processes import port_open
from groundswell_stack.retention import RetentionLoop
from groundswell_stack.services import (
    ServiceSpec,
    clean_env,
    service_env,
    service_specs,
    start_service,
    wait_until_ready,
)
from groundswell_stack.state import admin_token as run_admin_token
from groundswell_stack.supervision import StackSupervisor, Supervised, replay

DEFAULT_KAFKA_PORT = 9092
DEFAULT_SMTP_PORT = 1025
DEFAULT_POSTGRES_PORT = 55432


class Stop(Exception):
    pass


def _on_signal(signum: int, _frame: FrameType | None) -> None:
    raise Stop(signal.Signals(signum).name)


def _say(line: str) -> None:
    print(line, flush=True)


def _check_ports_free(ports: dict[str, int]) -> None:
    busy = [f"{name} ({port})" for name, port in ports.items() if port_open(port)]
    if busy:
        raise SystemExit(
            "These ports are already in use: " + ", ".join(busy) + ". Stop what uses them, "
            "or choose others (e.g. SIGNING_PORT=9001, KAFKA_BOOTSTRAP_SERVERS=host:port)."
        )


def up(run_dir: Path) -> None:
    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)
    env = clean_env()
    specs = service_specs(env)
    wanted = {s.name: s.port for s in specs}
    if not env.get("KAFKA_BOOTSTRAP_SERVERS"):
        wanted["kafka"] = int(env.get("LOCAL_KAFKA_PORT", DEFAULT_KAFKA_PORT))
    if not env.get("SMTP_HOST"):
        wanted["smtp"] = int(env.get("LOCAL_SMTP_PORT", DEFAULT_SMTP_PORT))
    if not env.get("DATABASE_URL"):
        wanted["postgres"] = int(env.get("POSTGRES_PORT", DEFAULT_POSTGRES_PORT))
    _check_ports_free(wanted)

    run_dir.mkdir(parents=True, exist_ok=True)
    run_dir.chmod(0o755)  # the database runs as the postgres user when we are root
    # Kept in the run dir across restarts, so a token written down keeps working.
    admin_token, token_origin = run_admin_token(run_dir, env)
    infra: Infra | None = None
    services: list[Supervised] = []
    retention: RetentionLoop | None = None
    try:
        print("Starting PostgreSQL, Kafka (Tansu) and the SMTP sink...", flush=True)
        infra = start_infra(
            run_dir,
            kafka_port=wanted.get("kafka"),
            smtp_port=wanted.get("smtp"),
            postgres_port=wanted.get("postgres"),
        )
        if infra.postgres is not None:
            # Said at once: a cluster moved to the temp dir is otherwise hard to find.
            moved = not infra.postgres.data.is_relative_to(run_dir)
            print(
                f"  PostgreSQL data: {infra.postgres.data}"
                + (f" (the postgres user cannot enter {run_dir})" if moved else ""),
                flush=True,
            )
        if infra.smtp is not None:
            print(f"  SMTP sink: {infra.smtp_host}:{infra.smtp_port}, messages in {infra.mail_dir}")
        shared = service_env(env | infra.env() | {"ADMIN_TOKEN": admin_token}, specs)
        log_dir = run_dir / "logs"
        for spec in specs:
            services.append(Supervised(spec, start_service(spec, shared, log_dir)))
        for s in services:
            wait_until_ready(s.spec, s.process, timeout=120)
            print(f"  {s.spec.name} ready on {s.spec.url}", flush=True)
        if infra.broker is not None:
            # A fresh memory-only broker: republish what PostgreSQL knows so every
            # downstream view (counts, share stats) comes back exact.
            replay(shared)
        demo_url = seed_demo(specs[0].url, admin_token)
        _print_summary(specs, demo_url, (admin_token, token_origin), infra, log_dir)
        supervisor = StackSupervisor(services, infra, shared, log_dir, say=_say)
        retention = RetentionLoop(shared, run_dir, say=_say)
        while True:
            supervisor.tick()
            retention.tick()
            time.sleep(0.5)
    except Stop as stop:
        print(f"\nStopping ({stop})...", flush=True)
    finally:
        signal.signal(
            signal.SIGINT, signal.SIG_IGN
        )  # a second Ctrl-C must not cut the cleanup short
        if retention is not None:
            retention.stop()
        for s in reversed(services):
            s.process.stop()
        if infra is not None:
            infra.close()
        print("Everything Groundswell started has stopped.", flush=True)


def _print_summary(
    specs: list[ServiceSpec],
    demo_url: str,
    token: tuple[str, str],
    infra: Infra,
    log_dir: Path,
) -> None:
    admin_token, token_origin = token
    by_name = {s.name: s.url for s in specs}
    counts = f"{by_name['counter']}/api/petitions/{DEMO_SLUG}/count"
    lines = [
        "",
        "Groundswell is running. Press Ctrl-C to stop everything.",
        "",
        f"  Demo petition page    {demo_url}",
        f"  Signing API + docs    {by_name['signing']}/docs",
        f"  Counts (JSON)         {counts}",
        f"  Counts (live stream)  {counts}/stream",
        f"  Mailer docs           {by_name['mailer']}/docs",
        f"  Share stats           {by_name['sharing']}/api/petitions/{DEMO_SLUG}/shares",
        "  Health / metrics      <service>/healthz, /readyz, /metrics",
        f"  Kafka bootstrap       {infra.kafka_bootstrap}",
        f"  PostgreSQL            {infra.database_url}",
        *(
            [f"  PostgreSQL data       {infra.postgres.data} (`make clean` removes it)"]
            if infra.postgres is not None
            else []
        ),
        f"  SMTP                  {infra.smtp_host}:{infra.smtp_port}"
        + (f" (messages saved in {infra.mail_dir})" if infra.mail_dir else ""),
        f"  Service logs          {log_dir}/",
        "",
        f"  Admin token           {admin_token} ({token_origin})",
        "",
        "Try it:",
        f"  curl -s -X POST {by_name['signing']}/api/petitions/{DEMO_SLUG}/signatures \\",
        "    -H 'Content-Type: application/json' \\",
        '    -d \'{"name": "Ada Lovelace", "email": "ada@example.org", "postcode": "OX1 2JD", '
        '"contact_consent": true}\'',
        "",
    ]
    print("\n".join(lines), flush=True)
