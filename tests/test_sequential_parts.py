"""Parts of the sequential transformers: shapes, masking, losses against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vitrina.errors import ConfigError
from vitrina.models.sequential import row_logits as rl
from vitrina.models.sequential.layers import LiGRBlock, PreLNBlock, SASRecBlock, attention_mask, build_layers
from vitrina.models.sequential.losses import BCE, GBCE, FullSoftmax, SampledSoftmax
from vitrina.models.sequential.model import SequentialTransformer
from vitrina.models.sequential.network import SequenceEncoder
from vitrina.models.sequential.objectives import MaskedItem, ShiftedSequence
from vitrina.models.sequential.packing import pack
from vitrina.models.sequential.samplers import InBatchSampler, MixedSampler, UniformSampler
from vitrina.models.sequential.training import Parts, TrainOptions, _step_loss

pytestmark = pytest.mark.usefixtures("one_thread")


LAYERS = ["sasrec", "preln", "ligr"]


def encoder(layers: str, n_items: int = 30) -> SequenceEncoder:
    torch.manual_seed(0)
    enc = SequenceEncoder(
        n_items, dim=16, max_len=8, layers=layers, n_blocks=2, n_heads=2, dropout=0.1, ffn_mult=2
    )
    return enc.eval()


@pytest.mark.parametrize(
    ("name", "cls"), [("sasrec", SASRecBlock), ("preln", PreLNBlock), ("ligr", LiGRBlock)]
)
def test_block_shapes(name: str, cls: type) -> None:
    blocks = build_layers(name, dim=16, n_blocks=3, n_heads=4, dropout=0.0, ffn_mult=4)  # type: ignore[arg-type]
    assert len(blocks) == 3 and all(isinstance(b, cls) for b in blocks)
    x = torch.randn(5, 7, 16)
    mask = attention_mask(torch.ones(5, 7, dtype=torch.bool), causal=True)
    assert mask.shape == (5, 1, 7, 7)
    assert blocks[0](x, mask).shape == (5, 7, 16)


def test_ligr_ffn_width_is_multiple() -> None:
    block = LiGRBlock(16, 1, 0.0, 4)
    assert block.ffn.down.in_features == 64


@pytest.mark.parametrize("layers", LAYERS)
def test_causal_no_attention_to_future(layers: str) -> None:
    enc = encoder(layers)
    seq = torch.tensor([[0, 0, 3, 4, 5, 6, 7, 8]])
    changed = seq.clone()
    changed[0, 5] = 20
    out, out2 = enc(seq, causal=True), enc(changed, causal=True)
    torch.testing.assert_close(out[0, :5], out2[0, :5])
    assert not torch.allclose(out[0, 5:], out2[0, 5:])
    # bidirectional mode does look ahead
    assert not torch.allclose(enc(seq, causal=False)[0, :5], enc(changed, causal=False)[0, :5])


@pytest.mark.parametrize("layers", LAYERS)
@pytest.mark.parametrize("causal", [True, False])
def test_padding_does_not_leak(layers: str, causal: bool) -> None:
    enc = encoder(layers)
    x = torch.randn(2, 6, 16)
    valid = torch.tensor([[False, False, True, True, True, True], [True] * 6])
    y = x.clone()
    y[0, :2] = torch.randn(2, 16) * 100  # padded content changes
    out, out2 = enc.encode(x, valid, causal), enc.encode(y, valid, causal)
    torch.testing.assert_close(out, out2)
    assert torch.all(out[0, :2] == 0)


def test_padding_length_does_not_change_output() -> None:
    enc = encoder("ligr")
    short = torch.tensor([[3, 4, 5]])
    padded = torch.tensor([[0, 0, 0, 3, 4, 5]])
    torch.testing.assert_close(enc(short, True)[0, -1], enc(padded, True)[0, -1])


def _left_padded(lengths: list[int], width: int, rng: np.random.Generator) -> np.ndarray:
    tokens = np.zeros((len(lengths), width), dtype=np.int64)
    for i, n in enumerate(lengths):
        tokens[i, width - n :] = rng.integers(1, 30, n)
    return tokens


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 12), min_size=1, max_size=20))
def test_pack_keeps_every_token_once_in_order(lengths: list[int]) -> None:
    width = max(lengths)
    inputs = _left_padded(lengths, width, np.random.default_rng(len(lengths)))
    p = pack(inputs)
    assert p.inputs.shape[1] == width and p.inputs.shape[0] <= len(lengths)
    for seg, n in enumerate(lengths, start=1):
        row, col = np.nonzero(p.segments == seg)
        assert len(set(row)) == 1 and np.all(np.diff(col) == 1)  # one contiguous run in one row
        np.testing.assert_array_equal(p.inputs[row, col], inputs[seg - 1, width - n :])
        np.testing.assert_array_equal(p.positions[row, col], np.arange(n - 1, -1, -1))
        np.testing.assert_array_equal(p.source[row, col], (seg - 1) * width + np.arange(width - n, width))
    assert np.all((p.segments == 0) == (p.inputs == 0)) and np.all(p.source[p.segments == 0] == -1)


@pytest.mark.parametrize("layers", LAYERS)
@pytest.mark.parametrize("causal", [True, False])
def test_packed_rows_equal_separate_sequences(layers: str, causal: bool) -> None:
    """Packing is exact: each token's hidden state is the one its sequence gets alone."""
    enc = encoder(layers)
    inputs = _left_padded([3, 1, 5, 2, 4], 8, np.random.default_rng(0))
    p = pack(inputs)
    assert p.inputs.shape[0] < len(inputs)  # something was actually packed together
    alone = enc(torch.from_numpy(inputs), causal)
    packed = enc(
        torch.from_numpy(p.inputs), causal, torch.from_numpy(p.segments), torch.from_numpy(p.positions)
    )
    real = p.source >= 0
    torch.testing.assert_close(
        packed[torch.from_numpy(real)], alone.reshape(-1, 16)[torch.from_numpy(p.source[real])]
    )


