"""Open-loop load generator for ``vitrina serve``: fixed arrival schedule, latency from the schedule.

    python benchmarks/loadgen.py --serve models/esasrec --dataset beauty --rates 100,200,500,1000
    python benchmarks/loadgen.py --port 8000 --dataset ml-100k --mix mixed --rates 100,300 --duration 10

Why open loop: a closed-loop client (wrk, locust with users) waits for each answer before sending
the next request, so when the server stalls it sends less and the stall is under-counted
("coordinated omission"). Here every request has a *scheduled* send time fixed before the run
(constant spacing or a Poisson process at the offered rate), is sent at that time whatever the
server is doing, and its latency is ``completion - scheduled time``: time spent waiting for a free
connection, in the kernel or in the server's queue all counts.

Request bodies come from the dataset the model was trained on (``--mix``):

* ``history-filter`` (the issue-16 target): ``POST /recommend`` with ``history`` = the last n items of
  a random real user (n uniform in 1..20, oldest first), ``k`` = 10 and ``deny_items`` = 3 items drawn
  by popularity from the event log.
* ``mixed``: 50% known ``user_id`` + the 3-item deny filter (``exclude_seen``), 10% unknown ``user_id``
  (popularity fallback), 25% ``history-filter``, 15% ``POST /slate`` for a known user with three
  carousels (``for_you``; ``beyond_top``, the 20 most popular items denied; ``fresh``, only the 500
  items most recently interacted with).

Bounded: each rate step lasts ``--duration`` seconds (at most ``--max-requests`` requests), requests
time out after ``--timeout`` seconds (counted as errors and as infinite latency in the percentiles),
the sweep stops after the first step whose p99 exceeds ``--stop-p99-ms``, and only loopback
addresses are accepted. The client is one asyncio process with raw HTTP/1.1 keep-alive sockets and
pre-serialised requests (about 60 µs of CPU per request with uvloop); it shares the machine with the
server, so its CPU use is reported per step, together with how late it dispatched requests
(``lag p99``: if that grows, the generator, not the server, is the bottleneck).

``--swap-every S --swap-dirs A,B`` hot-swaps the served bundle through ``/admin/model`` every S
seconds during each step and reports the p99 of requests scheduled while a swap was in progress.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import math
import os
import platform
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl

Process = Literal["constant", "poisson"]
Mix = Literal["history-filter", "mixed"]
PERCENTILES = (50.0, 90.0, 99.0, 99.9)


# --------------------------------------------------------------------------- schedule
def arrival_times(
    rate: float, duration_s: float, max_requests: int, process: Process, rng: np.random.Generator
) -> np.ndarray:
    """Scheduled send offsets (seconds from the step start), sorted, all ``< duration_s``.

    ``constant``: one request every ``1 / rate`` s starting at 0. ``poisson``: exponential gaps of
    mean ``1 / rate`` (the first one included). At most ``max_requests`` offsets.
    """
    if rate <= 0 or duration_s <= 0 or max_requests < 1:
        raise ValueError(
            f"need rate > 0, duration > 0, max_requests >= 1; got {rate}, {duration_s}, {max_requests}"
        )
    n = min(max_requests, math.ceil(rate * duration_s))
    if process == "constant":
        times = np.arange(n, dtype=np.float64) / rate
    else:
        # enough gaps to cover the duration with overwhelming probability, then cut
        gaps = rng.exponential(1.0 / rate, size=n + 10 * math.ceil(math.sqrt(n)) + 10)
        times = np.cumsum(gaps)
    return times[times < duration_s][:max_requests]


# --------------------------------------------------------------------------- request bodies
@dataclass(frozen=True)
class Workload:
    """What the request bodies are drawn from: chronological user histories and item popularity."""

    users: list[Any]
    histories: list[list[Any]]
    items: np.ndarray  # item ids, most popular first
    weights: np.ndarray  # their share of events
    recent: list[Any]  # the items most recently interacted with

    @classmethod
    def from_events(cls, df: pl.DataFrame) -> Workload:
        """From an implicit log with ``user_id``, ``item_id`` and ``timestamp``."""
        ordered = df.sort(["user_id", "timestamp"], maintain_order=True)
        grouped = ordered.group_by("user_id", maintain_order=True).agg(pl.col("item_id"))
        pop = df.group_by("item_id").len().sort(["len", "item_id"], descending=[True, False])
        recent = df.sort("timestamp", descending=True)["item_id"].unique(maintain_order=True).head(500)
        counts = pop["len"].to_numpy().astype(np.float64)
        return cls(
            users=grouped["user_id"].to_list(),
            histories=grouped["item_id"].to_list(),
            items=pop["item_id"].to_numpy(),
            weights=counts / counts.sum(),
            recent=recent.to_list(),
        )

    def _deny(self, rng: np.random.Generator, n: int = 3) -> list[Any]:
        return self.items[rng.choice(len(self.items), size=n, replace=False, p=self.weights)].tolist()

    def _history(self, rng: np.random.Generator) -> list[Any]:
        hist = self.histories[int(rng.integers(len(self.users)))]
        return list(hist[-int(rng.integers(1, 21)) :])

    def body(self, mix: Mix, rng: np.random.Generator) -> tuple[str, dict[str, Any]]:
        """One ``(path, JSON body)`` of the mix (see the module docstring)."""
        deny = {"deny_items": self._deny(rng)}
        u = rng.random() if mix == "mixed" else 1.0
        if u < 0.50:
            user = self.users[int(rng.integers(len(self.users)))]
            return "/recommend", {"user_id": user, "k": 10, "filters": deny}
        if u < 0.60:
            unknown = f"loadgen-unknown-{int(rng.integers(1 << 30))}"
            return "/recommend", {"user_id": unknown, "k": 10, "filters": deny}
        if u < 0.85 or mix == "history-filter":
            return "/recommend", {"history": self._history(rng), "k": 10, "filters": deny}
        user = self.users[int(rng.integers(len(self.users)))]
        carousels = [
            {"name": "for_you"},
            {"name": "beyond_top", "filters": {"deny_items": self.items[:20].tolist()}},
            {"name": "fresh", "filters": {"allow_items": self.recent}},
        ]
        return "/slate", {"user_id": user, "k": 8, "carousels": carousels}


def http_request(path: str, body: dict[str, Any], host: str) -> bytes:
    """A complete HTTP/1.1 keep-alive POST, serialised once before the run."""
    data = json.dumps(body, separators=(",", ":")).encode()
    head = f"POST {path} HTTP/1.1\r\nhost: {host}\r\ncontent-type: application/json\r\n"
    return head.encode() + f"content-length: {len(data)}\r\n\r\n".encode() + data


# --------------------------------------------------------------------------- client
async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """Send one request on a keep-alive connection and read the whole response; returns the status."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        raise ConnectionError("response without content-length")
    end = lower.index(b"\r\n", at + 2)
    await reader.readexactly(int(lower[at + 17 : end]))
    return status


