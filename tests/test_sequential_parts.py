"""Parts of the sequential transformers: shapes, masking, losses against hand-computed values."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest
import torch

from vitrina.models.sequential.layers import LiGRBlock, PreLNBlock, SASRecBlock, attention_mask, build_layers
from vitrina.models.sequential.losses import BCE, GBCE, FullSoftmax, SampledSoftmax
from vitrina.models.sequential.network import SequenceEncoder
from vitrina.models.sequential.objectives import MaskedItem, ShiftedSequence
from vitrina.models.sequential.samplers import InBatchSampler, MixedSampler, UniformSampler


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Tiny tensors: one thread avoids OpenMP hand-off costs that dominate on a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


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