def test_tied_item_weights() -> None:
    enc = encoder("sasrec", n_items=30)
    assert enc.item_weights().shape == (30, 16)
    assert enc.item_weights().data_ptr() == enc.item_emb.weight[1].data_ptr()


def test_gbce_hand_computed() -> None:
    pos, neg = torch.tensor([0.5]), torch.tensor([[0.2, -1.0]])
    loss = GBCE(t=0.75, n_negatives=2, n_items=11)
    alpha = 2 / 10
    beta = alpha * (0.75 * (1 - 1 / alpha) + 1 / alpha)
    assert loss.beta == pytest.approx(0.4)
    sig = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = -math.log(sig(0.5) ** beta) - math.log(1 - sig(0.2)) - math.log(1 - sig(-1.0))
    keep = torch.ones(1, 2, dtype=torch.bool)
    assert float(loss(pos, neg, keep, torch.zeros(1, 3))) == pytest.approx(expected, rel=1e-6)
    # t = 0 is plain BCE
    bce = -math.log(sig(0.5)) - math.log(1 - sig(0.2)) - math.log(1 - sig(-1.0))
    assert float(GBCE(0.0, 2, 11)(pos, neg, keep, torch.zeros(1, 3))) == pytest.approx(bce, rel=1e-6)
    assert float(BCE()(pos, neg, keep, torch.zeros(1, 3))) == pytest.approx(bce, rel=1e-6)


def test_sampled_softmax_hand_computed() -> None:
    pos, neg = torch.tensor([0.5, 1.0]), torch.tensor([[0.2, -1.0], [2.0, 0.0]])
    keep = torch.tensor([[True, True], [False, True]])  # row 2's first negative is an accidental hit
    log_q = torch.log(torch.tensor([[0.5, 0.25, 0.25], [0.1, 0.2, 0.7]]))
    row1 = -0.5 + math.log(math.exp(0.5) + math.exp(0.2) + math.exp(-1.0))
    row2 = -1.0 + math.log(math.exp(1.0) + math.exp(0.0))
    plain = SampledSoftmax(logq_correction=False)(pos, neg, keep, log_q)
    assert float(plain) == pytest.approx((row1 + row2) / 2, rel=1e-6)
    c = [
        [0.5 - math.log(0.5), 0.2 - math.log(0.25), -1.0 - math.log(0.25)],
        [1.0 - math.log(0.1), 0.0 - math.log(0.7)],
    ]
    corr = [-c[0][0] + math.log(sum(map(math.exp, c[0]))), -c[1][0] + math.log(sum(map(math.exp, c[1])))]
    corrected = SampledSoftmax(logq_correction=True)(pos, neg, keep, log_q)
    assert float(corrected) == pytest.approx(sum(corr) / 2, rel=1e-6)


def test_full_softmax_is_cross_entropy() -> None:
    logits = torch.tensor([[1.0, 2.0, 0.0]])
    expected = -2.0 + math.log(math.e + math.e**2 + 1)
    assert float(FullSoftmax()(logits, torch.tensor([1]))) == pytest.approx(expected, rel=1e-6)
    # label smoothing ε: (1 - ε) of the target's cross-entropy + ε of the mean over all three items
    log_z = math.log(math.e + math.e**2 + 1)
    smoothed = 0.9 * (log_z - 2.0) + 0.1 * sum(log_z - v for v in (1.0, 2.0, 0.0)) / 3
    assert float(FullSoftmax(0.1)(logits, torch.tensor([1]))) == pytest.approx(smoothed, rel=1e-6)