class Pool:
    """Keep-alive connections, opened on demand up to ``size``; beyond that requests wait (and the
    wait counts in their latency). A connection idle for ``max_idle_s`` is closed instead of reused,
    well before the server's keep-alive timeout (uvicorn: 5 s) could close it under a request."""

    def __init__(self, host: str, port: int, size: int, max_idle_s: float = 1.0) -> None:
        self.host, self.port, self.max_idle_s = host, port, max_idle_s
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = []
        self._free = asyncio.Semaphore(size)
        self.opened = 0

    async def _connection(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        now = time.monotonic()
        while self._idle:
            reader, writer, since = self._idle.pop()
            if now - since < self.max_idle_s:
                return reader, writer
            writer.close()
        self.opened += 1
        return await asyncio.open_connection(self.host, self.port)

    async def request(self, raw: bytes) -> int:
        async with self._free:
            reader, writer = await self._connection()
            try:
                status = await exchange(reader, writer, raw)
            except BaseException:
                writer.close()  # a timed-out or broken connection is never reused
                raise
            self._idle.append((reader, writer, time.monotonic()))
            return status

    def close(self) -> None:
        for _, writer, _ in self._idle:
            writer.close()
        self._idle.clear()


@dataclass
class StepResult:
    """One rate step: offered vs achieved rate, latency percentiles from the schedule, errors, CPU."""

    rate: float
    sent: int
    ok: int
    errors: int
    error_kinds: dict[str, int]
    achieved_rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    p999_ms: float
    max_ms: float
    lag_p99_ms: float
    client_cpu_pct: float
    server_cpu_pct: float | None
    server_cpu_ms_per_req: float | None
    loadavg_1m: float
    connections: int
    swaps: list[dict[str, Any]] = field(default_factory=list)
    swap_p99_ms: float | None = None


def percentiles_ms(latencies: np.ndarray) -> list[float]:
    """p50/p90/p99/p99.9 and max in ms; timed-out requests are ``inf`` and push the tail to ``inf``."""
    if latencies.size == 0:
        return [float("nan")] * (len(PERCENTILES) + 1)
    ordered = np.sort(latencies)
    # nearest rank, so an infinite tail is reported as such instead of interpolated
    ranks = [min(len(ordered) - 1, math.ceil(p / 100 * len(ordered) - 1e-9) - 1) for p in PERCENTILES]
    return [float(ordered[r]) * 1e3 for r in ranks] + [float(ordered[-1]) * 1e3]


async def run_schedule(
    schedule: np.ndarray,
    send: Callable[[int], Awaitable[int]],
    timeout_s: float,
    clock: Callable[[], float] = time.perf_counter,
) -> tuple[np.ndarray, np.ndarray, list[str], float]:
    """Dispatch ``send(i)`` at ``start + schedule[i]`` without waiting for earlier answers.

    Returns ``(latency_s, dispatch_lag_s, outcome, start)``: latency is completion minus the
    *scheduled* time (``inf`` for anything but HTTP 200), the lag is how late the dispatcher started each
    request, and the outcome is ``"ok"`` (HTTP 200), ``"http <status>"``, ``"timeout"`` or the
    exception's class name.
    """
    n = len(schedule)
    latency = np.full(n, np.inf)
    lag = np.zeros(n)
    outcome = ["not sent"] * n

    async def one(i: int, due: float) -> None:
        try:
            status = await asyncio.wait_for(send(i), max(0.0, due + timeout_s - clock()))
        except TimeoutError:
            outcome[i] = "timeout"
            return
        except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
            outcome[i] = type(exc).__name__
            return
        if status == 200:  # a fast error must not flatter the tail: failures stay at inf
            latency[i] = clock() - due
        outcome[i] = "ok" if status == 200 else f"http {status}"

    start = clock()
    tasks = []
    i = 0
    while i < n:
        now = clock() - start
        while i < n and schedule[i] <= now:
            due = start + schedule[i]
            lag[i] = now - schedule[i]
            tasks.append(asyncio.ensure_future(one(i, due)))
            i += 1
        if i < n:
            await asyncio.sleep(max(0.0, schedule[i] - (clock() - start)))
    if tasks:
        await asyncio.wait(tasks)
    return latency, lag, outcome, start


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    stack = [pid]
    while stack:
        p = stack.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                stack += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def own_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def swapper(
    host: str, port: int, token: str, dirs: Sequence[str], every_s: float, stop: asyncio.Event, log: list
) -> None:
    """POST /admin/model every ``every_s`` seconds, cycling through ``dirs``; logs (start, end, status).

    One connection per swap (with ``--workers N`` the answer comes once every worker serves the new
    bundle, so the logged interval covers the whole swap)."""
    k = 0
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), every_s)
        if stop.is_set():
            return
        body = json.dumps({"model_dir": dirs[k % len(dirs)]}).encode()
        raw = (
            f"POST /admin/model HTTP/1.1\r\nhost: {host}\r\nauthorization: Bearer {token}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n\r\n"
        ).encode() + body
        t0 = time.perf_counter()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            status = await exchange(reader, writer, raw)
        finally:
            writer.close()
        log.append((t0, time.perf_counter(), status))
        k += 1


