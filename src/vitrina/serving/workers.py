"""``vitrina serve --workers N``: N server processes accepting on one socket.

uvicorn's supervisor binds the socket, spawns the workers and replaces any that die. Each worker
builds its own :class:`~vitrina.serving.service.Service` while the online state lives in a store
every process sees: the SQLite file (each process's history cache catches up with the others'
commits, :class:`~vitrina.serving.stores.SQLiteStore`) or Redis.

Hot swaps and ``/metrics`` go through a folder private to the run (:mod:`vitrina.serving.fleet`):
the worker that takes ``POST /admin/model`` loads and checks the bundle, switches to it and records
it there; every other worker sees the record within a poll, loads the bundle in the background and
switches its reference in place, as a single process does, for the default model and for a
variant's alike. No worker restarts, so no connection is closed. A worker started later (one
replacing a worker that died) serves what the record names.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import os
import shutil
import tempfile
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import FastAPI

from vitrina.serving.fleet import DEFAULT, Fleet
from vitrina.serving.metrics import Metrics
from vitrina.serving.schemas import Exploration
from vitrina.serving.settings import Settings

if TYPE_CHECKING:
    from vitrina.serving.service import Service

#: environment variable that carries the worker configuration from the supervisor to its workers
ENV = "VITRINA_SERVE_WORKER"


@dataclass(frozen=True)
class WorkerConfig:
    """What each worker process needs to build its app."""

    settings: Settings
    torch_threads: int
    background_load: bool
    #: the run's shared folder (:class:`~vitrina.serving.fleet.Fleet`)
    folder: Path


def encode(config: WorkerConfig) -> str:
    """``config`` as JSON (plain data: no pickle anywhere, even between our own processes)."""
    settings = {f.name: getattr(config.settings, f.name) for f in dataclasses.fields(Settings)}
    settings["exploration"] = config.settings.exploration.model_dump()
    plain = {f.name: getattr(config, f.name) for f in dataclasses.fields(WorkerConfig)}
    return json.dumps({**plain, "settings": settings}, default=str)


def decode(text: str) -> WorkerConfig:
    """The inverse of :func:`encode`."""
    raw = json.loads(text)
    settings = raw.pop("settings")
    for f in dataclasses.fields(Settings):  # annotations are strings here (postponed evaluation)
        if str(f.type).startswith("Path") and settings[f.name] is not None:
            settings[f.name] = Path(settings[f.name])
    settings["exploration"] = Exploration(**settings["exploration"])
    return WorkerConfig(**{**raw, "settings": Settings(**settings), "folder": Path(raw["folder"])})


def run_folder() -> Path:
    """A fresh :attr:`WorkerConfig.folder`, private to this run of the service (mode 0700)."""
    return Path(tempfile.mkdtemp(prefix="vitrina-serve-"))


def check(settings: Settings) -> None:
    """Load the service once in a short-lived child process: a bad bundle raises here, one error
    line before any worker starts, and the supervisor never holds the model nor torch."""
    with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as child:
        child.submit(_load_and_close, settings).result()


def _load_and_close(settings: Settings) -> None:
    from vitrina.serving.service import Service

    Service.from_settings(settings).close()


def run(config: WorkerConfig, *, workers: int, host: str, port: int, log_level: str) -> None:
    """Serve with ``workers`` processes until interrupted (the configuration travels in :data:`ENV`)."""
    import uvicorn

    os.environ[ENV] = encode(config)
    try:
        uvicorn.run(
            f"{__name__}:worker_app",
            factory=True,
            workers=workers,
            host=host,
            port=port,
            log_level=log_level,
            access_log=False,
            # a worker answers the supervisor's ping from a thread that competes for the GIL with a
            # model load, on a busy machine for seconds: uvicorn's 5 s would kill a healthy worker
            timeout_worker_healthcheck=60,
        )
    finally:
        shutil.rmtree(config.folder, ignore_errors=True)


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls this factory in each worker)."""
    import torch

    from vitrina.serving.app import create_app
    from vitrina.serving.service import Service

    config = decode(os.environ[ENV])  # written by `run` in this service's supervisor
    torch.set_num_threads(config.torch_threads)
    fleet = Fleet(config.folder)
    settings = config.settings
    swapped = fleet.read().models.get(DEFAULT)
    if swapped is not None:  # started after a hot swap: load the swapped-in default model directly
        root = settings.model_root or settings.model_dir.parent
        settings = replace(settings, model_dir=Path(swapped.path), model_root=root)

    def build(s: Settings) -> Service:
        service = Service.from_settings(s)
        service.follow(fleet)
        return service

    metrics = Metrics(peers=fleet.peer_metrics)
    return create_app(settings, build=build, background_load=config.background_load, metrics=metrics)
