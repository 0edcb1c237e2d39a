"""HSTU and FuXi-α blocks and the time path: golden forwards against straightforward loops, no
leak of the predicted event's time, time reaching the output only through the time channels."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from vitrina.errors import ConfigError
from vitrina.evaluation.benchmark import run_benchmark
from vitrina.evaluation.config import make_config
from vitrina.models.base import load_model
from vitrina.models.registry import make_model
from vitrina.models.sequential.layers import FuXiBlock, HSTUBlock, attention_mask, relative
from vitrina.models.sequential.network import SequenceEncoder
from vitrina.models.sequential.objectives import MaskedItem, ShiftedSequence

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, HEADS, MAX_LEN = 8, 2, 6


def _seeded(block: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Fixed, non-trivial weights (including the bias tables, which start near zero)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.5)
    return block.eval()


def _bucket(gap: float) -> int:
    return min(127, math.floor(math.log(max(1.0, abs(gap))) / 0.301))


def _layer_norm(v: torch.Tensor, ln: torch.nn.Module) -> torch.Tensor:
    mu = v.mean()
    var = ((v - mu) ** 2).mean()
    return (v - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias


def _rms_norm(v: torch.Tensor, norm: torch.nn.RMSNorm) -> torch.Tensor:
    eps = norm.eps if norm.eps is not None else torch.finfo(v.dtype).eps
    return v / torch.sqrt((v**2).mean() + eps) * norm.weight


def _silu(z: torch.Tensor | float) -> torch.Tensor:
    z = torch.as_tensor(z)
    return z / (1 + torch.exp(-z))


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 5, DIM, generator=gen)
    valid = torch.tensor([[False, True, True, True, True], [True, True, True, True, True]])
    times = torch.tensor([[0, 100, 5_000, 5_000, 90_000], [10, 20, 86_400, 200_000, 9_000_000]])
    return x, valid, times


def _reference_hstu(
    block: HSTUBlock, x: torch.Tensor, valid: torch.Tensor, times: torch.Tensor
) -> torch.Tensor:
    """HSTU written out position by position: no shared helpers with the implementation."""
    b, t, d = x.shape
    dh = d // HEADS
    out = torch.zeros_like(x)
    for r in range(b):
        proj = [
            _silu(block.uvqk.weight @ _layer_norm(x[r, i], block.ln_in) + block.uvqk.bias) for i in range(t)
        ]
        u, v, q, k = ([p[c * d : (c + 1) * d] for p in proj] for c in range(4))
        for i in range(t):
            av = torch.zeros(d)
            for j in range(t):
                if not (j <= i and (valid[r, j] or j == i)):
                    continue
                rab = (
                    block.bias.position[(i - j) + MAX_LEN - 1]
                    + block.bias.time[_bucket(times[r, i] - times[r, j])]
                )
                for h in range(HEADS):
                    sl = slice(h * dh, (h + 1) * dh)
                    a = _silu(q[i][sl] @ k[j][sl] + rab) / MAX_LEN
                    av[sl] += a * v[j][sl]
            gated = _layer_norm(av, block.ln_att) * u[i]
            out[r, i] = x[r, i] + block.out.weight @ gated + block.out.bias
    return out


def _reference_fuxi(
    block: FuXiBlock, x: torch.Tensor, valid: torch.Tensor, times: torch.Tensor
) -> torch.Tensor:
    b, t, d = x.shape
    dh = d // HEADS
    out = torch.zeros_like(x)
    for r in range(b):
        proj = [_silu(block.uvqk.weight @ _rms_norm(x[r, i], block.norm_in)) for i in range(t)]
        u = [p[: 3 * d] for p in proj]
        v = [p[3 * d : 4 * d] for p in proj]
        q = [p[4 * d : 5 * d] for p in proj]
        k = [p[5 * d :] for p in proj]
        for i in range(t):
            sem, pos, tim = torch.zeros(d), torch.zeros(d), torch.zeros(d)
            for j in range(t):
                if not (j <= i and (valid[r, j] or j == i)):
                    continue
                for h in range(HEADS):
                    sl = slice(h * dh, (h + 1) * dh)
                    sem[sl] += _silu(q[i][sl] @ k[j][sl]) / MAX_LEN * v[j][sl]
                pos += block.bias.position[(i - j) + MAX_LEN - 1] * v[j]
                tim += block.bias.time[_bucket(times[r, i] - times[r, j])] * v[j]
            a = _rms_norm(torch.cat([sem, pos, tim]), block.norm_att) * u[i]
            o = x[r, i] + block.out.weight @ a + block.out.bias
            z = _rms_norm(o, block.norm_ffn)
            gate, up = (block.ffn.gate_up.weight @ z + block.ffn.gate_up.bias).chunk(2)
            out[r, i] = o + block.ffn.down.weight @ (F.silu(gate) * up) + block.ffn.down.bias
    return out


def _run(block: torch.nn.Module, x: torch.Tensor, valid: torch.Tensor, times: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(x.shape[1] - 1, -1, -1)
    return block(x, attention_mask(valid, causal=True), relative(positions, times, None, MAX_LEN))


@pytest.mark.parametrize(
    ("kind", "reference"), [(HSTUBlock, _reference_hstu), (FuXiBlock, _reference_fuxi)], ids=["hstu", "fuxi"]
)
def test_golden_forward(kind: type, reference: object) -> None:
    block = _seeded(kind(DIM, HEADS, 0.0, 2, MAX_LEN))
    x, valid, times = _inputs()
    with torch.no_grad():
        got = _run(block, x, valid, times)
        want = reference(block, x, valid, times)  # type: ignore[operator]
    real = valid.unsqueeze(-1)
    torch.testing.assert_close(got * real, want * real, rtol=1e-4, atol=1e-5)


def _encoder(layers: str, seed: int = 0) -> SequenceEncoder:
    torch.manual_seed(seed)
    enc = SequenceEncoder(
        30, dim=DIM, max_len=MAX_LEN, layers=layers, n_blocks=2, n_heads=HEADS, dropout=0.0, ffn_mult=2
    )  # type: ignore[arg-type]
    for block in enc.blocks:  # time tables start near 0; make them matter
        torch.nn.init.normal_(block.bias.time, std=1.0)
    return enc.eval()


def _states(
    enc: SequenceEncoder, objective: object, tokens: np.ndarray, times: np.ndarray
) -> tuple[torch.Tensor, np.ndarray]:
    inputs, targets = objective.make_batch(tokens, np.random.default_rng(0))  # type: ignore[attr-defined]
    key, query = objective.batch_times(times, inputs, targets)  # type: ignore[attr-defined]
    with torch.no_grad():
        out = enc(
            torch.from_numpy(inputs),
            objective.causal,
            None,
            None,
            torch.from_numpy(key),
            torch.from_numpy(query),
        )  # type: ignore[attr-defined]
    return out, targets


@settings(max_examples=25, deadline=None)
@given(
    layers=st.sampled_from(["hstu", "fuxi"]),
    masked=st.booleans(),
    items=st.lists(st.integers(1, 30), min_size=2, max_size=MAX_LEN),
    gaps=st.lists(st.integers(0, 10**7), min_size=MAX_LEN, max_size=MAX_LEN),
    new_time=st.integers(0, 2 * 10**9),
)
def test_target_time_never_changes_its_score(
    layers: str, masked: bool, items: list[int], gaps: list[int], new_time: int
) -> None:
    """Default mode: the state a target is scored from is the same whatever the target's time."""
    enc = _encoder(layers)
    n = len(items)
    tokens = np.array([items], dtype=np.int64)
    times = (1_000_000_000 + np.cumsum(gaps[:n])).astype(np.int64)[None, :]
    objective = MaskedItem(MAX_LEN, 0.5, mask_token=31) if masked else ShiftedSequence(MAX_LEN)
    before, targets = _states(enc, objective, tokens, times)
    for col in np.flatnonzero(targets[0] >= 0):  # every predicted event, one at a time
        event = col + (0 if masked else 1)  # the target of input position col
        moved = times.copy()
        moved[0, event] = new_time
        after, _ = _states(enc, objective, tokens, moved)
        torch.testing.assert_close(after[0, col], before[0, col], rtol=0, atol=0)