async def run_step(
    host: str,
    port: int,
    rate: float,
    requests: Sequence[bytes],
    args: argparse.Namespace,
    rng: np.random.Generator,
    server_pid: int | None,
) -> StepResult:
    schedule = arrival_times(rate, args.duration, args.max_requests, args.process, rng)
    picks = rng.integers(len(requests), size=len(schedule))
    pool = Pool(host, port, args.connections)
    swaps: list[tuple[float, float, int]] = []
    stop = asyncio.Event()
    swap_task = None
    if args.swap_every:
        swap_dirs = args.swap_dirs.split(",")
        swap_task = asyncio.ensure_future(
            swapper(host, port, args.admin_token, swap_dirs, args.swap_every, stop, swaps)
        )
    cpu0, srv0, wall0 = own_cpu(), cpu_seconds(server_pid) if server_pid else 0.0, time.perf_counter()
    latency, lag, outcome, start = await run_schedule(
        schedule, lambda i: pool.request(requests[picks[i]]), args.timeout
    )
    wall = time.perf_counter() - wall0
    cpu = own_cpu() - cpu0
    srv = (cpu_seconds(server_pid) - srv0) if server_pid else None
    stop.set()
    if swap_task is not None:
        await swap_task
    pool.close()
    ok = np.array([o == "ok" for o in outcome])
    kinds: dict[str, int] = {}
    for o in outcome:
        if o != "ok":
            kinds[o] = kinds.get(o, 0) + 1
    p50, p90, p99, p999, worst = percentiles_ms(latency)
    swap_p99 = None
    if swaps:
        during = np.zeros(len(schedule), dtype=bool)
        for t0, t1, _ in swaps:
            during |= (start + schedule >= t0) & (start + schedule <= t1)
        swap_p99 = percentiles_ms(latency[during])[2] if during.any() else None
    return StepResult(
        rate=rate,
        sent=len(schedule),
        ok=int(ok.sum()),
        errors=int((~ok).sum()),
        error_kinds=kinds,
        achieved_rps=float(ok.sum()) / wall,
        p50_ms=p50,
        p90_ms=p90,
        p99_ms=p99,
        p999_ms=p999,
        max_ms=worst,
        lag_p99_ms=float(np.percentile(lag, 99)) * 1e3 if len(lag) else 0.0,
        client_cpu_pct=100 * cpu / wall,
        server_cpu_pct=None if srv is None else 100 * srv / wall,
        server_cpu_ms_per_req=None if srv is None else 1e3 * srv / max(1, len(schedule)),
        loadavg_1m=os.getloadavg()[0],
        connections=pool.opened,
        swaps=[{"seconds": round(t1 - t0, 3), "status": s} for t0, t1, s in swaps],
        swap_p99_ms=swap_p99,
    )


