"""Collective tests of the exchange: run with
``mpiexec -n 4 python -m pytest --with-mpi -m mpi tests/compression``.

Every test finishes its collectives before it asserts, and every verdict is computed from
gathered values, identically on every rank, so a failure cannot leave a rank waiting.
"""
from __future__ import annotations

import math

import pytest
import torch
from helpers import make_exchange

from edgempi.comm import Comm
from edgempi.compression import COMPRESSORS, create

SHAPES = [(8, 5), (6, 3, 2, 2), (7,), (4, 9)]
NUMEL = sum(math.prod(s) for s in SHAPES)
SETTINGS = {"ratio": 0.1, "levels": 4, "bucket_size": 32, "rank": 2}


def inputs(step: int, size: int) -> list[torch.Tensor]:
    """Every device's vector of one step; each rank can compute them all."""
    return [torch.randn(NUMEL, generator=torch.Generator().manual_seed(1000 * step + r)) for r in range(size)]


def gather(comm: Comm, t: torch.Tensor) -> list[torch.Tensor]:
    return [torch.frombuffer(bytearray(b), dtype=t.dtype) for b in comm.mpi.allgather(t.numpy().tobytes())]


def bitwise_equal(tensors: list[torch.Tensor]) -> bool:
    return all(torch.equal(t, tensors[0]) for t in tensors)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("name", list(COMPRESSORS))
def test_exchange_gives_every_device_the_mean_of_what_was_sent(name: str) -> None:
    """Bitwise identical on every rank after each exchange, and equal to the mean of what each
    device sent (input + old residual − new residual): the Allgather path with devices that
    pick different indices, and the Allreduce path alike."""
    comm = Comm()
    ex = make_exchange({"name": name, "error_feedback": True, **SETTINGS}, comm, SHAPES, seed=5)
    atol = 4e-3 if name == "fp16" else 1e-5  # the fp16 sum itself rounds to ~1e-3 at |x| ~ 2
    identical, close, residual = [], [], torch.zeros(NUMEL)
    for step in range(3):
        flat = inputs(step, comm.size)[comm.rank].clone()
        acc = flat + residual
        ex.exchange_mean_(flat, step, epoch=0.0)
        residual = getattr(ex.memory, "residual", torch.zeros(NUMEL)).clone()
        sent = gather(comm, acc - residual)
        identical.append(bitwise_equal(gather(comm, flat)))
        close.append(torch.allclose(flat, torch.stack(sent).mean(0), atol=atol))
    assert identical == [True] * 3
    assert close == [True] * 3
    assert comm.ledger.rounds == 3


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("settings", [{"name": "none"}, {"name": "topk", "ratio": 1.0},
                                      {"name": "powersgd", "rank": 9}])
def test_lossless_settings_give_the_exact_mean(settings: dict) -> None:
    comm = Comm()
    ex = make_exchange(settings, comm, SHAPES)
    xs = inputs(0, comm.size)
    flat = xs[comm.rank].clone()
    ex.exchange_mean_(flat, 0, 0.0)
    assert torch.allclose(flat, torch.stack(xs).mean(0), atol=1e-5)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("dense_downlink", [False, True])
def test_topk_gathers_different_indices_and_counts_them(dense_downlink: bool) -> None:
    comm = Comm()
    ex = make_exchange({"name": "topk", "ratio": 0.1}, comm, SHAPES,
                                      dense_downlink=dense_downlink)
    xs = inputs(0, comm.size)
    flat = xs[comm.rank].clone()
    ex.exchange_mean_(flat, 0, 0.0)
    k = round(0.1 * NUMEL)
    tops = [torch.topk(x.abs(), k).indices for x in xs]
    expected = torch.zeros(NUMEL)
    for x, top in zip(xs, tops):
        expected[top] += x[top] / comm.size
    assert len({tuple(sorted(t.tolist())) for t in tops}) > 1
    assert torch.allclose(flat, expected, atol=1e-6)
    down = 4 * NUMEL if dense_downlink else (comm.size - 1) * 8 * k
    assert (comm.ledger.rounds, comm.ledger.bytes_up, comm.ledger.bytes_down) == (1, 8 * k, down)


@pytest.mark.mpi(min_size=2)
def test_randomk_sends_the_same_indices_from_every_device() -> None:
    comm = Comm()
    ex = make_exchange({"name": "randomk", "ratio": 0.2}, comm, SHAPES, seed=3)
    xs = inputs(0, comm.size)
    flat = xs[comm.rank].clone()
    ex.exchange_mean_(flat, step=4, epoch=0.0)
    idx = ex.compressor.chosen(NUMEL, 4)
    expected = torch.zeros(NUMEL)
    expected[idx] = torch.stack(xs).mean(0)[idx] * ex.compressor.scale(NUMEL)
    assert bitwise_equal(gather(comm, idx))
    assert torch.allclose(flat, expected, atol=1e-5)
    assert comm.ledger.bytes_up == comm.ledger.bytes_down == 4 * idx.numel()


@pytest.mark.mpi(min_size=2)
def test_fp16_divides_before_summing() -> None:
    """40000 on every device: the fp16 sum would overflow (> 65504), the mean does not."""
    comm = Comm()
    ex = make_exchange({"name": "fp16"}, comm, SHAPES)
    flat = torch.full((NUMEL,), 40000.0)
    ex.exchange_mean_(flat, 0, 0.0)
    assert torch.equal(flat, torch.full((NUMEL,), 40000.0))
    assert comm.ledger.bytes_up == 2 * NUMEL


@pytest.mark.mpi(min_size=2)
def test_powersgd_is_two_allreduces_of_the_factors_in_one_round() -> None:
    comm = Comm()
    ex = make_exchange({"name": "powersgd", "rank": 2}, comm, SHAPES)
    ex.exchange_mean_(inputs(0, comm.size)[comm.rank].clone(), 0, 0.0)
    single = create("powersgd", rank=2, shapes=SHAPES).compress(torch.randn(NUMEL))
    factors = 2 * (8 + 5) + 2 * (6 + 12) + 2 * (4 + 9)
    assert (comm.ledger.rounds, comm.ledger.bytes_up) == (1, 4 * (factors + 7))
    assert sum(t.numel() for t in single) == factors + 7


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("numel", [1001, 3])
def test_half_precision_sum_adds_in_float32_and_agrees_bitwise(numel: int) -> None:
    """fp16 payloads are summed by the comm layer itself (a reduce-scatter, float32 adds, an
    allgather), for lengths that do not split evenly over the ranks, or leave a rank no slice."""
    comm = Comm()
    values = [torch.empty(numel).uniform_(-1, 1, generator=torch.Generator().manual_seed(r)).half()
              for r in range(comm.size)]
    buf = values[comm.rank].clone()
    comm.allreduce_sum_(buf)
    everyone = gather(comm, buf)
    expected = torch.stack(values).double().sum(0).half()
    assert bitwise_equal(everyone)
    assert torch.allclose(buf.float(), expected.float(), rtol=1e-3, atol=1e-3)
    assert torch.equal(buf, torch.stack(values).float().sum(0).half())  # float32 adds in rank order, rounded once
    assert comm.ledger.bytes_up == comm.ledger.bytes_down == 2 * numel
