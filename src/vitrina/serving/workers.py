"""``vitrina serve --workers N``: N server processes accepting on one socket.

uvicorn's supervisor binds the socket, spawns the workers and replaces any that die. Each worker
builds its own :class:`~vitrina.serving.service.Service` (the model bundle is loaded N times; a
bundle is read-only, so nothing needs sharing) while the online state lives in a store every
process sees: the SQLite file (each process's history cache catches up with the others' commits,
:class:`~vitrina.serving.stores.SQLiteStore`) or Redis. Per process, not shared: ``/metrics``
counters (each answers for the worker that took the connection) and hot swaps (refused, 409).
"""

from __future__ import annotations

import base64
import os
import pickle
from dataclasses import dataclass

from fastapi import FastAPI

from vitrina.serving.service import Settings

#: environment variable that carries the worker configuration from the supervisor to its workers
ENV = "VITRINA_SERVE_WORKER"


@dataclass(frozen=True)
class WorkerConfig:
    """What each worker process needs to build its app."""

    settings: Settings
    torch_threads: int
    background_load: bool


def run(config: WorkerConfig, *, workers: int, host: str, port: int, log_level: str) -> None:
    """Serve with ``workers`` processes until interrupted (the configuration travels in :data:`ENV`)."""
    import uvicorn

    os.environ[ENV] = base64.b64encode(pickle.dumps(config)).decode()
    uvicorn.run(
        f"{__name__}:worker_app",
        factory=True,
        workers=workers,
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
    )


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls this factory in each worker)."""
    import torch

    from vitrina.serving.app import create_app

    # written by `run` in the supervisor process of this very service, never read from elsewhere
    config: WorkerConfig = pickle.loads(base64.b64decode(os.environ[ENV]))
    torch.set_num_threads(config.torch_threads)
    return create_app(config.settings, background_load=config.background_load)