# --------------------------------------------------------------------------- driver
def loopback(host: str) -> str:
    """Resolve ``host`` and refuse anything but a loopback address (this tool must not load others)."""
    addr = socket.gethostbyname(host)
    if not ipaddress.ip_address(addr).is_loopback:
        raise SystemExit(
            f"--host {host!r} resolves to {addr}, not a loopback address; loadgen is loopback-only"
        )
    return addr


def start_server(model_dir: str, port: int, extra: list[str], token: str) -> subprocess.Popen[bytes]:
    state = Path(tempfile.mkdtemp(prefix="vitrina-loadgen-")) / "state.sqlite"
    cmd = [sys.executable, "-m", "vitrina.serving.cli", model_dir, "--port", str(port)]
    cmd += ["--state-db", str(state), "--sqlite-sync", "normal", "--admin-token", token, *extra]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}: {' '.join(cmd)}")
        if healthy(port):
            break
        time.sleep(0.2)
    else:
        proc.kill()
        raise SystemExit("server did not start within 300 s")
    # With --workers N the port answers once one worker is up; the others are still loading the
    # model. Wait until the whole process tree is idle, so that no step competes with a start-up.
    while time.monotonic() < deadline:
        before = cpu_seconds(proc.pid)
        time.sleep(1.0)
        if cpu_seconds(proc.pid) - before < 0.05:
            break
    return proc