def test_label_smoothing_needs_the_full_softmax() -> None:
    with pytest.raises(ConfigError, match="label_smoothing must be in \\[0, 1\\), and 0 unless loss"):
        SequentialTransformer(loss="sampled_softmax", label_smoothing=0.1).build_parts(5, np.ones(5))
    with pytest.raises(ConfigError, match="label_smoothing"):
        SequentialTransformer(loss="softmax", label_smoothing=1.0).build_parts(5, np.ones(5))


def test_samplers() -> None:
    gen = torch.Generator().manual_seed(0)
    targets = torch.tensor([3, 3, 5, 7, 9])
    counts = torch.tensor([0, 0, 0, 2, 0, 1, 0, 1, 0, 1])
    uni = UniformSampler(10).sample(64, targets, gen)
    assert uni.items.shape == (64,) and int(uni.items.min()) >= 0 and int(uni.items.max()) < 10
    torch.testing.assert_close(uni.log_q, torch.full((64,), -math.log(10)))
    inb = InBatchSampler(counts).sample(3, targets, gen)
    assert len(inb.items) == 3 and set(inb.items.tolist()) <= {3, 5, 7, 9}
    assert float(InBatchSampler(counts).log_q(torch.tensor([3]))) == pytest.approx(math.log(2 / 5))
    mixed = MixedSampler(10, counts)
    drawn = mixed.sample(8, targets, gen)
    assert len(drawn.items) == 8 and set(drawn.items[:4].tolist()) <= {3, 5, 7, 9}
    assert float(mixed.log_q(torch.tensor([3]))) == pytest.approx(math.log(0.5 * 0.1 + 0.5 * 0.4), rel=1e-6)


def test_shifted_objective() -> None:
    tokens = np.array([[0, 0, 4, 5, 6], [1, 2, 3, 4, 5]])
    inputs, targets = ShiftedSequence(max_len=4).make_batch(tokens, np.random.default_rng(0))
    np.testing.assert_array_equal(inputs, [[0, 0, 4, 5], [1, 2, 3, 4]])
    np.testing.assert_array_equal(targets, [[-1, -1, 4, 5], [1, 2, 3, 4]])
    np.testing.assert_array_equal(ShiftedSequence(max_len=2).inference_tokens(np.array([7, 8, 9])), [9, 10])


def test_masked_objective() -> None:
    obj = MaskedItem(max_len=4, mask_prob=0.5, mask_token=99)
    tokens = np.array([[0, 0, 4, 5], [1, 2, 3, 4], [0, 0, 0, 7]] * 50)
    inputs, targets = obj.make_batch(tokens, np.random.default_rng(0))
    masked = inputs == 99
    assert masked.any(1).all()  # every sequence has a masked item
    assert not masked[tokens == 0].any()  # padding is never masked
    np.testing.assert_array_equal(targets[masked], tokens[masked] - 1)
    assert (targets[~masked] == -1).all()
    assert 0.3 < masked[tokens[:, :] > 0].mean() < 0.8
    np.testing.assert_array_equal(obj.inference_tokens(np.array([1, 2, 3, 4])), [3, 4, 5, 99])


@pytest.mark.parametrize("per", ["batch", "sequence", "position"])
def test_packed_loss_equals_padded_loss(per: str) -> None:
    """The training loss (and so the gradient) is the same whether a batch is packed or padded,
    for negatives shared by the batch, by a sequence or drawn per position."""
    enc = encoder("ligr")
    parts = Parts(enc, ShiftedSequence(8), SampledSoftmax(logq_correction=False), UniformSampler(30))
    tokens = _left_padded([4, 2, 6, 3, 9, 2], 9, np.random.default_rng(1))
    inputs, targets = parts.objective.make_batch(tokens, np.random.default_rng(0))
    n = int((targets >= 0).sum())
    shape = {"batch": (5,), "sequence": (len(tokens), 5), "position": (n, 5)}[per]
    negs = torch.randint(0, 30, shape, generator=torch.Generator().manual_seed(0))
    log_q = torch.zeros(negs.shape)
    opts = {packed: TrainOptions(1, 1, 8, 1e-3, 5, per, packed, False) for packed in (False, True)}  # type: ignore[arg-type]
    cpu = torch.device("cpu")
    padded, n1 = _step_loss(parts, inputs, targets, negs, log_q, enc, opts[False], cpu)
    packed, n2 = _step_loss(parts, inputs, targets, negs, log_q, enc, opts[True], cpu)
    assert n1 == n2 == n
    torch.testing.assert_close(packed, padded)


