"""``vitrina serve --workers N``: N server processes accepting on one socket.

uvicorn's supervisor binds the socket, spawns the workers and replaces any that die. Each worker
builds its own :class:`~vitrina.serving.service.Service` (the model bundle is loaded N times; a
bundle is read-only, so nothing needs sharing) while the online state lives in a store every
process sees: the SQLite file (each process's history cache catches up with the others' commits,
:class:`~vitrina.serving.stores.SQLiteStore`) or Redis.

A hot swap of the default model reaches every worker: the worker that takes ``POST /admin/model``
loads and checks the bundle, switches to it, writes its folder to a pointer file and sends SIGHUP
to the supervisor, which replaces the workers one at a time, each replacement loading the model the
pointer names and serving before the worker it replaces is stopped (uvicorn's rolling restart).
Per process, not shared: ``/metrics`` counters (each answers for the worker that took the
connection) and swaps of a variant's model (refused, 409).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

from fastapi import FastAPI

from vitrina.serving.schemas import Exploration
from vitrina.serving.service import Service, Settings

#: environment variable that carries the worker configuration from the supervisor to its workers
ENV = "VITRINA_SERVE_WORKER"


@dataclass(frozen=True)
class WorkerConfig:
    """What each worker process needs to build its app."""

    settings: Settings
    torch_threads: int
    background_load: bool
    #: the file naming the default model's folder after a hot swap (absent until the first one)
    pointer: Path


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
    return WorkerConfig(**{**raw, "settings": Settings(**settings), "pointer": Path(raw["pointer"])})


def pointer_file() -> Path:
    """A fresh place for :attr:`WorkerConfig.pointer`, private to this run of the service."""
    return Path(tempfile.mkdtemp(prefix="vitrina-serve-")) / "model_dir"


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
            # a replacement worker imports torch and loads the model before it serves: uvicorn's 5 s
            # default would abandon the rolling restart of a hot swap on a busy machine
            timeout_worker_healthcheck=120,
        )
    finally:
        shutil.rmtree(config.pointer.parent, ignore_errors=True)


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls this factory in each worker)."""
    import torch

    from vitrina.serving.app import create_app

    config = decode(os.environ[ENV])  # written by `run` in this service's supervisor
    torch.set_num_threads(config.torch_threads)
    settings = config.settings
    if config.pointer.exists():  # a replacement after a hot swap serves the swapped-in model
        root = settings.model_root or settings.model_dir.parent
        settings = replace(settings, model_dir=Path(config.pointer.read_text()), model_root=root)

    def publish(model_dir: Path) -> None:
        tmp = config.pointer.with_suffix(".tmp")
        tmp.write_text(str(model_dir.resolve()))
        tmp.replace(config.pointer)  # atomic: a starting worker reads the old folder or the new one
        os.kill(os.getppid(), signal.SIGHUP)  # the supervisor replaces the workers one by one

    def build(s: Settings) -> Service:
        service = Service.from_settings(s)
        service.publish = publish
        return service

    return create_app(settings, build=build, background_load=config.background_load)