def healthy(port: int) -> bool:
    """``GET /health`` answers 200 on the loopback port."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=2) as conn:
        conn.sendall(b"GET /health HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\n\r\n")
        return conn.recv(64).startswith(b"HTTP/1.1 200")
    return False


def fmt(x: float | None, digits: int = 1) -> str:
    if x is None:
        return "-"
    return "inf" if math.isinf(x) else f"{x:.{digits}f}"


def table(results: list[StepResult]) -> str:
    head = (
        "| offered req/s | achieved req/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | errors "
        "| client CPU % | server CPU % | server CPU ms/req | lag p99 ms | load 1m |"
    )
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in results:
        errs = str(r.errors) + (
            f" ({', '.join(f'{k}: {v}' for k, v in r.error_kinds.items())})" if r.errors else ""
        )
        lines.append(
            f"| {r.rate:g} | {r.achieved_rps:.0f} | {fmt(r.p50_ms)} | {fmt(r.p90_ms)} | {fmt(r.p99_ms)} | "
            f"{fmt(r.p999_ms)} | {fmt(r.max_ms)} | {errs} | {r.client_cpu_pct:.0f} | "
            f"{fmt(r.server_cpu_pct)} | {fmt(r.server_cpu_ms_per_req, 2)} | {fmt(r.lag_p99_ms)} | "
            f"{r.loadavg_1m:.1f} |"
        )
    return "\n".join(lines)


async def sweep(args: argparse.Namespace, host: str, requests: list[bytes], server_pid: int | None) -> list:
    rng = np.random.default_rng(args.seed)
    if args.warmup > 0:
        warm = argparse.Namespace(**{**vars(args), "duration": args.warmup, "swap_every": 0})
        await run_step(host, args.port, float(args.rates.split(",")[0]), requests, warm, rng, server_pid)
    results = []
    for rate in (float(r) for r in args.rates.split(",")):
        res = await run_step(host, args.port, rate, requests, args, rng, server_pid)
        results.append(res)
        print(json.dumps(asdict(res)), file=sys.stderr, flush=True)
        if res.p99_ms > args.stop_p99_ms:
            break
        await asyncio.sleep(args.pause)  # let the server drain before the next step
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1", help="loopback only")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--serve", metavar="MODEL_DIR", help="start `vitrina serve MODEL_DIR` on --port first"
    )
    parser.add_argument("--server-pid", type=int, help="measure this server's CPU (with its children)")
    parser.add_argument("--serve-args", default="", help="extra `vitrina serve` flags, e.g. '--workers 2'")
    parser.add_argument(
        "--dataset",
        default="ml-100k",
        help="dataset the model was trained on (request bodies): a name, or a FILE.parquet log "
        "from `vitrina datasets synth`",
    )
    parser.add_argument("--mix", choices=["history-filter", "mixed"], default="history-filter")
    parser.add_argument("--rates", default="100,200,300,500,700,1000", help="offered req/s per step")
    parser.add_argument("--process", choices=["constant", "poisson"], default="poisson")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per step")
    parser.add_argument("--max-requests", type=int, default=20_000, help="cap per step")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds at the first rate, not reported")
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between steps")
    parser.add_argument("--timeout", type=float, default=2.0, help="per-request timeout, s (an error)")
    parser.add_argument("--connections", type=int, default=256, help="most open connections")
    parser.add_argument("--stop-p99-ms", type=float, default=1000.0, help="stop the sweep past this p99")
    parser.add_argument("--bodies", type=int, default=5000, help="distinct request bodies drawn")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--swap-every", type=float, default=0.0, help="hot-swap period in s (0: off)")
    parser.add_argument("--swap-dirs", default="", help="comma-separated model dirs to cycle through")
    parser.add_argument("--admin-token", default="loadgen")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    args = parser.parse_args()
    host = loopback(args.host)
    if args.swap_every and not args.swap_dirs:
        parser.error("--swap-every needs --swap-dirs")

    from vitrina.data.datasets import load_dataset
    from vitrina.data.filtering import to_implicit

    events = (
        pl.read_parquet(args.dataset, columns=["user_id", "item_id", "timestamp"])
        if args.dataset.endswith(".parquet")
        else to_implicit(load_dataset(args.dataset))
    )
    workload = Workload.from_events(events)
    rng = np.random.default_rng(args.seed + 1)
    requests = [http_request(*workload.body(args.mix, rng), host) for _ in range(args.bodies)]
    proc = (
        start_server(args.serve, args.port, args.serve_args.split(), args.admin_token) if args.serve else None
    )
    try:
        with contextlib.suppress(ImportError):
            import uvloop

            asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
        results = asyncio.run(sweep(args, host, requests, proc.pid if proc else args.server_pid))
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    print(
        f"\n{stamp}; dataset {args.dataset}, mix {args.mix}, {args.process} arrivals, "
        f"{args.duration:g} s per step; {platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; server: "
        f"{args.serve or f'port {args.port}'} {args.serve_args}\n"
    )
    print(table(results))
    swapped = [r for r in results if r.swaps]
    for r in swapped:
        ok = sum(s["status"] == 200 for s in r.swaps)
        worst = max(s["seconds"] for s in r.swaps)
        print(
            f"swaps at {r.rate:g} req/s: {ok}/{len(r.swaps)} ok, slowest {worst:.2f} s, p99 during swaps "
            f"{fmt(r.swap_p99_ms)} ms, failed requests {r.errors}"
        )
    if args.out:
        args.out.write_text(json.dumps([asdict(r) for r in results], indent=1))
    if shutil.which("uptime"):
        subprocess.run(["uptime"], check=False)


if __name__ == "__main__":
    main()