def test_per_sequence_negatives_score_each_position_against_its_own_sequence() -> None:
    """Per-sequence negatives: every position is scored against its own sequence's draw (sequences
    of 1 to 8 targets, so padding and row bookkeeping are exercised)."""
    enc = encoder("ligr")
    parts = Parts(enc, ShiftedSequence(8), SampledSoftmax(logq_correction=False), UniformSampler(30))
    tokens = _left_padded([2, 3, 5, 9, 9, 4, 2, 6, 3], 9, np.random.default_rng(4))
    inputs, targets = parts.objective.make_batch(tokens, np.random.default_rng(0))
    negs = torch.randint(0, 30, (len(tokens), 7), generator=torch.Generator().manual_seed(5))
    opts = TrainOptions(1, 1, 8, 1e-3, 7, "sequence", True, False)
    enc.eval()
    cpu = torch.device("cpu")
    loss, n = _step_loss(parts, inputs, targets, negs, torch.zeros(negs.shape), enc, opts, cpu)
    flat = np.flatnonzero(targets.ravel() >= 0)
    h = enc(torch.from_numpy(inputs), True).reshape(-1, enc.dim)[flat]
    row = torch.from_numpy(flat // targets.shape[1])
    tgt = torch.from_numpy(targets.ravel()[flat])
    w = enc.item_weights()
    pos = (h * w[tgt]).sum(-1)
    neg = torch.einsum("pd,pnd->pn", h, w[negs[row]])
    expected = parts.loss(pos, neg, negs[row] != tgt[:, None], torch.zeros(n, 8))
    assert n == len(flat)
    torch.testing.assert_close(loss, expected)


def test_negative_modes_agree_when_draws_coincide() -> None:
    """Per-sequence and per-position negatives that happen to repeat one shared draw give the
    batch-shared loss: the three modes differ only in how often they draw."""
    enc = encoder("ligr")
    parts = Parts(enc, ShiftedSequence(8), SampledSoftmax(logq_correction=False), UniformSampler(30))
    tokens = _left_padded([4, 2, 6, 3], 9, np.random.default_rng(2))
    inputs, targets = parts.objective.make_batch(tokens, np.random.default_rng(0))
    shared = torch.randint(0, 30, (5,), generator=torch.Generator().manual_seed(3))
    rows = {"batch": 1, "sequence": len(tokens), "position": int((targets >= 0).sum())}
    losses = []
    for per, n_rows in rows.items():
        negs = shared if per == "batch" else shared.expand(n_rows, -1)
        opts = TrainOptions(1, 1, 8, 1e-3, 5, per, True, False)  # type: ignore[arg-type]
        loss, _ = _step_loss(
            parts, inputs, targets, negs, torch.zeros(negs.shape), enc, opts, torch.device("cpu")
        )
        losses.append(loss)
    torch.testing.assert_close(losses[1], losses[0])
    torch.testing.assert_close(losses[2], losses[0])


@pytest.mark.parametrize("chunk_bytes", [1, 64, 1 << 20])
def test_row_logits_match_gathered_embeddings(chunk_bytes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Row-chunked per-sequence logits equal the naive gather (values and gradients) however the
    rows are cut into chunks, including a row without targets."""
    monkeypatch.setattr(rl, "CHUNK_BYTES", chunk_bytes)
    gen = torch.Generator().manual_seed(0)
    counts = np.array([3, 1, 0, 6, 2, 2, 5, 1, 4])
    row = np.repeat(np.arange(len(counts)), counts)
    h = torch.randn(len(row), 5, dtype=torch.double, generator=gen, requires_grad=True)
    table = torch.randn(11, 5, dtype=torch.double, generator=gen, requires_grad=True)
    negs = torch.randint(0, 11, (len(counts), 4), generator=gen)
    targets = torch.randint(0, 11, (len(row),), generator=gen)
    pos, neg = rl.row_logits(h, row, table, targets, negs)
    ref_pos = (h * table[targets]).sum(-1)
    ref_neg = torch.einsum("pd,pnd->pn", h, table[negs[torch.from_numpy(row)]])
    torch.testing.assert_close(pos, ref_pos)
    torch.testing.assert_close(neg, ref_neg)
    g_pos, g_neg = torch.randn(pos.shape, generator=gen), torch.randn(neg.shape, generator=gen)
    got = torch.autograd.grad((pos, neg), (h, table), (g_pos.double(), g_neg.double()))
    want = torch.autograd.grad((ref_pos, ref_neg), (h, table), (g_pos.double(), g_neg.double()))
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b)
    assert torch.autograd.gradcheck(lambda a, b: rl.row_logits(a, row, b, targets, negs), (h, table))
