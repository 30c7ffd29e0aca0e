"""Batch crop-and-flip against a per-sample reference, determinism, normalisation constants."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from edgempi.data.augment import crop_flip
from edgempi.registry import DATASETS
from edgempi.settings import ConfigError


def reference(x: torch.Tensor, seed: int, padding: int, flip: bool) -> torch.Tensor:
    """The same draws as crop_flip, applied one sample at a time by slicing."""
    g = torch.Generator().manual_seed(seed)
    n, _, h, w = x.shape
    dy = torch.randint(0, 2 * padding + 1, (n, 1), generator=g)
    dx = torch.randint(0, 2 * padding + 1, (n, 1), generator=g)
    mirrored = torch.randint(0, 2, (n, 1), generator=g).bool() if flip else torch.zeros(n, 1, dtype=torch.bool)
    out = []
    for i in range(n):
        crop = F.pad(x[i], (padding,) * 4)[:, dy[i]:dy[i] + h, dx[i]:dx[i] + w]
        out.append(crop.flip(-1) if mirrored[i] else crop)
    return torch.stack(out)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("flip", [True, False])
def test_matches_per_sample_crop_and_flip(dtype, flip):
    x = torch.randint(1, 256, (16, 3, 8, 10)).to(dtype)
    out = crop_flip(x, torch.Generator().manual_seed(3), padding=2, flip=flip)
    assert out.dtype == dtype and out.shape == x.shape
    assert torch.equal(out, reference(x, 3, padding=2, flip=flip))


def test_without_padding_each_sample_is_itself_or_its_mirror():
    x = torch.arange(64 * 2 * 4 * 4, dtype=torch.float32).view(64, 2, 4, 4)
    out = crop_flip(x, torch.Generator().manual_seed(0), padding=0)
    same = (out == x).flatten(1).all(1)
    mirror = (out == x.flip(-1)).flatten(1).all(1)
    assert torch.all(same ^ mirror) and 16 < int(mirror.sum()) < 48


def test_padding_brings_in_zeros_only_at_the_shifted_border():
    x = torch.ones(200, 1, 6, 6, dtype=torch.uint8)
    out = crop_flip(x, torch.Generator().manual_seed(1), padding=4, flip=False)
    kept = out.flatten(1).sum(1)
    assert kept.min() == 2 * 2 and kept.max() == 6 * 6  # a shift of 4 keeps 2 of 6 rows/columns
    rows_kept, cols_kept = out[:, 0].amax(2).sum(1), out[:, 0].amax(1).sum(1)
    assert torch.equal(kept, rows_kept * cols_kept)  # what is left is one rectangle


def test_same_seed_same_batch_other_seed_other_batch():
    x = torch.randint(0, 256, (32, 3, 32, 32), dtype=torch.uint8)
    a, b, c = (crop_flip(x, torch.Generator().manual_seed(s)) for s in (5, 5, 6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_refuses_a_single_image():
    with pytest.raises(ValueError, match=r"\[N, C, H, W\]"):
        crop_flip(torch.zeros(3, 32, 32), torch.Generator())


def test_normalization_constants_live_with_each_data_set():
    assert {"mnist", "fashion-mnist", "cifar10", "synthetic"} <= set(DATASETS.names())
    assert (DATASETS.get("mnist").mean, DATASETS.get("mnist").std) == ((0.1307,), (0.3081,))
    assert (DATASETS.get("fashion-mnist").mean, DATASETS.get("fashion-mnist").std) == ((0.2860,), (0.3530,))
    with pytest.raises(ConfigError, match="data.name.*'svhn'"):
        DATASETS.get("svhn")
