"""`groundswell-stack up` (what `make up` runs): it serves, and Ctrl-C leaves nothing behind."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil
from groundswell_stack.processes import free_port

from .conftest import eventually


def our_processes(run_dir: Path, ports: list[int]) -> list[str]:
    """Processes that mention our run folder or one of our ports."""
    listing = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True, check=True)
    marks = [str(run_dir), *(f"127.0.0.1:{p}" for p in ports), *(f"--port {p}" for p in ports)]
    return [line for line in listing.stdout.splitlines() if any(m in line for m in marks)]


def processes_with_env(name: str, value: str) -> list[psutil.Process]:
    """Our service processes (group leaders), found by a variable only our stack set."""
    found = []
    for process in psutil.process_iter():
        try:
            if process.environ().get(name) == value and os.getpgid(process.pid) == process.pid:
                found.append(process)
        except (psutil.Error, ProcessLookupError):
            continue
    return found


def sign(signing: str, email: str) -> httpx.Response:
    return httpx.post(
        f"{signing}/api/petitions/local-contact-tracing/signatures",
        json={"name": "Make Up", "email": email, "postcode": "OX1 2JD", "contact_consent": True},
    )


def counted(count_url: str) -> int | None:
    try:
        return int(httpx.get(count_url, timeout=2).json().get("signatures"))
    except (httpx.HTTPError, ValueError, TypeError):
        return None


def test_up_serves_the_demo_and_ctrl_c_stops_everything() -> None:
    # Not pytest's tmp_path: its parents are private to root, and PostgreSQL runs as postgres.
    tmp_path = Path(tempfile.mkdtemp(prefix="groundswell-up-"))
    tmp_path.chmod(0o755)
    run_dir = tmp_path / "run"
    ports = {
        name: free_port()
        for name in (
            "SIGNING_PORT",
            "COUNTER_PORT",
            "MAILER_PORT",
            "SHARING_PORT",
            "LOCAL_KAFKA_PORT",
            "LOCAL_SMTP_PORT",
            "POSTGRES_PORT",
        )
    }
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("DATABASE_URL", "KAFKA_BOOTSTRAP_SERVERS", "SMTP_HOST", "SMTP_PORT", "ADMIN_TOKEN")
    }
    env |= {k: str(v) for k, v in ports.items()}
    output = (tmp_path / "up.out").open("w")
    stack = subprocess.Popen(
        [str(Path(sys.executable).parent / "groundswell-stack"), "up", "--run-dir", str(run_dir)],
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    signing = f"http://127.0.0.1:{ports['SIGNING_PORT']}"
    counter = f"http://127.0.0.1:{ports['COUNTER_PORT']}"
    try:
        eventually(
            lambda: "Groundswell is running" in (tmp_path / "up.out").read_text(), timeout=180
        )
        printed = (tmp_path / "up.out").read_text()
        assert "Admin token" in printed and f"{signing}/p/local-contact-tracing" in printed
        signed = httpx.post(
            f"{signing}/api/petitions/local-contact-tracing/signatures",
            json={
                "name": "Make Up",
                "email": "make-up@example.org",
                "postcode": "OX1 2JD",
                "contact_consent": True,
            },
        )
        assert signed.status_code == 202
        count_url = f"{counter}/api/petitions/local-contact-tracing/count"
        eventually(lambda: httpx.get(count_url).json().get("signatures") == 1)
        eventually(lambda: list((run_dir / "mail").glob("*.eml")))

        # Issue 9: a service that dies is started again; the rest keeps running.
        [counter_process] = [
            p
            for p in processes_with_env("COUNTER_PORT", str(ports["COUNTER_PORT"]))
            if "groundswell-counter" in " ".join(p.cmdline())
        ]
        os.killpg(counter_process.pid, signal.SIGKILL)
        assert sign(signing, "second@example.org").status_code == 202
        eventually(lambda: counted(count_url) == 2, timeout=120)
        assert "counter stopped" in (tmp_path / "up.out").read_text()

        # The memory-only broker lost: it comes back empty, topics are made again with
        # our layout, PostgreSQL is replayed, and the count is exact, with no human.
        [broker] = [
            p
            for p in psutil.process_iter(["cmdline"])
            if f"tcp://127.0.0.1:{ports['LOCAL_KAFKA_PORT']}" in " ".join(p.info["cmdline"] or [])
        ]
        broker.kill()
        eventually(lambda: "Replay done" in (tmp_path / "up.out").read_text(), timeout=180)
        assert sign(signing, "third@example.org").status_code == 202
        eventually(lambda: counted(count_url) == 3, timeout=120)
    finally:
        stack.send_signal(signal.SIGINT)
        code = stack.wait(timeout=90)
        output.close()
    assert code == 0, (tmp_path / "up.out").read_text()[-3000:]
    assert "Everything Groundswell started has stopped." in (tmp_path / "up.out").read_text()
    time.sleep(0.5)
    assert our_processes(run_dir, list(ports.values())) == []
    shutil.rmtree(tmp_path, ignore_errors=True)
