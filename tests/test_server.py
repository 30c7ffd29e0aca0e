"""Server optimizers (FedOpt) and FedBN: the steps against a reference, and the config checks."""
from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from helpers import edgempi, small_config, write_config

from edgempi.algorithms.fedbn import shared_positions
from edgempi.algorithms.server import ServerOptimizer, ServerSettings
from edgempi.config import from_dict
from edgempi.models import create
from edgempi.settings import ConfigError

DELTAS = [np.array([0.5, -1.0, 2.0, 0.0, 1e-4]), np.array([-0.25, -1.0, 1.0, 3.0, 0.0])]


def reference(kind: str, lr: float, momentum=0.9, b1=0.9, b2=0.99, tau=1e-3) -> list[np.ndarray]:
    """Algorithm 2 of Reddi et al. (ICLR 2021) and FedAvgM, in float64 numpy, step by step."""
    m, v, moves = np.zeros(5), np.full(5, tau ** 2), []
    for d in DELTAS:
        if kind == "sgd":
            m = momentum * m + d
            moves.append(lr * m)
            continue
        m = b1 * m + (1 - b1) * d
        if kind == "adagrad":
            v = v + d ** 2
        elif kind == "yogi":
            v = v - (1 - b2) * d ** 2 * np.sign(v - d ** 2)
        else:
            v = b2 * v + (1 - b2) * d ** 2
        moves.append(lr * m / (np.sqrt(v) + tau))
    return moves


@pytest.mark.parametrize("kind,lr", [("sgd", 1.0), ("sgd", 0.3), ("adam", 0.01), ("yogi", 0.02), ("adagrad", 0.1)])
def test_each_server_step_matches_the_reference(kind, lr):
    server = ServerOptimizer(ServerSettings(server_optimizer=kind, server_lr=lr), 5)
    for delta, expected in zip(DELTAS, reference(kind, lr)):
        got = server.step(torch.tensor(delta, dtype=torch.float32))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-8)


def test_server_state_round_trips():
    a = ServerOptimizer(ServerSettings(server_optimizer="adam"), 5)
    a.step(torch.tensor(DELTAS[0], dtype=torch.float32))
    b = ServerOptimizer(ServerSettings(server_optimizer="adam"), 5)
    b.load_state_dict(a.state_dict())
    d = torch.tensor(DELTAS[1], dtype=torch.float32)
    assert torch.equal(a.step(d.clone()), b.step(d.clone()))


def test_keras_adam_against_a_hand_computation():
    """Three bias-corrected steps, each in plain Python floats as Keras' Adam computes them
    (m₀ = v₀ = 0; lr_t = η·√(1 − β₂ᵗ)/(1 − β₁ᵗ); move = lr_t·m/(√v + ε)), with the paper's
    η 1e-3, β₂ 0.999, ε 1e-7. The first move is about η·sign(Δ) wherever |Δ| ≫ ε."""
    settings = ServerSettings(server_optimizer="adam", server_lr=1e-3, server_beta2=0.999, server_eps=1e-7,
                              server_bias_correction=True)
    server = ServerOptimizer(settings, 3)
    deltas = [[0.5, -2e-3, 0.0], [-0.25, 1e-3, 3e-7], [0.125, 4e-3, -1e-6]]
    m, v = [0.0] * 3, [0.0] * 3
    for t, delta in enumerate(deltas, start=1):
        lr_t = 1e-3 * (1 - 0.999 ** t) ** 0.5 / (1 - 0.9 ** t)
        m = [0.9 * a + 0.1 * d for a, d in zip(m, delta)]
        v = [0.999 * b + 0.001 * d * d for b, d in zip(v, delta)]
        expected = [lr_t * a / (b ** 0.5 + 1e-7) for a, b in zip(m, v)]
        got = server.step(torch.tensor(delta, dtype=torch.float32))
        np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5, atol=1e-12)
        if t == 1:
            np.testing.assert_allclose(got.numpy()[:2], [1e-3, -1e-3], rtol=1e-2)
    assert server.t == 3


def test_server_eps_replaces_tau_in_the_denominator_only():
    """Unset, ε is τ (the steps so far, bit for bit); set, v still starts at τ²."""
    delta = torch.tensor(DELTAS[0], dtype=torch.float32)
    plain = ServerOptimizer(ServerSettings(server_optimizer="adam"), 5).step(delta.clone())
    same = ServerOptimizer(ServerSettings(server_optimizer="adam", server_eps=1e-3), 5).step(delta.clone())
    assert torch.equal(plain, same)
    other = ServerOptimizer(ServerSettings(server_optimizer="adam", server_eps=1e-7), 5)
    assert torch.equal(other.v, torch.full((5,), 1e-6))
    m, v = 0.1 * DELTAS[0], 0.99 * 1e-6 + 0.01 * DELTAS[0] ** 2
    np.testing.assert_allclose(other.step(delta.clone()).numpy(), 0.01 * m / (np.sqrt(v) + 1e-7), rtol=1e-5)


