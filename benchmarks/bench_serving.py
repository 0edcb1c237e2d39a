"""HTTP load test of ``vitrina serve`` with wrk: paced load, saturation, and a hot swap under load.

    python benchmarks/bench_serving.py                     # Popular + EASE on MovieLens 100K
    python benchmarks/bench_serving.py --dataset beauty --models popular,esasrec:epochs=3

For each model: train on all of the dataset (``vitrina.evaluation.training.fit_on_all``), save,
start the service (real uvicorn subprocess, one worker),
then run wrk (Debian ``wrk``; POST bodies from a Lua script) twice: paced at ``--rate`` requests/s
(connections with a think time) and unpaced at saturation. During the paced run of the first
model the bundle is hot-swapped every second through ``/admin/model``. Prints a markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

from vitrina.data.datasets import load_dataset
from vitrina.data.filtering import to_implicit
from vitrina.evaluation.config import parse_models
from vitrina.evaluation.training import fit_on_all
from vitrina.models.registry import make_model

TOKEN = "bench"

LUA = r"""
local users = tonumber(os.getenv("BENCH_USERS") or "943")
local items = tonumber(os.getenv("BENCH_ITEMS") or "1682")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "0")
local bad = 0
local threads = {}
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
function setup(thread) table.insert(threads, thread) end
function init(args) math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16)) end
function request()
  local u = math.random(1, users + users / 10)  -- about 9% unknown users (fallbacks)
  local body
  if math.random() < 0.2 then
    body = string.format('{"history": [%d, %d, %d], "k": 10}', math.random(1, items), math.random(1, items),
                         math.random(1, items))
  else
    body = string.format('{"user_id": %d, "k": 10, "filters": {"exclude_seen": true}}', u)
  end
  return wrk.format(nil, "/recommend", nil, body)
end
function delay() return delay_ms end
function response(status, headers, body) if status ~= 200 then bad = bad + 1 end end
function done(summary, latency, requests)
  local e = summary.errors
  io.write("BENCH_JSON ", string.format(
    '{"requests": %d, "seconds": %.3f, "p50_ms": %.3f, "p99_ms": %.3f, "max_ms": %.3f, '
    .. '"socket_errors": %d, "non_2xx": %d}\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, e.connect + e.read + e.write + e.timeout, e.status))
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(model_dir: Path, port: int, state: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "vitrina.serving.cli", str(model_dir), "--port", str(port)]
    cmd += ["--admin-token", TOKEN, "--state-db", str(state), "--sqlite-sync", "normal"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
    for _ in range(600):
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("service did not start")


def wrk(port: int, seconds: int, connections: int, delay_ms: float, script: Path) -> dict[str, float]:
    env = {**os.environ, "BENCH_DELAY_MS": str(delay_ms)}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--timeout", "2s", "-s", str(script)]
    out = subprocess.run(
        [*cmd, f"http://127.0.0.1:{port}"], capture_output=True, text=True, env=env, check=True
    )
    line = next(x for x in out.stdout.splitlines() if x.startswith("BENCH_JSON "))
    res = json.loads(line.removeprefix("BENCH_JSON "))
    res["rps"] = res["requests"] / res["seconds"]
    return res


def swapper(port: int, dirs: list[Path], stop: threading.Event, outcomes: list[int]) -> None:
    i = 0
    while not stop.wait(1.0):
        r = httpx.post(
            f"http://127.0.0.1:{port}/admin/model",
            json={"model_dir": str(dirs[i % len(dirs)])},
            headers={"Authorization": f"Bearer {TOKEN}"},
            timeout=30,
        )
        outcomes.append(r.status_code)
        i += 1


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="ml-100k", help="named dataset (ids 1..n), e.g. beauty")
    parser.add_argument("--models", default="popular,ease", help="model specs, e.g. popular,esasrec:epochs=3")
    parser.add_argument("--rate", type=float, default=300.0, help="paced target, requests/s")
    parser.add_argument("--duration", type=int, default=15, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=10, help="connections of the paced run")
    parser.add_argument("--saturation-connections", type=int, default=16)
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk not found: apt-get install -y wrk")
    df = to_implicit(load_dataset(args.dataset))
    os.environ["BENCH_USERS"] = str(df["user_id"].max())
    os.environ["BENCH_ITEMS"] = str(df["item_id"].max())
    tmp = Path(tempfile.mkdtemp(prefix="vitrina-bench-"))
    script = tmp / "recommend.lua"
    script.write_text(LUA)
    rows = []
    runs = parse_models(args.models)
    names = [r.name for r in runs]
    dirs = {}
    for run in runs:
        name = run.name
        t0 = time.perf_counter()
        dirs[name] = fit_on_all(make_model(name, run.params), df).save(tmp / name, name=name)
        print(f"trained {name} in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    for n, name in enumerate(names):
        port = free_port()
        proc = start(dirs[name], port, tmp / f"{name}.sqlite")
        try:
            wrk(port, 3, args.connections, 0, script)  # warm-up
            # each connection waits delay_ms between requests: rate ~= connections / (delay + latency)
            delay = max(0.0, 1000.0 * args.connections / args.rate - 3.0)
            stop, outcomes = threading.Event(), []
            swap = None
            if n == 0:
                swap_dirs = [dirs[x] for x in names[1:]] + [dirs[name]]
                swap = threading.Thread(target=swapper, args=(port, swap_dirs, stop, outcomes))
                swap.start()
            paced = wrk(port, args.duration, args.connections, delay, script)
            stop.set()
            if swap is not None:
                swap.join()
            # back to the model under test before the saturation run
            httpx.post(
                f"http://127.0.0.1:{port}/admin/model",
                json={"model_dir": str(dirs[name])},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=30,
            )
            sat = wrk(port, args.duration, args.saturation_connections, 0, script)
        finally:
            proc.terminate()
            proc.wait(10)
        swaps = f"{outcomes.count(200)}/{len(outcomes)}" if n == 0 else "-"
        rows.append((name, paced, sat, swaps))
    print(f"\ndataset: {args.dataset}, {df.height:,} events; models: {args.models}")
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.processor() or 'cpu'}, "
        f"Python {platform.python_version()}"
    )
    print(
        f"paced: {args.connections} connections at ~{args.rate:.0f} req/s; saturation: "
        f"{args.saturation_connections} connections; {args.duration} s each; wrk -t1 on the same machine\n"
    )
    head = "| model | paced req/s | p50 ms | p99 ms | max ms | errors | swaps ok "
    head += "| saturation req/s | sat p50 | sat p99 | sat max | sat errors |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    for name, p, s, swaps in rows:
        print(
            f"| {name} | {p['rps']:.0f} | {p['p50_ms']:.2f} | {p['p99_ms']:.2f} | {p['max_ms']:.1f} | "
            f"{p['socket_errors'] + p['non_2xx']} | {swaps} | {s['rps']:.0f} | {s['p50_ms']:.2f} | "
            f"{s['p99_ms']:.2f} | {s['max_ms']:.1f} | {s['socket_errors'] + s['non_2xx']} |"
        )
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
