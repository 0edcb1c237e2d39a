"""CPU time per request through the whole FastAPI app, in process, by concurrency.

    python benchmarks/serving_cpu.py MODEL_DIR --dataset beauty --concurrency 1,8,32

On a machine shared with other jobs, latency mostly measures the scheduler; the CPU a request
costs does not (beyond cache effects), and one core divided by it is the most requests per second
one server process can answer. This calls the ASGI app directly (middleware, validation,
dependencies, ranking, response serialisation; not uvicorn's socket and HTTP parsing) with the
``loadgen.py`` request mix, ``--concurrency`` requests at a time (concurrent requests share a
model call where the service batches them), and reports process CPU microseconds per request and
the wall time per request in the single-request case.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def _loadgen() -> Any:
    spec = importlib.util.spec_from_file_location("loadgen", Path(__file__).with_name("loadgen.py"))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["loadgen"] = module
    spec.loader.exec_module(module)
    return module


async def call(app: Any, path: str, body: bytes) -> int:
    """One request through the ASGI app; returns the status."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status = 0
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:
            await asyncio.Event().wait()  # the app only waits here for a disconnect
        delivered = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(scope, receive, send)
    return status


async def measure(app: Any, bodies: list[tuple[str, bytes]], concurrency: int, n: int) -> tuple[float, float]:
    """(CPU µs per request, wall µs per request) over ``n`` requests, ``concurrency`` at a time."""
    cpu0, wall0 = time.process_time(), time.perf_counter()
    for start in range(0, n, concurrency):
        batch = bodies[start : start + concurrency]
        statuses = await asyncio.gather(*(call(app, p, b) for p, b in batch))
        if any(s != 200 for s in statuses):
            raise SystemExit(f"a request failed: {statuses}")
    return 1e6 * (time.process_time() - cpu0) / n, 1e6 * (time.perf_counter() - wall0) / n


async def main_async(args: argparse.Namespace, bodies: list[tuple[str, bytes]]) -> None:
    from vitrina.serving.app import create_app
    from vitrina.serving.service import Settings

    state = Path(tempfile.mkdtemp(prefix="vitrina-cpu-")) / "state.sqlite"
    app = create_app(Settings(model_dir=args.model_dir, state_db=state, sqlite_sync="normal"))
    async with app.router.lifespan_context(app):
        await measure(app, bodies[:200], 1, 200)  # warm-up
        print("| concurrency | CPU µs/request | wall µs/request | requests/s per core (1e6 / CPU µs) |")
        print("|---|---|---|---|")
        for c in (int(x) for x in args.concurrency.split(",")):
            cpu, wall = await measure(app, bodies, c, args.requests)
            print(f"| {c} | {cpu:.0f} | {wall:.0f} | {1e6 / cpu:.0f} |")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--dataset", default="ml-100k", help="dataset the model was trained on")
    parser.add_argument("--mix", choices=["history-filter", "mixed"], default="history-filter")
    parser.add_argument("--concurrency", default="1,8,32")
    parser.add_argument("--requests", type=int, default=2000, help="requests per concurrency level")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import torch

    from vitrina.data.datasets import load_dataset
    from vitrina.data.filtering import to_implicit

    torch.set_num_threads(args.threads)
    loadgen = _loadgen()
    workload = loadgen.Workload.from_events(to_implicit(load_dataset(args.dataset)))
    rng = np.random.default_rng(args.seed)
    bodies = []
    for _ in range(args.requests):
        path, body = workload.body(args.mix, rng)
        bodies.append((path, loadgen.http_request(path, body, "x").partition(b"\r\n\r\n")[2]))
    print(
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.model_dir}; mix {args.mix}; "
        f"{args.requests} requests per level; torch threads {args.threads}; {platform.machine()}, "
        f"{os.cpu_count()} CPUs; load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
    )
    asyncio.run(main_async(args, bodies))


if __name__ == "__main__":
    main()
