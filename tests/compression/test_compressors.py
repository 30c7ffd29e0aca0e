"""Single-process tests of the compressors, the error-feedback memories and the byte counts."""
from __future__ import annotations

import math

import pytest
import torch
from helpers import make_exchange, self_comm

from edgempi.compression import ErrorFeedback, MomentumCorrection, create, payload_bytes
from edgempi.compression.registry import build, settings_of

SHAPES = [(8, 5), (6, 3, 2, 2), (7,), (4, 9)]
NUMEL = sum(math.prod(s) for s in SHAPES)


def vector(numel: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(numel, generator=torch.Generator().manual_seed(seed))


def roundtrip(name: str, x: torch.Tensor, step: int = 0, **kw) -> torch.Tensor:
    comp = create(name, **kw)
    return comp.decompress(comp.compress(x, step), x.numel())


def test_none_and_fp16_roundtrip() -> None:
    x = vector(1000)
    assert torch.equal(roundtrip("none", x), x)
    assert torch.equal(roundtrip("fp16", x), x.half().float())


@pytest.mark.parametrize("name,kw", [("fp16", {}), ("powersgd", {"rank": 2, "shapes": SHAPES}),
                                     ("randomk", {"ratio": 0.1}), ("topk", {"ratio": 0.1}), ("qsgd", {})])
def test_residual_is_what_was_not_sent(name: str, kw: dict) -> None:
    """Error feedback keeps acc − decompress(sent), bit for bit, whichever way a compressor
    forms it (decoding into the residual's buffer, a sparse update, or block by block)."""
    comp, acc = create(name, **kw), vector(NUMEL, seed=5) * 1e3
    payload = comp.compress(acc.clone())
    expected = acc - comp.decompress(payload, NUMEL)
    out = torch.full_like(acc, float("nan"))
    comp.residual_into(out, acc, payload)
    assert torch.equal(out, expected) and expected.abs().max() > 0


@pytest.mark.parametrize("name", ["qsgd", "signsgd"])
def test_gathered_exchange_of_one_device(name: str) -> None:
    """One rank alone (large_batch under mpiexec -n 1): its gathered payload comes back as a
    single row whose packed bytes are not a whole number of float32s, and is its own mean."""
    x = vector(1001, seed=2)
    ex = make_exchange({"name": name}, self_comm(), [(1001,)])
    reference = make_exchange({"name": name}, self_comm(), [(1001,)]).compressor  # same seed
    expected = reference.decompress(reference.compress(x.clone()), x.numel())
    got = x.clone()
    ex.exchange_mean_(got, 0, 0.0)
    assert torch.equal(got, expected)


def test_topk_at_full_density_equals_none() -> None:
    x = vector(5000)
    assert torch.equal(roundtrip("topk", x, ratio=1.0), x)


@pytest.mark.parametrize("numel, ratio", [(2_000_000, 0.001), (2_000_000, 0.01), (61_706, 0.001)])
def test_topk_picks_the_largest_magnitudes(numel: int, ratio: float) -> None:
    """The sampled threshold keeps exactly the top-k whenever enough candidates pass."""
    x = vector(numel, seed=3)
    values, idx = create("topk", ratio=ratio, seed=1).compress(x)
    k = round(ratio * numel)
    exact = set(torch.topk(x.abs(), k).indices.tolist())
    chosen = idx.long()
    assert set(chosen.tolist()) <= exact and len(chosen) >= 0.8 * k
    assert torch.equal(values, x[chosen])


def test_topk_warmup_follows_dgc_schedule() -> None:
    comp = create("topk", ratio=0.001, warmup_epochs=4)
    densities = [comp.density(e + 0.5) for e in range(6)]
    assert densities[:4] == pytest.approx([0.25, 0.0625, 0.015625, 0.0039], rel=0.03)
    assert densities[4:] == [0.001, 0.001]
    assert create("topk", ratio=0.001).density(0.0) == 0.001


def test_powersgd_at_full_rank_equals_none() -> None:
    x = vector(NUMEL)
    assert torch.allclose(roundtrip("powersgd", x, rank=9, shapes=SHAPES), x, atol=1e-5)


def test_powersgd_low_rank_is_an_approximation_of_each_matrix() -> None:
    x = vector(NUMEL)
    y = roundtrip("powersgd", x, rank=1, shapes=SHAPES)
    assert torch.equal(y[112:119], x[112:119])  # the vector of shape (7,) travels as it is
    m = y[:40].view(8, 5)
    assert torch.linalg.matrix_rank(m) == 1 and not torch.allclose(m, x[:40].view(8, 5))


def seeded_mean(name: str, x: torch.Tensor, draws: int, **kw) -> torch.Tensor:
    """Mean of many independent compressions: per step (randomk) or per seed (qsgd)."""
    total = torch.zeros_like(x, dtype=torch.float64)
    for t in range(draws):
        seeded = {"seed": t} if name == "qsgd" else {}
        total += roundtrip(name, x, step=t, **kw, **seeded).double()
    return total / draws


def test_randomk_is_unbiased() -> None:
    x, draws = vector(20), 4000
    p = 1 / create("randomk", ratio=0.5).scale(20)
    sigma = x.double().abs() * math.sqrt((1 / p - 1) / draws)
    assert (seeded_mean("randomk", x, draws, ratio=0.5) - x).abs().le(5 * sigma).all()


def test_qsgd_is_unbiased() -> None:
    x, draws, levels, bucket = vector(64), 4000, 2, 16
    norms = torch.linalg.vector_norm(x.view(-1, bucket), dim=1).repeat_interleave(bucket).double()
    sigma = norms / (2 * levels * math.sqrt(draws))  # each element's variance <= (norm/levels)^2 / 4
    mean = seeded_mean("qsgd", x, draws, levels=levels, bucket_size=bucket)
    assert (mean - x).abs().le(5 * sigma).all()


@pytest.mark.parametrize("levels", [1, 5, 7, 8, 127])  # codes packed 4, 2, 2, 1 and 1 to a byte
@pytest.mark.parametrize("numel", [1000, 1003])  # 1003: the last byte holds fewer codes
def test_qsgd_error_is_within_one_level_per_bucket_with_a_short_last_bucket(levels: int, numel: int) -> None:
    x, bucket = vector(numel), 64
    y = roundtrip("qsgd", x, levels=levels, bucket_size=bucket)
    norms = torch.linalg.vector_norm(torch.nn.functional.pad(x, (0, -numel % bucket)).view(-1, bucket), dim=1)
    step = norms.repeat_interleave(bucket)[:numel] / levels
    assert (y - x).abs().le(step + 1e-6).all()
    on_grid = y / step
    assert torch.allclose(on_grid, on_grid.round(), atol=1e-4) and on_grid.abs().max() <= levels + 1e-4
    assert not torch.equal(y, x)


def test_signsgd_sends_scaled_signs() -> None:
    x = vector(13)
    y = roundtrip("signsgd", x)
    scale = x.abs().mean()
    assert torch.allclose(y, torch.where(x >= 0, scale, -scale))


@pytest.mark.parametrize("name, kw, expected", [
    ("none", {}, lambda d, p: 4 * d),
    ("fp16", {}, lambda d, p: 2 * d),
    ("topk", {"ratio": 0.01}, lambda d, p: 8 * round(0.01 * d)),
    ("randomk", {"ratio": 0.01}, lambda d, p: 4 * p[0].numel()),
    ("qsgd", {"levels": 8, "bucket_size": 128}, lambda d, p: d + 4 * math.ceil(d / 128)),
    ("qsgd", {"levels": 7, "bucket_size": 128}, lambda d, p: math.ceil(d / 2) + 4 * math.ceil(d / 128)),
    ("qsgd", {"levels": 1, "bucket_size": 128}, lambda d, p: math.ceil(d / 4) + 4 * math.ceil(d / 128)),
    ("signsgd", {}, lambda d, p: math.ceil(d / 8) + 4),
])
def test_payload_bytes(name: str, kw: dict, expected) -> None:
    d = 10_001
    payload = create(name, **kw).compress(vector(d))
    assert payload_bytes(payload) == expected(d, payload)


def test_powersgd_payload_bytes() -> None:
    payload = create("powersgd", rank=2, shapes=SHAPES).compress(vector(NUMEL))
    factors = 2 * (8 + 5) + 2 * (6 + 12) + 2 * (4 + 9)
    assert payload_bytes(payload) == 4 * (factors + 7)


@pytest.mark.parametrize("name, kw", [("topk", {"ratio": 0.05}), ("signsgd", {}), ("qsgd", {"levels": 4}),
                                      ("fp16", {}), ("randomk", {"ratio": 0.1, "unbiased": False}),
                                      ("powersgd", {"rank": 1, "shapes": SHAPES})])
def test_error_feedback_keeps_sent_plus_residual_equal_to_input(name: str, kw: dict) -> None:
    comp, memory = create(name, **kw), ErrorFeedback(NUMEL)
    inputs, sent = torch.zeros(NUMEL, dtype=torch.float64), torch.zeros(NUMEL, dtype=torch.float64)
    for step in range(20):
        g = vector(NUMEL, seed=step)
        inputs += g.double()
        acc = memory.accumulate_(g)
        payload = comp.compress(acc, step)
        sent += comp.decompress(payload, NUMEL).double()
        memory.update_(acc, comp, payload)
    assert torch.allclose(sent + memory.residual.double(), inputs, atol=1e-4)
    assert memory.residual.abs().sum() > 0


def test_momentum_correction_zeroes_what_was_sent() -> None:
    comp, memory = create("topk", ratio=0.1), MomentumCorrection(NUMEL, momentum=0.9)
    for step in range(3):
        v = memory.accumulate_(vector(NUMEL, seed=step)).clone()
        payload = comp.compress(memory.v, step)
        memory.update_(memory.v, comp, payload)
        idx = payload[1].long()
        assert torch.equal(payload[0], v[idx])
        assert memory.v[idx].eq(0).all() and memory.u[idx].eq(0).all()
        assert torch.equal(memory.v + comp.decompress(payload, NUMEL), v)


def exchange(settings: dict, **kw):
    return make_exchange(settings, self_comm(), SHAPES, **kw)


def test_exchange_on_one_device_keeps_the_sent_vector_and_counts_its_bytes() -> None:
    ex = exchange({"name": "topk", "ratio": 0.1, "error_feedback": True})
    x = vector(NUMEL)
    flat = x.clone()
    ex.exchange_mean_(flat, step=0, epoch=0.0)
    k = round(0.1 * NUMEL)
    assert torch.count_nonzero(flat) == k and torch.allclose(flat + ex.memory.residual, x)
    assert (ex.comm.ledger.rounds, ex.comm.ledger.bytes_up, ex.comm.ledger.bytes_down) == (1, 8 * k, 0)


def test_exchange_takes_over_momentum_only_for_dgc() -> None:
    assert exchange({"name": "topk", "error_feedback": True}, momentum=0.9).owns_momentum
    assert not exchange({"name": "topk", "error_feedback": False}, momentum=0.9).owns_momentum
    assert not exchange({"name": "qsgd", "error_feedback": True}, momentum=0.9).owns_momentum


def test_exchange_clips_locally() -> None:
    flat = torch.full((NUMEL,), 10.0)
    exchange({"name": "none", "clip_norm": 2.0}).exchange_mean_(flat, 0, 0.0)
    assert flat.norm().item() == pytest.approx(2.0, rel=1e-5)


@pytest.mark.parametrize("settings, key", [
    ({"name": "zip"}, "compression.name"),
    ({"name": "topk", "ratio": 0.0}, "compression.ratio"),
    ({"name": "topk", "warmup_epochs": -1}, "compression.warmup_epochs"),
    ({"name": "qsgd", "levels": 300}, "compression.levels"),
    ({"name": "powersgd", "rank": 0}, "compression.rank"),
    ({"name": "none", "ratoi": 0.1}, "compression.ratoi"),
    ({"name": "none", "clip_norm": -1.0}, "compression.clip_norm"),
])
def test_bad_settings_name_the_key(settings: dict, key: str) -> None:
    with pytest.raises(ValueError, match=key):
        settings_of(settings)


def test_settings_of_other_compressors_are_ignored() -> None:
    comp = build({"name": "qsgd", "ratio": 0.5, "rank": 2, "levels": 3}, SHAPES, seed=0)
    assert comp.levels == 3
    with pytest.raises(ValueError, match="compression.ratio"):
        create("qsgd", ratio=0.5)


def test_powersgd_needs_the_layout() -> None:
    with pytest.raises(ValueError, match="layout"):
        create("powersgd")
    with pytest.raises(ValueError, match="layout holds"):
        create("powersgd", shapes=SHAPES).compress(vector(NUMEL + 1))
