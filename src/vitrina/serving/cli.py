"""``vitrina serve MODEL_DIR``: the command-line front of the service (registered in ``vitrina.cli``)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated, Literal

import typer


def serve(
    model_dir: Annotated[Path, typer.Argument(help="model directory written by Recommender.save")],
    host: Annotated[str, typer.Option(help="interface to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port")] = 8000,
    catalog: Annotated[
        Path | None,
        typer.Option(
            help="item metadata, parquet or CSV: item_id, available, category, lat, lon, value, segments"
        ),
    ] = None,
    calibration: Annotated[
        Path | None, typer.Option(help="JSON from ExpectedValueModel.save; enables ranking='expected_value'")
    ] = None,
    experiments: Annotated[
        Path | None, typer.Option(help="experiments config (JSON/TOML) with variant models")
    ] = None,
    state_db: Annotated[
        Path, typer.Option(help="SQLite file for events and histories (embedded store)")
    ] = Path("vitrina-state.sqlite"),
    redis_url: Annotated[
        str | None,
        typer.Option(
            envvar="VITRINA_REDIS_URL",
            help="use Redis as the online store, e.g. redis://127.0.0.1:6379/0; a URL with a password "
            "belongs in VITRINA_REDIS_URL (a flag shows in `ps`)",
        ),
    ] = None,
    redis_prefix: Annotated[str, typer.Option(help="key prefix in Redis")] = "vitrina",
    sqlite_sync: Annotated[
        str, typer.Option(help="'full' (survives power loss) or 'normal' (survives process crashes)")
    ] = "full",
    max_history: Annotated[int, typer.Option(min=1, help="recent items kept per user")] = 200,
    retention_days: Annotated[
        float | None,
        typer.Option(
            help="delete stored events (log and histories) older than this many days: at start, then "
            "every 10 minutes; default: keep everything"
        ),
    ] = None,
    ann: Annotated[bool, typer.Option(help="ANN retrieval (usearch) for embedding models")] = False,
    admin_token: Annotated[
        str | None,
        typer.Option(
            envvar="VITRINA_ADMIN_TOKEN",
            help="bearer token for /admin endpoints; set it in the environment (VITRINA_ADMIN_TOKEN), "
            "since a flag is visible to every local user in `ps`",
        ),
    ] = None,
    model_root: Annotated[
        Path | None,
        typer.Option(help="hot swaps may load bundles only from this folder (default: MODEL_DIR's parent)"),
    ] = None,
    max_body_bytes: Annotated[int, typer.Option(min=1024, help="largest request body accepted")] = 1 << 20,
    max_events_per_request: Annotated[
        int, typer.Option(min=1, help="most events one /events request may carry (413 above)")
    ] = 1000,
    max_request_history: Annotated[
        int,
        typer.Option(min=1, help="most items in a request's own history (413 above)"),
    ] = 1000,
    load_in_background: Annotated[
        bool, typer.Option(help="accept connections at once and answer 503 until the model is loaded")
    ] = False,
    exploration: Annotated[
        str,
        typer.Option(
            help="default logging policy of /recommend: 'off', 'epsilon:E' or 'softmax:T' "
            "(items then carry propensities, logged with the exposures)"
        ),
    ] = "off",
    log_level: Annotated[str, typer.Option(help="uvicorn log level")] = "warning",
    torch_threads: Annotated[
        int,
        typer.Option(
            min=1,
            help="torch intra-op threads; 1 is cheapest per request (concurrent requests are batched "
            "into one model call instead)",
        ),
    ] = 1,
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="server processes on the port, each with its own copy of the model; events and "
            "histories are shared through --state-db or --redis-url, hot swaps and /metrics through a "
            "folder private to the run",
        ),
    ] = 1,
) -> None:
    """Serve recommendations over HTTP (OpenAPI at /docs and /openapi.json).

    Data-plane tokens come only from the environment (a flag would show in `ps`):
    VITRINA_EVENTS_TOKEN, when set, is required as 'Authorization: Bearer <token>' by /events;
    VITRINA_READ_TOKEN, when set, by /recommend, /slate and /similar.
    """
    from vitrina.serving.schemas import MAX_EVENTS, MAX_HISTORY, Exploration
    from vitrina.serving.settings import Settings

    if sqlite_sync not in ("full", "normal"):
        raise typer.BadParameter(
            f"got {sqlite_sync!r}; expected 'full' or 'normal'", param_hint="--sqlite-sync"
        )
    for value, ceiling, hint in (
        (max_events_per_request, MAX_EVENTS, "--max-events-per-request"),
        (max_request_history, MAX_HISTORY, "--max-request-history"),
    ):
        if value > ceiling:
            raise typer.BadParameter(f"got {value}; at most {ceiling}", param_hint=hint)
    if retention_days is not None and not 0 < retention_days < float("inf"):
        raise typer.BadParameter(
            f"got {retention_days}; expected a positive number of days", param_hint="--retention-days"
        )
    sync: Literal["full", "normal"] = "full" if sqlite_sync == "full" else "normal"
    try:
        policy = Exploration.parse(exploration)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--exploration") from exc
    settings = Settings(
        model_dir=model_dir,
        catalog=catalog,
        calibration=calibration,
        experiments=experiments,
        state_db=state_db,
        redis_url=redis_url,
        redis_prefix=redis_prefix,
        sqlite_sync=sync,
        max_history=max_history,
        retention_days=retention_days,
        ann=ann,
        admin_token=admin_token,
        model_root=model_root,
        max_body_bytes=max_body_bytes,
        events_token=os.environ.get("VITRINA_EVENTS_TOKEN") or None,
        read_token=os.environ.get("VITRINA_READ_TOKEN") or None,
        max_events_per_request=max_events_per_request,
        max_request_history=max_request_history,
        exploration=policy,
    )
    logging.basicConfig(level=log_level.upper())
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    if workers > 1:
        from vitrina.serving import workers as multi

        if not load_in_background:  # a bad bundle is one error line here, not N worker tracebacks
            multi.check(settings)
        typer.echo(f"vitrina: serving {model_dir} at {url} with {workers} workers; Ctrl-C stops", err=True)
        config = multi.WorkerConfig(settings, torch_threads, load_in_background, multi.run_folder())
        multi.run(config, workers=workers, host=host, port=port, log_level=log_level)
        return
    import torch
    import uvicorn

    from vitrina.serving.app import create_app
    from vitrina.serving.service import Service

    torch.set_num_threads(torch_threads)
    if load_in_background:
        app = create_app(settings, background_load=True)
    else:  # load before the server starts, so a bad bundle or catalogue is one error line, not a traceback
        service = Service.from_settings(settings)
        app = create_app(settings, build=lambda _: service)
    typer.echo(f"vitrina: serving {model_dir} at {url} (API docs: {url}/docs); Ctrl-C stops", err=True)
    uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)


def export_log(
    out: Annotated[Path, typer.Argument(help="output file: .parquet, .jsonl or .ndjson")],
    state_db: Annotated[Path, typer.Option(help="SQLite state file of the service (its --state-db)")] = Path(
        "vitrina-state.sqlite"
    ),
    redis_url: Annotated[
        str | None, typer.Option(help="read the log stream from Redis instead, e.g. redis://host:6379/0")
    ] = None,
    redis_prefix: Annotated[str, typer.Option(help="key prefix in Redis")] = "vitrina",
) -> None:
    """Export the service's event log in the analysis schema (for `vitrina ab analyze --events`).

    Columns: log_id (0-based arrival order), timestamp, unit_id, experiment, variant, event, value,
    item_id, propensity, request_id, position. Exposures carry the experiment and variant; clicks and
    other events from /events usually do not, and the analysis credits them to the experiments their
    user was exposed in.
    """
    import polars as pl

    from vitrina.serving.stores import COLUMNS, RedisStore, read_sqlite_log

    def fail(message: str) -> typer.Exit:
        typer.echo(f"error: {message}", err=True)
        return typer.Exit(code=2)

    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".jsonl", ".ndjson"):
        raise fail(f"output {out}: unknown format '{suffix}'; use .parquet, .jsonl or .ndjson")
    if out.is_dir() or not out.parent.is_dir():
        raise fail(f"output {out}: is a folder or its folder does not exist")
    try:
        if redis_url is not None:
            store = RedisStore(redis_url, prefix=redis_prefix)
            try:
                rows = store.rows()
            finally:
                store.close()
        else:
            rows = read_sqlite_log(state_db)
    except Exception as exc:  # sqlite3/redis/OS errors: one line, never a traceback
        raise fail(f"cannot read the event log: {exc}") from exc
    schema = {
        "timestamp": pl.Float64,
        "unit_id": pl.String,
        "event": pl.String,
        "experiment": pl.String,
        "variant": pl.String,
        "value": pl.Float64,
        "item_id": pl.String,
        "propensity": pl.Float64,
        "request_id": pl.String,
        "position": pl.Int64,
    }
    frame = pl.DataFrame([tuple(getattr(r, c) for c in COLUMNS) for r in rows], schema=schema, orient="row")
    order = ["timestamp", "unit_id", "experiment", "variant", "event", "value"]
    # log_id (arrival order) keeps two identical events of one request apart: the analysis counts
    # exact duplicate rows once, and one /events request stamps all its events with the same time
    frame = frame.select([*order, *[c for c in COLUMNS if c not in order]]).with_row_index("log_id")
    try:
        if suffix == ".parquet":
            frame.write_parquet(out)
        else:
            frame.write_ndjson(out)
    except OSError as exc:
        raise fail(f"cannot write {out}: {exc}") from exc
    n_exp = frame.filter(pl.col("event") == "exposure").height
    typer.echo(f"wrote {frame.height} events ({n_exp} exposures) to {out}")


def main() -> None:
    """Run ``serve`` as a standalone command (``python -m vitrina.serving.cli``)."""
    typer.run(serve)


if __name__ == "__main__":
    main()
