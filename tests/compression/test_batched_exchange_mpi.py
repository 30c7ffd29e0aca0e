"""End to end under MPI: a few SGD steps whose gradients go through the exchange, once with the
batched decode and once with the old codecs and the old one-device-at-a-time exchange, in the
same processes: the same ledger, byte for byte, and the same weights. Run with
``mpiexec -n 4 python -m pytest --with-mpi tests/compression/test_batched_exchange_mpi.py``.
"""
from __future__ import annotations

import pytest
import torch
from old_codecs import OldQSGD, OldSignSGD, OldTopK

from edgempi.comm import Comm
from edgempi.compression import Compressor, GradientExchange, create

NUMEL = 70_001  # two blocks, a short last bucket and a short last byte
CASES = {
    "topk": (lambda seed: create("topk", ratio=0.05, seed=seed), lambda seed: OldTopK(0.05, seed=seed)),
    "qsgd-8bit": (lambda seed: create("qsgd", levels=127, bucket_size=64, seed=seed),
                  lambda seed: OldQSGD(127, 64, seed)),
    "qsgd-4bit": (lambda seed: create("qsgd", levels=5, bucket_size=100, seed=seed),
                  lambda seed: OldQSGD(5, 100, seed)),
    "qsgd-2bit": (lambda seed: create("qsgd", levels=1, bucket_size=512, seed=seed),
                  lambda seed: OldQSGD(1, 512, seed)),
    "signsgd": (lambda seed: create("signsgd"), lambda seed: OldSignSGD()),
}


def train(compressor: Compressor, dense_downlink: bool, steps: int = 4) -> tuple[torch.Tensor, tuple[int, ...]]:
    """SGD on a per-device least-squares loss; returns the weights and the ledger's counts."""
    comm = Comm()
    ex = GradientExchange(compressor, comm, NUMEL, error_feedback=True, dense_downlink=dense_downlink)
    gen = torch.Generator().manual_seed(comm.rank)
    a, b = torch.randn(NUMEL, generator=gen), torch.randn(NUMEL, generator=gen)
    w = torch.zeros(NUMEL)
    for step in range(steps):
        grad = 2 * a * (a * w - b)
        ex.exchange_mean_(grad, step, epoch=0.0)
        w -= 0.05 * grad
    ledger = comm.ledger
    return w, (ledger.rounds, ledger.bytes_up, ledger.bytes_down, ledger.ctrl_bytes)


@pytest.mark.mpi(min_size=2)
@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("dense_downlink", [False, True])
def test_batched_exchange_trains_as_the_old_one(case: str, dense_downlink: bool) -> None:
    new, old = CASES[case]
    rank, size = Comm().rank, Comm().size
    w_new, ledger_new = train(new(100 + rank), dense_downlink)
    w_old, ledger_old = train(old(100 + rank), dense_downlink)
    assert ledger_new == ledger_old
    assert torch.allclose(w_new, w_old, rtol=0, atol=1e-6 * float(w_old.abs().max()))
    if size <= 4:  # torch sums up to four rows in rank order, as the old loop did
        assert torch.equal(w_new, w_old)
