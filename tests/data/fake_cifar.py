"""A tiny CIFAR-10 folder in the real ``cifar-10-batches-py`` pickle format, for loader tests.

CIFAR-10 cannot be downloaded here, so tests write their own: five training batches, one test
batch and ``batches.meta``, laid out byte for byte as the original (uint8 rows of 3072 values,
the R, G and B planes one after the other; labels as a list of ints).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest

LABEL_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _write_batch(path: Path, name: str, images: np.ndarray, labels: np.ndarray) -> None:
    entry = {
        "batch_label": name,
        "labels": labels.tolist(),
        "data": images.reshape(len(images), 3 * 32 * 32),
        "filenames": [f"fake_{i}.png" for i in range(len(images))],
    }
    with open(path, "wb") as f:
        pickle.dump(entry, f, protocol=2)


def write_fake_cifar10(root: str | Path, n_train_per_batch: int = 10, n_test: int = 10,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Write ``root/cifar-10-batches-py`` and return what it holds: train images [N, 3, 32, 32]
    uint8 and labels, then the test ones, in file order."""
    folder = Path(root) / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_train = 5 * n_train_per_batch
    images = rng.integers(0, 256, (n_train + n_test, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, n_train + n_test)
    for b in range(5):
        rows = slice(b * n_train_per_batch, (b + 1) * n_train_per_batch)
        _write_batch(folder / f"data_batch_{b + 1}", f"training batch {b + 1} of 5", images[rows], labels[rows])
    _write_batch(folder / "test_batch", "testing batch 1 of 1", images[n_train:], labels[n_train:])
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": LABEL_NAMES, "num_cases_per_batch": n_train_per_batch, "num_vis": 3072},
                    f, protocol=2)
    return images[:n_train], labels[:n_train], images[n_train:], labels[n_train:]


def skip_cifar10_checksums(monkeypatch: pytest.MonkeyPatch) -> None:
    """torchvision checks the md5 of every file against the real CIFAR-10; a fake cannot match,
    so a test lets torchvision skip the check (a None checksum only tests that the file exists)."""
    from torchvision.datasets import CIFAR10

    monkeypatch.setattr(CIFAR10, "train_list", [[name, None] for name, _ in CIFAR10.train_list])
    monkeypatch.setattr(CIFAR10, "test_list", [[name, None] for name, _ in CIFAR10.test_list])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": None})
