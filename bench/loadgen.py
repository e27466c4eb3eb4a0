"""HTTP/1.1 load generator, run as its own process so its CPU is measured apart.

    python bench/loadgen.py --plan PLAN.npz --port 8001 --rate 1000 --seconds 60 --out RESULT.npz
    python bench/loadgen.py --plan PLAN.npz --port 8001 --closed 64 --seconds 10 --out RESULT.npz

Open loop (`--rate`): request i is due at t0 + i/rate whatever happened to the earlier
ones, and its latency is counted from that due time, so a slow server cannot slow the
clock down (no coordinated omission). Requests go over keep-alive connections taken
from a pool; when every connection is busy a new one is opened (up to
`--max-connections`), else the request waits for the next free one, and that wait is
part of its latency. Closed loop (`--closed N`): N connections, each sending its next
request as soon as the answer to the previous one arrives; latency from the send.

The requests are prebuilt bytes (bench/bodies.py); responses are parsed only as far as
the status line and the body length. uvloop drives the sockets. The result file holds,
per request, when it was due, dispatched, written and answered, and the status (0 = the
connection failed, -1 = no answer before the end). The process reports its own CPU time
over the sending window, so a reader can tell when the generator, not the server, was
the limit.

Two engines do this: `loadgen.c`, compiled on first use with the machine's C compiler
(into `bench/.build/`, once per version of the source), and this file's uvloop one, used
when there is no compiler or with `--engine python`. They keep the same rules and write
the same records; the compiled one costs a fraction of the CPU (the bench shares the box
with the stack it measures). The summary names the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import uvloop

CONNECTION_FAILED = 0
NO_ANSWER = -1
# Idle keep-alive connections older than this are not reused (servers here close them
# after 5 s).
IDLE_REUSE_SECONDS = 3.0
ENGINE_SOURCE = Path(__file__).with_name("loadgen.c")
BUILD_DIR = Path(__file__).with_name(".build")
RECORDS = ("due_at", "dispatched_at", "sent_at", "done_at")


class Connection(asyncio.Protocol):
    def __init__(self, gen: Generator) -> None:
        self.gen = gen
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.current = -1
        self.alive = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  (uvloop's is not a subclass)
        self.alive = True
        self.gen.opened(self)

    def send(self, i: int) -> None:
        assert self.transport is not None
        self.current = i
        self.gen.sent_at[i] = time.monotonic()
        self.transport.write(self.gen.request(i))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while self.current >= 0:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buffer[:end]).lower()
            at = head.find(b"\r\ncontent-length:")
            if at >= 0:
                stop = head.find(b"\r\n", at + 2)
                length = int(head[at + 17 : stop if stop > 0 else len(head)])
                total = end + 4 + length
            elif b"transfer-encoding: chunked" in head:
                last = self.buffer.find(b"\r\n0\r\n\r\n", end)
                if last < 0:
                    return
                total = last + 7
            else:
                total = end + 4
            if len(self.buffer) < total:
                return
            status = int(self.buffer[9:12])
            close = b"\r\nconnection: close" in head
            del self.buffer[:total]
            i, self.current = self.current, -1
            self.gen.answered(self, i, status, close)

    def connection_lost(self, exc: Exception | None) -> None:
        self.alive = False
        if self.current >= 0:
            i, self.current = self.current, -1
            self.gen.answered(self, i, CONNECTION_FAILED, True)
        self.gen.lost(self)


class Generator:
    def __init__(self, args: argparse.Namespace, blob: bytes, offsets: np.ndarray) -> None:
        self.args = args
        self.blob = memoryview(blob)
        self.offsets = offsets.tolist()
        self.n = len(self.offsets) - 1
        self.due_at = np.full(self.n, np.nan)
        self.dispatched_at = np.full(self.n, np.nan)
        self.sent_at = np.full(self.n, np.nan)
        self.done_at = np.full(self.n, np.nan)
        self.status = np.full(self.n, NO_ANSWER, dtype=np.int16)
        self.idle: list[Connection] = []
        self.waiting: collections.deque[int] = collections.deque()
        self.connections: set[Connection] = set()
        self.opening = 0
        self.connect_failures = 0
        self.outstanding = 0
        self.next_closed = 0
        self.closed_until = 0.0
        self.all_answered = asyncio.Event()

    def request(self, i: int) -> memoryview:
        return self.blob[self.offsets[i] : self.offsets[i + 1]]

    # --- connections -------------------------------------------------------------------

    def open_one(self) -> None:
        self.opening += 1
        loop = asyncio.get_running_loop()
        task = loop.create_task(
            loop.create_connection(lambda: Connection(self), self.args.host, self.args.port)
        )
        task.add_done_callback(self._connect_done)

    def _connect_done(self, task: asyncio.Task[object]) -> None:
        self.opening -= 1
        if task.cancelled() or task.exception() is not None:
            self.connect_failures += 1

    def opened(self, conn: Connection) -> None:
        self.connections.add(conn)
        self.free(conn)

    def lost(self, conn: Connection) -> None:
        self.connections.discard(conn)
        if conn in self.idle:
            self.idle.remove(conn)
        if self.waiting and len(self.connections) + self.opening < self.args.max_connections:
            self.open_one()

    def free(self, conn: Connection) -> None:
        if not conn.alive:
            return
        if self.args.closed and self.closed_until:
            if time.monotonic() < self.closed_until and self.next_closed < self.n:
                i = self.next_closed
                self.next_closed += 1
                self.due_at[i] = self.dispatched_at[i] = time.monotonic()
                self.outstanding += 1
                conn.send(i)
            return
        if self.waiting:
            conn.send(self.waiting.popleft())
        else:
            conn.idle_since = time.monotonic()
            self.idle.append(conn)  # LIFO: the least used ones may idle out harmlessly

    def answered(self, conn: Connection, i: int, status: int, close: bool) -> None:
        self.done_at[i] = time.monotonic()
        self.status[i] = status
        self.outstanding -= 1
        if self.outstanding == 0 and self.dispatch_finished:
            self.all_answered.set()
        if close:
            if conn.transport is not None:
                conn.transport.close()
        else:
            self.free(conn)

    dispatch_finished = False

    def dispatch(self, i: int, due: float) -> None:
        self.due_at[i] = due
        self.dispatched_at[i] = time.monotonic()
        self.outstanding += 1
        while self.idle:
            conn = self.idle.pop()
            if conn.alive and self.dispatched_at[i] - conn.idle_since < IDLE_REUSE_SECONDS:
                conn.send(i)
                return
            # The server may be closing it this very moment (keep-alive timeout): a
            # request written into that race fails for a reason no real client suffers.
            if conn.transport is not None:
                conn.transport.close()
        self.waiting.append(i)
        if len(self.connections) + self.opening < self.args.max_connections:
            self.open_one()

    # --- runs --------------------------------------------------------------------------

    async def warm(self, count: int) -> None:
        for _ in range(count):
            self.open_one()
        deadline = time.monotonic() + 10
        while len(self.connections) + self.connect_failures < count:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)

    async def open_loop(self) -> tuple[float, float]:
        rate = self.args.rate
        count = min(self.n, int(rate * self.args.seconds))
        t0 = time.monotonic() + 0.05
        i = 0
        while i < count:
            now = time.monotonic()
            due = min(count, int((now - t0) * rate) + 1)
            while i < due:
                self.dispatch(i, t0 + i / rate)
                i += 1
            if i < count:
                await asyncio.sleep(max(0.0, t0 + i / rate - time.monotonic()))
        self.dispatch_finished = True
        self.n_planned = count
        return t0, t0 + count / rate

    async def closed_loop(self) -> tuple[float, float]:
        t0 = time.monotonic()
        self.closed_until = t0 + self.args.seconds
        for conn in list(self.idle):
            self.idle.remove(conn)
            self.free(conn)
        while len(self.connections) + self.opening < self.args.closed:
            self.open_one()
        await asyncio.sleep(max(0.0, self.closed_until - time.monotonic()))
        self.dispatch_finished = True
        self.n_planned = self.next_closed
        return t0, self.closed_until


async def run_python(args: argparse.Namespace) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    plan = np.load(args.plan)
    gen = Generator(args, plan["blob"].tobytes(), plan["offsets"])
    await gen.warm(args.closed or min(args.warm_connections, args.max_connections))
    cpu0, wall0 = time.process_time(), time.monotonic()
    start, end = await (gen.closed_loop() if args.closed else gen.open_loop())
    cpu_send, wall_send = time.process_time() - cpu0, time.monotonic() - wall0
    if gen.outstanding:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(gen.all_answered.wait(), args.answer_timeout)
    cpu_all, wall_all = time.process_time() - cpu0, time.monotonic() - wall0
    for conn in list(gen.connections):
        if conn.transport is not None:
            conn.transport.close()
    n = gen.n_planned
    records = {name: getattr(gen, name)[:n] for name in RECORDS}
    records["status"] = gen.status[:n]
    facts = {
        "start": start,
        "end": end,
        "planned": n,
        "connections_open_at_end": len(gen.connections),
        "connect_failures": gen.connect_failures,
        "cpu_seconds_sending": cpu_send,
        "wall_seconds_sending": wall_send,
        "cpu_seconds_total": cpu_all,
        "wall_seconds_total": wall_all,
    }
    return records, facts


def compiled_engine() -> Path | None:
    """The C engine's binary, built once per version of its source; None when there is
    no C compiler or the build fails (the Python engine runs instead)."""
    compiler = shutil.which(os.environ.get("CC", "cc"))
    if compiler is None:
        return None
    digest = hashlib.sha256(ENGINE_SOURCE.read_bytes()).hexdigest()[:16]
    binary = BUILD_DIR / f"loadgen-{digest}"
    if binary.exists():
        return binary
    BUILD_DIR.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=BUILD_DIR) as tmp:
        built = Path(tmp) / "loadgen"
        argv = [compiler, "-O2", "-Wall", "-o", str(built), str(ENGINE_SOURCE), "-lm"]
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            print(
                f"loadgen.c did not build, using the Python engine:\n{done.stderr}", file=sys.stderr
            )
            return None
        built.replace(binary)  # atomic: a concurrent build finds a whole file or none
    for older in BUILD_DIR.glob("loadgen-*"):
        if older != binary:
            with contextlib.suppress(OSError):
                older.unlink()
    return binary


def run_compiled(
    args: argparse.Namespace, binary: Path
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    with np.load(args.plan) as plan, tempfile.TemporaryDirectory() as tmp:
        blob, offsets, out = (Path(tmp) / name for name in ("blob", "offsets", "out"))
        plan["blob"].tofile(blob)
        plan["offsets"].astype(np.int64).tofile(offsets)
        argv = [str(binary), str(blob), str(offsets), str(out), args.host, str(args.port)]
        argv += [repr(args.rate), str(args.closed), repr(args.seconds)]
        argv += [str(args.max_connections), str(args.warm_connections)]
        argv += [repr(args.answer_timeout)]
        done = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
        if done.returncode != 0:
            sys.exit(f"the compiled load generator failed ({done.returncode})")
        facts = json.loads(done.stdout.strip().splitlines()[-1])
        n = facts["planned"]
        raw = np.fromfile(out, dtype=np.uint8)
    times = raw[: 4 * 8 * n].view(np.float64).reshape(4, n)
    records = {name: times[k].copy() for k, name in enumerate(RECORDS)}
    records["status"] = raw[4 * 8 * n :].view(np.int16).copy()
    return records, facts


def summarise(
    args: argparse.Namespace, engine: str, records: dict[str, np.ndarray], facts: dict[str, Any]
) -> dict[str, Any]:
    sent = records["sent_at"]
    sent = sent[~np.isnan(sent)]
    span = float(sent.max() - sent.min()) if len(sent) > 1 else 0.0
    wall_send = facts["wall_seconds_sending"]
    return {
        "mode": "closed" if args.closed else "open",
        "engine": engine,
        "start": facts["start"],
        "end": facts["end"],
        "planned": facts["planned"],
        "sent": len(sent),
        "achieved_send_rate": (len(sent) - 1) / span if span > 0 else 0.0,
        "connections_max": args.closed or args.max_connections,
        "connections_open_at_end": facts["connections_open_at_end"],
        "connect_failures": facts["connect_failures"],
        "cpu_seconds_sending": facts["cpu_seconds_sending"],
        "cpu_share_sending": facts["cpu_seconds_sending"] / wall_send if wall_send else 0.0,
        "cpu_seconds_total": facts["cpu_seconds_total"],
        "wall_seconds_total": facts["wall_seconds_total"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--plan", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--rate", type=float, default=0.0)
    parser.add_argument("--closed", type=int, default=0, help="closed loop with N connections")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--max-connections", type=int, default=512)
    parser.add_argument("--warm-connections", type=int, default=32)
    parser.add_argument("--answer-timeout", type=float, default=30.0)
    parser.add_argument("--engine", choices=("auto", "c", "python"), default="auto")
    args = parser.parse_args()
    if not args.closed and args.rate <= 0:
        parser.error("give --rate (open loop) or --closed N")
    binary = compiled_engine() if args.engine != "python" else None
    if args.engine == "c" and binary is None:
        parser.error("no C compiler built bench/loadgen.c")
    if binary is not None:
        engine = "c"
        records, facts = run_compiled(args, binary)
    else:
        engine = "python"
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
        records, facts = uvloop.run(run_python(args))
    np.savez(args.out, **records)
    print(json.dumps(summarise(args, engine, records, facts)), flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