def test_bias_corrected_state_round_trips_with_its_step_count():
    """A checkpoint keeps t: a restored server takes the fourth step, not a second first one
    (through torch.save and the weights-only load that reads rank files)."""
    settings = ServerSettings(server_optimizer="adam", server_bias_correction=True, server_eps=1e-7)
    a = ServerOptimizer(settings, 5)
    for delta in (*DELTAS, DELTAS[0]):
        a.step(torch.tensor(delta, dtype=torch.float32))
    state = a.state_dict()
    assert state["t"] == 3 and isinstance(state["t"], int)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    b = ServerOptimizer(settings, 5)
    b.load_state_dict(torch.load(io.BytesIO(buffer.getvalue()), weights_only=True))
    d = torch.tensor(DELTAS[1], dtype=torch.float32)
    assert torch.equal(a.step(d.clone()), b.step(d.clone())) and b.t == 4


def test_plain_sgd_is_plain_averaging():
    assert ServerOptimizer.create(ServerSettings(server_optimizer="sgd", server_momentum=0.0), 5) is None
    assert ServerOptimizer.create(ServerSettings(server_optimizer="none"), 5) is None
    assert ServerOptimizer.create(ServerSettings(server_optimizer="sgd"), 5) is not None  # μ = 0.9 by default


def test_defaults_are_the_papers():
    s = ServerSettings(server_optimizer="adam")
    assert (s.server_beta1, s.server_beta2, s.server_tau, s.server_momentum) == (0.9, 0.99, 1e-3, 0.9)
    assert ServerSettings(server_optimizer="sgd").server_step_lr == 1.0


def test_shared_positions_leave_out_every_batchnorm_parameter():
    model = create("lenet5", norm="batch")
    index = shared_positions(model)
    total = sum(p.numel() for p in model.parameters())
    assert total - len(index) == 2 * (6 + 16)  # weight and bias of both BatchNorm layers
    assert len(shared_positions(create("lenet5"))) == total - 44


FED = ["algorithm.name=fedavg", "algorithm.local_steps=4"]


@pytest.mark.parametrize("overrides,key", [
    ([*FED, "algorithm.server_optimizer=lamb"], "algorithm.server_optimizer"),
    ([*FED, "algorithm.server_optimizer=adam", "algorithm.server_lr=-0.1"], "algorithm.server_lr"),
    ([*FED, "algorithm.server_optimizer=adam", "algorithm.server_tau=0"], "algorithm.server_tau"),
    ([*FED, "algorithm.server_optimizer=adam", "algorithm.server_eps=0"], "algorithm.server_eps"),
    ([*FED, "algorithm.server_optimizer=sgd", "algorithm.server_eps=1e-7"], "algorithm.server_eps"),
    ([*FED, "algorithm.server_optimizer=yogi", "algorithm.server_bias_correction=true"],
     "algorithm.server_bias_correction"),
    ([*FED, "algorithm.server_optimizer=adam", "algorithm.server_bias_correction=yes please"],
     "algorithm.server_bias_correction"),
    (["algorithm.name=large_batch", "algorithm.server_optimizer=adam"], "algorithm.server_optimizer"),
    (["algorithm.name=dynamic", "algorithm.delta=1", "algorithm.balancing=true", "algorithm.server_optimizer=sgd"],
     "algorithm.server_optimizer"),
    (["algorithm.name=scaffold", "algorithm.local_steps=4", "algorithm.server_optimizer=adam"],
     "algorithm.server_optimizer"),
    ([*FED, "algorithm.server_optimizer=adam", "compression.name=topk", "compression.ratio=0.1"],
     "algorithm.server_optimizer"),
    ([*FED, "algorithm.local_bn=true"], "algorithm.local_bn"),  # LeNet-5 without BatchNorm
    (["algorithm.name=fda", "algorithm.local_bn=true", "model.norm=batch"], "algorithm.local_bn"),
    (["algorithm.name=fedprox", "algorithm.local_steps=4", "algorithm.local_bn=true", "model.norm=batch"],
     "algorithm.local_bn"),
])
def test_bad_settings_are_one_line_errors(overrides, key):
    with pytest.raises(ConfigError) as err:
        from_dict(small_config(), overrides)
    assert err.value.key == key and "\n" not in str(err.value)


def test_good_settings_pass():
    for extra in (["algorithm.server_optimizer=yogi", "algorithm.server_lr=0.03"],
                  ["algorithm.local_bn=true", "model.norm=batch", "parallel.devices_per_rank=2"]):
        from_dict(small_config(), [*FED, *extra])
    from_dict(small_config(), ["algorithm.name=fda", "algorithm.server_optimizer=adam"])
    from_dict(small_config(), [*FED, "algorithm.server_optimizer=adam", "algorithm.server_bias_correction=true",
                               "algorithm.server_eps=1e-7", "algorithm.server_beta2=0.999"])
    from_dict(small_config(), ["algorithm.name=dynamic", "algorithm.delta=1", "algorithm.server_optimizer=sgd"])


def test_cli_refuses_a_bad_server_optimizer_with_exit_2(tmp_path):
    cfg = write_config(tmp_path / "c.yaml", small_config(algorithm={"name": "fedavg", "local_steps": 4,
                                                                   "server_optimizer": "lamb"}))
    proc = edgempi("run", str(cfg), "--out", str(tmp_path), ranks=None)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "algorithm.server_optimizer" in proc.stderr and not list(tmp_path.glob("*.h5"))
