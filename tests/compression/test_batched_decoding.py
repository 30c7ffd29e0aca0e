"""The batched decode-and-sum and the blockwise encoders against the old one-device-at-a-time
code (kept in ``old_codecs``), on random payloads: every device's decoded value and every
encoded byte are bitwise the old ones; a mean over devices may add in another order, so it is
held to within float rounding of the old mean ((n + 1)/n · 2⁻²³ · Σ|v|), and found bitwise equal for
up to four devices on torch 2.x."""
from __future__ import annotations

import math

import pytest
import torch
from old_codecs import OldQSGD, OldSignSGD, OldTopK

from edgempi.compression import Compressor, Payload, create

QSGD_SETTINGS = [(127, 512), (127, 64), (7, 512), (5, 100), (1, 512), (1, 3)]
NUMELS = [1, 1003, 70_001, 140_000]  # a short last byte and bucket; one, two and three blocks
EPS = 2.0 ** -23


def vector(numel: int, seed: int) -> torch.Tensor:
    return torch.randn(numel, generator=torch.Generator().manual_seed(seed)) * (1 + seed)


def old_mean(old: Compressor, payloads: list[Payload], numel: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The old exchange's decode: zero, then each device's payload decoded and added in rank
    order, then ÷ devices; also Σ|v|, what the rounding of a reordered sum is bounded by."""
    out, magnitude = torch.zeros(numel), torch.zeros(numel)
    for p in payloads:
        v = old.decompress(p, numel)
        out.add_(v)
        magnitude.add_(v.abs())
    return out.div_(len(payloads)), magnitude


def assert_means_agree(new: torch.Tensor, old: torch.Tensor, magnitude: torch.Tensor, devices: int) -> None:
    assert (new - old).abs().le((devices + 1) * EPS * magnitude / devices).all()
    if devices <= 4:
        assert torch.equal(new, old)


def random_qsgd_payload(numel: int, levels: int, bucket: int, seed: int) -> Payload:
    """Any bytes and any norms, not only what the encoder makes (codes above 2·levels too)."""
    gen = torch.Generator().manual_seed(seed)
    bits = 2 if levels == 1 else 4 if levels <= 7 else 8
    packed = torch.randint(0, 256, (math.ceil(numel * bits / 8),), dtype=torch.uint8, generator=gen)
    return packed, torch.rand(math.ceil(numel / bucket), generator=gen) * 10


def random_signsgd_payload(numel: int, seed: int) -> Payload:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, 256, (math.ceil(numel / 8),), dtype=torch.uint8, generator=gen),
            torch.rand(1, generator=gen))


def stacked(payloads: list[Payload]) -> Payload:
    return tuple(torch.stack(parts) for parts in zip(*payloads))


@pytest.mark.parametrize("levels, bucket", QSGD_SETTINGS)
@pytest.mark.parametrize("numel", NUMELS)
@pytest.mark.parametrize("devices", [1, 2, 4, 7])
def test_qsgd_mean_of_all_devices_matches_the_old_decode(levels: int, bucket: int, numel: int, devices: int) -> None:
    new, old = create("qsgd", levels=levels, bucket_size=bucket), OldQSGD(levels, bucket)
    payloads = [random_qsgd_payload(numel, levels, bucket, seed) for seed in range(devices)]
    out = torch.full((numel,), float("nan"))
    new.mean_rows_(out, stacked(payloads))
    assert_means_agree(out, *old_mean(old, payloads, numel), devices)


@pytest.mark.parametrize("numel", NUMELS)
@pytest.mark.parametrize("devices", [1, 2, 4, 7])
def test_signsgd_mean_of_all_devices_matches_the_old_decode(numel: int, devices: int) -> None:
    payloads = [random_signsgd_payload(numel, seed) for seed in range(devices)]
    out = torch.full((numel,), float("nan"))
    create("signsgd").mean_rows_(out, stacked(payloads))
    assert_means_agree(out, *old_mean(OldSignSGD(), payloads, numel), devices)


@pytest.mark.parametrize("devices", [1, 3, 8])
def test_topk_mean_is_the_old_one_index_add_per_device_bitwise(devices: int) -> None:
    """Overlapping indices between devices: one index_add_ of all adds them in rank order too."""
    numel = 5000
    payloads = [create("topk", ratio=0.3, seed=s).compress(vector(numel, s)) for s in range(devices)]
    new, old = torch.full((numel,), float("nan")), torch.empty(numel)
    create("topk").mean_payloads_(new, payloads)
    OldTopK().mean_payloads_(old, payloads)
    assert torch.equal(new, old)


@pytest.mark.parametrize("levels, bucket", QSGD_SETTINGS)
@pytest.mark.parametrize("numel", NUMELS)
def test_qsgd_blockwise_encoding_gives_the_old_bytes_and_draws(levels: int, bucket: int, numel: int) -> None:
    """Same codes and norms, step after step (the generator is left where the old one was)."""
    new, old = create("qsgd", levels=levels, bucket_size=bucket, seed=9), OldQSGD(levels, bucket, seed=9)
    for step in range(2):
        x = vector(numel, step)
        assert all(torch.equal(a, b) for a, b in zip(new.compress(x, step), old.compress(x, step)))


@pytest.mark.parametrize("name, old", [("qsgd", OldQSGD(7, 100)), ("signsgd", OldSignSGD())])
@pytest.mark.parametrize("numel", NUMELS)
def test_one_payload_decodes_and_feeds_back_as_before(name: str, old: Compressor, numel: int) -> None:
    """decompress_into, add_to_ and error feedback's residual (acc − sent) are bitwise the old ones."""
    new = create(name, **({"levels": 7, "bucket_size": 100} if name == "qsgd" else {}))
    payload = (random_qsgd_payload(numel, 7, 100, 1) if name == "qsgd" else random_signsgd_payload(numel, 1))
    assert torch.equal(new.decompress(payload, numel), old.decompress(payload, numel))
    residual, expected = vector(numel, 2), vector(numel, 2)
    new.add_to_(residual, payload, alpha=0.3)
    old.add_to_(expected, payload, alpha=0.3)
    assert torch.equal(residual, expected)
    new.residual_into(residual, vector(numel, 3), payload)
    old.residual_into(expected, vector(numel, 3), payload)
    assert torch.equal(residual, expected)


def test_signsgd_encoding_and_a_zero_scale_are_as_before() -> None:
    x = vector(1003, 0)
    x[::7] = 0.0
    new, old = create("signsgd").compress(x), OldSignSGD().compress(x)
    assert all(torch.equal(a, b) for a, b in zip(new, old))
    zero = (new[0], torch.zeros(1))
    assert torch.equal(create("signsgd").decompress(zero, 1003), OldSignSGD().decompress(zero, 1003))


def test_a_plugin_declaring_uniform_payloads_is_decoded_one_device_at_a_time() -> None:
    """The base class's fallback: rows are split back into payloads and decoded in rank order."""
    class Halves(Compressor):
        uniform = True

        def compress(self, x: torch.Tensor, step: int = 0, epoch: float = 0.0) -> Payload:
            return (x * 0.5,)

        def decompress_into(self, payload: Payload, out: torch.Tensor) -> None:
            out.copy_(payload[0] * 2)

    rows = (torch.stack([vector(10, s) for s in range(3)]),)
    out = torch.empty(10)
    Halves().mean_rows_(out, rows)
    assert torch.equal(out, ((rows[0][0] * 2 + rows[0][1] * 2) + rows[0][2] * 2) / 3)