def test_request_time_option_does_read_the_target_time() -> None:
    enc = _encoder("hstu")
    tokens = np.array([[3, 4, 5, 6]])
    times = np.array([[10, 1_000, 100_000, 200_000]])
    objective = ShiftedSequence(MAX_LEN, request_time=True)
    before, _ = _states(enc, objective, tokens, times)
    after, _ = _states(enc, objective, tokens, times + np.array([[0, 0, 0, 10**8]]))
    assert not torch.allclose(before[0, -1], after[0, -1])


@pytest.mark.parametrize("layers", ["hstu", "fuxi"])
def test_permuted_history_times_act_only_through_time_channels(layers: str) -> None:
    enc = _encoder(layers)
    tokens = torch.tensor([[0, 7, 3, 9, 12, 4]])
    times = torch.tensor([[0, 100, 4_000, 90_000, 3_000_000, 3_000_500]])
    shuffled = times[:, [0, 4, 2, 5, 1, 3]]
    with torch.no_grad():
        a = enc(tokens, True, None, None, times, times)
        b = enc(tokens, True, None, None, shuffled, shuffled)
        assert not torch.allclose(a[0, 1:], b[0, 1:])
        for block in enc.blocks:
            block.bias.time.zero_()  # time channels off: the times can no longer matter
        torch.testing.assert_close(
            enc(tokens, True, None, None, times, times),
            enc(tokens, True, None, None, shuffled, shuffled),
            rtol=0,
            atol=0,
        )


