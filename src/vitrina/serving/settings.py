"""``vitrina serve``'s configuration, apart from the service so that the supervisor of
``--workers N`` reads it without importing the models (and torch: ~250 MB it would keep)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from vitrina.serving.schemas import Exploration


@dataclass(frozen=True)
class Settings:
    """Everything ``vitrina serve`` is configured with."""

    model_dir: Path
    catalog: Path | None = None
    calibration: Path | None = None
    experiments: Path | None = None
    state_db: Path = Path("vitrina-state.sqlite")
    redis_url: str | None = None
    redis_prefix: str = "vitrina"
    sqlite_sync: Literal["full", "normal"] = "full"
    max_history: int = 200
    ann: bool = False
    admin_token: str | None = None
    #: bearer token required by /events (the data plane's writes); None: /events is open
    events_token: str | None = None
    #: bearer token required by /recommend, /slate and /similar; None: reads are open
    read_token: str | None = None
    #: hot swaps load bundles only from inside this folder (default: the folder holding model_dir)
    model_root: Path | None = None
    max_body_bytes: int = 1 << 20
    #: most events one /events request may carry (413 above)
    max_events_per_request: int = 1000
    #: most items a request's own ``history`` may hold (413 above)
    max_request_history: int = 1000
    exploration: Exploration = field(default_factory=Exploration)
    #: stored events older than this many days are deleted (at start, then every prune interval)
    retention_days: float | None = None
    prune_interval_s: float = 600.0
