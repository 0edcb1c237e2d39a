"""``vitrina recommend``: batch scoring into one Parquet file equals ``Recommender.recommend``, embedded
and on a local Ray cluster (issue 11, part 5)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.models.base import Recommender, load_model
from vitrina.models.registry import make_model
from vitrina.serving.batch import BatchOptions, recommend_to_parquet

REPO = Path(__file__).resolve().parents[1]
MODELS = {
    "itemknn": {},
    "sasrec": {"n_factors": 8, "n_blocks": 1, "max_len": 10, "epochs": 1, "verbose": False, "device": "cpu"},
}


@pytest.fixture(scope="module", params=list(MODELS))
def saved(
    request: pytest.FixtureRequest, ml100k_head: pl.DataFrame, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    name = request.param
    model = make_model(name, MODELS[name]).fit(ml100k_head)
    return model.save(tmp_path_factory.mktemp(name), name=name)


def assert_same(got: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Same users, items and ranks; scores equal up to float32 round-off (a transformer's scores
    depend slightly on which users share a batch, as in the model contract's batch == single)."""
    keys = ["user_id", "item_id", "rank"]
    assert got.select(keys).equals(expected.select(keys))
    np.testing.assert_allclose(got["score"].to_numpy(), expected["score"].to_numpy(), rtol=1e-5, atol=1e-6)


def _expected(model: Recommender, users: list[object], opts: BatchOptions) -> pl.DataFrame:
    return model.recommend(
        users,
        opts.k,
        exclude_seen=opts.exclude_seen,
        allow_items=opts.allow_items,
        deny_items=opts.deny_items,
    )


@pytest.mark.parametrize(
    "opts",
    [
        BatchOptions(k=10, chunk_users=37),
        BatchOptions(k=5, exclude_seen=False, deny_items=[50, 100, 181], chunk_users=64),
        BatchOptions(k=7, allow_items=list(range(1, 200, 3)), chunk_users=1000),
    ],
)
def test_file_equals_recommend_for_every_user(saved: Path, tmp_path: Path, opts: BatchOptions) -> None:
    model = load_model(saved)
    seen: list[tuple[int, int]] = []
    out = tmp_path / "out.parquet"
    n = recommend_to_parquet(saved, out, opts, progress=lambda done, total: seen.append((done, total)))
    users = model.users_.external_ids.to_list()
    assert n == len(users)
    assert_same(pl.read_parquet(out), _expected(model, users, opts))
    assert seen[-1] == (n, n) and [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert not list(tmp_path.glob("*.partial"))


def test_cli_users_file_unknown_ids_and_filters(saved: Path, tmp_path: Path) -> None:
    model = load_model(saved)
    users = model.users_.external_ids.to_list()[:50:3]
    (tmp_path / "users.txt").write_text("user_id\n" + "\n".join(map(str, users)) + "\n")
    (tmp_path / "deny.txt").write_text("50\n181\n")
    out = tmp_path / "out.parquet"
    args = ["recommend", str(saved), "--users", str(tmp_path / "users.txt"), "--output", str(out), "--k", "4"]
    result = CliRunner().invoke(app, [*args, "--deny-items", str(tmp_path / "deny.txt")])
    assert result.exit_code == 0, result.output
    expected = _expected(model, users, BatchOptions(k=4, deny_items=[50, 181]))
    assert_same(pl.read_parquet(out), expected)

    (tmp_path / "users.txt").write_text(f"{users[0]}\n999999\nnot-a-user\n")
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2
    assert "2 user id(s) not in the model's training data" in result.output
    assert "999999" in result.output and "--skip-unknown" in result.output
    result = CliRunner().invoke(app, [*args, "--skip-unknown"])
    assert result.exit_code == 0, result.output
    assert pl.read_parquet(out)["user_id"].unique().to_list() == [users[0]]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A local 2-CPU Ray cluster, started once for this module (Ray start-up takes ~20 s)."""
    ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'vitrina[ray]')")
    ctx = ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ctx.address_info["address"]
    finally:
        ray.shutdown()


def test_ray_path_writes_the_same_file(ray_cluster: str, ml100k_head: pl.DataFrame, tmp_path: Path) -> None:
    model = make_model("itemknn", {}).fit(ml100k_head)
    saved = model.save(tmp_path / "model", name="itemknn")
    opts = BatchOptions(k=6, deny_items=[50], chunk_users=100)  # 459 users: 5 shards over 2 workers
    recommend_to_parquet(saved, tmp_path / "embedded.parquet", opts)
    command = [sys.executable, "-m", "vitrina.cli", "recommend", str(saved), "--users", "all"]
    command += ["--output", str(tmp_path / "ray.parquet"), "--k", "6", "--chunk-users", "100"]
    (tmp_path / "deny.txt").write_text("50\n")
    command += ["--deny-items", str(tmp_path / "deny.txt"), "--ray", ray_cluster]
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    on_ray = pl.read_parquet(tmp_path / "ray.parquet")
    assert on_ray.equals(pl.read_parquet(tmp_path / "embedded.parquet"))
    assert on_ray.height == 6 * len(model.users_)