def _timed_log(n_users: int = 60, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(n_users):
        t = 1_000_000_000 + int(rng.integers(10**6))
        for _ in range(8):
            t += int(rng.integers(1, 10**5))
            rows.append((u, int(rng.integers(25)), t))
    return pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").with_columns(
        weight=pl.lit(1.0)
    )


@pytest.mark.parametrize("objective", ["shifted", "masked"])
@pytest.mark.parametrize("negatives", ["batch", "sequence", "position"])
def test_time_models_train_with_every_mode(objective: str, negatives: str) -> None:
    loss = "softmax" if objective == "masked" else "sampled_softmax"
    model = make_model(
        "hstu" if negatives != "sequence" else "fuxi-alpha",
        {
            "objective": objective,
            "loss": loss,
            "negatives_per": negatives,
            "n_negatives": 8,
            "n_factors": 8,
            "max_len": 10,
            "epochs": 2,
            "verbose": False,
        },
    )
    df = _timed_log()
    last = pl.col("timestamp") == pl.col("timestamp").max().over("user_id")
    model.fit(df.filter(~last), validation=df.filter(last))
    assert np.isfinite(model.training_summary_["final_loss"])
    assert model.recommend([0, 1], k=5).height == 10


def test_save_load_keeps_the_times(tmp_path: Path) -> None:
    model = make_model(
        "hstu", {"n_factors": 8, "max_len": 10, "n_negatives": 8, "epochs": 1, "verbose": False}
    )
    model.fit(_timed_log())
    loaded = load_model(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded._score_users(np.arange(5)), model._score_users(np.arange(5)))


def test_time_model_on_order_only_dataset_fails_before_training(data_home: Path) -> None:
    config = make_config({"dataset": "lastfm", "models": [{"name": "popular"}, {"name": "hstu"}]})
    with pytest.raises(ConfigError, match=r"'lastfm'.*use_time=false"):
        run_benchmark(config)


def test_use_time_needs_time_blocks() -> None:
    with pytest.raises(ConfigError, match="use_time"):
        make_model("esasrec", {"use_time": True}).fit(_timed_log())
