"""Collective tests of dynamic averaging and FDA (run under ``mpiexec -n 4 pytest --with-mpi``).

The limits (Θ = 0, Θ = ∞, Δ = 0) must reduce to FedAvg exactly; in between, the estimates are
checked against the true model variance, computed here from every device's Δ.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from test_methods import LENET, run, same_on_all_ranks

from edgempi.algorithms.dynamic import Dynamic
from edgempi.algorithms.fda import FDA, SketchState
from edgempi.algorithms.model_drift import DriftPolicy
from edgempi.comm import Comm

pytestmark = pytest.mark.mpi(min_size=2)
STATE_BYTES = {"naive": 4, "linear": 8, "sketch": 4 + 4 * 5 * 250}
NEVER = "algorithm.theta=1.0e+30"  # the config takes finite numbers only: Θ = ∞ in effect


def fda(variant: str, *extra: str) -> list[str]:
    return ["train.steps=12", "algorithm.name=fda", f"algorithm.variant={variant}", *extra]


def all_deltas(comm: Comm, policy: DriftPolicy) -> np.ndarray:
    """[devices × d] the Δ of every device, gathered outside the ledger (measurement only)."""
    local = (policy.ctx.flat.params - policy.w0).double().numpy()
    return np.stack(comm.allgather_object(local))


@pytest.mark.parametrize("variant", ["naive", "linear"])
def test_fda_theta_zero_equals_fedavg_with_one_local_step(variant):
    _, fa, _ = run(["train.steps=12", "algorithm.name=fedavg", "algorithm.local_steps=1"])
    _, fd, comm = run(fda(variant, "algorithm.theta=0"))
    assert [s["step"] for s in fd.syncs] == list(range(1, 13))
    assert torch.equal(fa.storage, fd.storage)
    assert comm.ledger.rounds == 12 and comm.ledger.bytes_up == comm.ledger.bytes_down == 12 * 4 * LENET
    assert comm.ledger.ctrl_bytes == 12 * STATE_BYTES[variant]


@pytest.mark.parametrize("variant", ["naive", "linear", "sketch"])
def test_fda_theta_infinite_never_syncs(variant):
    _, outcome, comm = run(fda(variant, NEVER))
    assert outcome.syncs == [] and comm.ledger.rounds == 0 and comm.ledger.bytes_up == 0
    assert comm.ledger.ctrl_bytes == 12 * STATE_BYTES[variant]
    assert outcome.steps[-1]["ctrl_bytes"] == 12 * STATE_BYTES[variant]
    assert not same_on_all_ranks(comm, outcome.storage)


def test_dynamic_delta_zero_equals_fedavg_with_check_period():
    _, fa, _ = run(["train.steps=12", "algorithm.name=fedavg", "algorithm.local_steps=3"])
    _, dy, comm = run(["train.steps=12", "algorithm.name=dynamic", "algorithm.delta=0", "algorithm.check_every=3"])
    assert torch.equal(fa.storage, dy.storage)
    assert dy.syncs == [{"step": s, "violators": comm.size} for s in (3, 6, 9, 12)]
    assert comm.ledger.rounds == 4 and comm.ledger.ctrl_bytes == 4 * 4


def test_dynamic_large_delta_never_syncs():
    _, outcome, comm = run(["train.steps=12", "algorithm.name=dynamic", "algorithm.delta=1.0e+30",
                            "algorithm.check_every=2"])
    assert outcome.syncs == [] and comm.ledger.rounds == 0 and comm.ledger.ctrl_bytes == 6 * 4


@pytest.mark.parametrize("variant", ["naive", "linear"])
def test_estimates_never_below_the_true_variance(monkeypatch, variant):
    comm = Comm()
    pairs = []
    original = FDA.estimate

    def checked(self):
        deltas = all_deltas(comm, self)
        naive = np.mean(np.sum(deltas ** 2, axis=1))
        mean_delta = deltas.mean(axis=0)
        xi = getattr(self.state, "xi", torch.zeros(1)).double().numpy()
        formula = naive - (mean_delta @ xi) ** 2 if variant == "linear" else naive
        estimate = original(self)
        pairs.append((estimate, naive - np.sum(mean_delta ** 2), naive, formula))
        return estimate

    monkeypatch.setattr(FDA, "estimate", checked)
    _, outcome, _ = run(fda(variant, "train.steps=20", "algorithm.theta=0.01"), comm)
    est, var, naive, formula = np.array(pairs).T
    # The state crosses the network in float32: allow its rounding, nothing more.
    assert np.all(est >= var - 1e-6 * naive), np.min(est - var)
    assert np.allclose(est, formula, rtol=1e-5, atol=0), np.max(np.abs(est - formula))
    assert 2 <= len(outcome.syncs) <= 10 and comm.ledger.rounds == len(outcome.syncs)
    assert [s["estimate"] for s in outcome.syncs] == [e for e in est if e > 0.01]
    if variant == "linear":  # after the first sync ξ points along the drift: a tighter bound
        assert np.mean(est[5:] < naive[5:] * 0.99) > 0.5


def test_sketch_state_is_the_sketch_of_the_mean_delta(monkeypatch):
    comm = Comm()
    checks = []
    original = SketchState.estimate

    def checked(self, mean):
        checks.append((mean.copy(), self.sketch))
        return original(self, mean)

    def with_deltas(self):
        deltas = all_deltas(comm, self)
        estimate = original_fda(self)
        mean, sketch = checks[-1]
        exact = sketch.sketch_(torch.from_numpy(deltas.mean(axis=0)).float(), torch.empty(sketch.size))
        checks[-1] = (np.allclose(mean[1:], exact.numpy(), rtol=1e-4, atol=1e-7),
                      np.isclose(mean[0], np.mean(np.sum(deltas ** 2, axis=1)), rtol=1e-5))
        return estimate

    original_fda = FDA.estimate
    monkeypatch.setattr(SketchState, "estimate", checked)
    monkeypatch.setattr(FDA, "estimate", with_deltas)
    run(fda("sketch", NEVER), comm)
    assert len(checks) == 12 and all(a and b for a, b in checks), checks


@pytest.mark.parametrize("overrides", [
    fda("naive", "train.steps=20", "algorithm.theta=0.01"),
    fda("linear", "train.steps=20", "algorithm.theta=0.01"),
    fda("sketch", "train.steps=20", "algorithm.theta=0.005"),
    ["train.steps=20", "algorithm.name=dynamic", "algorithm.delta=0.012", "algorithm.check_every=2"],
], ids=["naive", "linear", "sketch", "dynamic"])
def test_all_ranks_take_the_same_decisions_and_hold_the_same_weights(monkeypatch, overrides):
    comm = Comm()
    verdicts = []
    original = DriftPolicy.sync

    def checked(self):
        update = original(self)
        verdicts.append(same_on_all_ranks(comm, self.ctx.flat.storage))
        return update

    monkeypatch.setattr(DriftPolicy, "sync", checked)
    _, outcome, _ = run(overrides, comm)
    records = comm.allgather_object(outcome.syncs)
    assert all(r == records[0] for r in records)
    assert 2 <= len(verdicts) <= 15 and all(verdicts) and comm.ledger.rounds == len(verdicts)
    if "algorithm.name=dynamic" in overrides:  # some checks pass, some syncs have only some violators
        assert len(verdicts) < 10 and any(s["violators"] < comm.size for s in outcome.syncs), outcome.syncs


BALANCING = ["train.steps=24", "algorithm.name=dynamic", "algorithm.check_every=2", "algorithm.balancing=true"]


def test_balancing_with_delta_zero_is_a_full_sync_at_every_check():
    """Δ = 0: every device violates, so the first set is everyone: the plain protocol, exactly,
    also on the simulated clock (the upload and the download become two segments, which on
    identical links add up to the plain round's one)."""
    clock = ["network.preset=4g", "network.step_ms=20"]
    _, plain, comm = run(["train.steps=12", "algorithm.name=dynamic", "algorithm.delta=0", "algorithm.check_every=3",
                          *clock])
    _, balanced, bcomm = run(BALANCING[1:] + ["train.steps=12", "algorithm.delta=0", "algorithm.check_every=3",
                                              *clock])
    assert torch.equal(plain.storage, balanced.storage)
    assert balanced.syncs == [{"step": s, "violators": comm.size, "averaged": comm.size} for s in (3, 6, 9, 12)]
    for counter in ("rounds", "bytes_up", "bytes_down", "ctrl_bytes"):
        assert getattr(comm.ledger, counter) == getattr(bcomm.ledger, counter), counter
    assert balanced.steps[-1]["sim_s"] == pytest.approx(plain.steps[-1]["sim_s"], rel=1e-9)


def test_balancing_averages_the_violators_first_and_keeps_the_reference(monkeypatch):
    """Each balancing: the violators are in the set, the set (and only it) holds its average,
    that average is within Δ of r unless the set is everyone (then r is the average), and every
    member uploads once and downloads once. 8 devices (4 ranks × 2): with 4, one violator alone
    never balances (its own model violates) and two already make half."""
    comm = Comm()
    seen = []
    original = Dynamic.balance

    def everyone(tensor: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.as_tensor(t) for t in comm.allgather_object(tensor.clone())])

    def traffic() -> np.ndarray:
        return np.sum(comm.allgather_object([comm.ledger.bytes_up, comm.ledger.bytes_down]), axis=0)

    def checked(self, step, violators):
        before, w0, sent = everyone(self.ctx.bank.params), self.w0.clone(), traffic()
        record = original(self, step, violators)
        after = everyone(self.ctx.bank.params)
        members = (after != before).any(dim=1).numpy()
        mean = before[torch.from_numpy(members)].double().mean(0)
        assert members.sum() == record["averaged"] and not (violators & ~members).any()
        assert torch.allclose(after[torch.from_numpy(members)].double(), mean.expand(int(members.sum()), -1),
                              atol=1e-6)
        if members.all():
            assert torch.equal(self.w0, after[0])
        else:
            assert torch.equal(self.w0, w0) and float(((mean - w0.double()) ** 2).sum()) <= self.delta * (1 + 1e-5)
        assert (traffic() - sent).tolist() == [int(members.sum()) * 4 * LENET] * 2
        seen.append(int(members.sum()))
        return record

    monkeypatch.setattr(Dynamic, "balance", checked)
    _, outcome, _ = run([*BALANCING, "algorithm.delta=0.016", "parallel.devices_per_rank=2"], comm)
    records = comm.allgather_object(outcome.syncs)
    assert all(r == records[0] for r in records)
    assert [s["averaged"] for s in outcome.syncs] == seen
    assert any(n == comm.devices for n in seen), seen  # some fell back to a full sync,
    assert any(s["violators"] < s["averaged"] < comm.devices for s in outcome.syncs), outcome.syncs  # some grew
    assert any(s["violators"] == s["averaged"] for s in outcome.syncs), outcome.syncs  # some did not need to
