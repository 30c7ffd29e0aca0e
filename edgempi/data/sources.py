"""Datasets as in-memory tensors: IDX files (MNIST, Fashion-MNIST), CIFAR-10, synthetic.

Images stay uint8 [N, C, H, W] until a batch is drawn; labels are int64. Files are looked for
in a fixed order so a user can tell from the error exactly where to put them.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from edgempi.data.augment import normalization


class DataError(RuntimeError):
    """The data set is missing or unreadable; printed as one line."""


@dataclass
class Dataset:
    name: str
    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def input_size(self) -> int:
        return self.train_x.shape[-1]


# name → (folder names to look for under a root, torchvision class name)
_IDX = {
    "fashion-mnist": (("fashion-mnist", "FashionMNIST/raw", "FashionMNIST", "."), "FashionMNIST"),
    "mnist": (("mnist", "MNIST/raw", "MNIST", "."), "MNIST"),
}
_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def search_roots(root: str | None) -> list[Path]:
    """Where files are looked for, in order: config, $EDGEMPI_DATA, ./data, /usr/share/datasets."""
    roots = [root, os.environ.get("EDGEMPI_DATA"), "data", "/usr/share/datasets"]
    return [Path(r).expanduser() for r in roots if r]


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file")
    ndim = raw[3]
    dims = np.frombuffer(raw, dtype=">u4", count=ndim, offset=4).astype(np.int64)
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DataError(f"{path}: truncated IDX file ({data.size} of {int(np.prod(dims))} values)")
    return data.reshape(tuple(dims))


def _find_idx_folder(name: str, roots: list[Path]) -> Path | None:
    folders, *_ = _IDX[name]
    for root in roots:
        for sub in folders:
            folder = root / sub
            if all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in _IDX_FILES):
                return folder
    return None


def _load_idx(name: str, root: str | None, download: bool) -> Dataset:
    roots = search_roots(root)
    folder = _find_idx_folder(name, roots)
    folders, tv_class = _IDX[name]
    if folder is None and download:
        import torchvision

        target = roots[0]
        try:
            getattr(torchvision.datasets, tv_class)(str(target), download=True)
        except Exception as exc:  # network errors come in many types
            raise DataError(f"{name}: download into {target} failed ({exc})") from exc
        folder = _find_idx_folder(name, [target])
    if folder is None:
        looked = ", ".join(str(r) for r in roots)
        hint = "apt-get install dataset-fashion-mnist, or " if name == "fashion-mnist" else ""
        raise DataError(f"{name} not found (looked in {looked}); {hint}put the IDX files in a folder "
                        "and set data.root or $EDGEMPI_DATA, or set data.download=true")

    def part(stem: str) -> np.ndarray:
        path = folder / stem
        return _read_idx(path if path.exists() else folder / f"{stem}.gz")

    train_x, train_y, test_x, test_y = (part(f) for f in _IDX_FILES)
    return Dataset(name, torch.from_numpy(train_x.copy()).unsqueeze(1), torch.from_numpy(train_y.astype(np.int64)),
                   torch.from_numpy(test_x.copy()).unsqueeze(1), torch.from_numpy(test_y.astype(np.int64)),
                   10, *normalization(name))


def _load_cifar10(root: str | None, download: bool) -> Dataset:
    import torchvision

    roots = search_roots(root)
    found = next((r for r in roots if (r / "cifar-10-batches-py").is_dir()), None)
    if found is None and not download:
        looked = ", ".join(str(r) for r in roots)
        raise DataError(f"cifar10 not found (looked for cifar-10-batches-py in {looked}); download it "
                        "and set data.root or $EDGEMPI_DATA, or set data.download=true")
    target = found if found is not None else roots[0]
    try:
        train = torchvision.datasets.CIFAR10(str(target), train=True, download=found is None)
        test = torchvision.datasets.CIFAR10(str(target), train=False, download=False)
    except Exception as exc:  # corrupt pickles and network errors come in many types
        raise DataError(f"cifar10 in {target}: {exc}") from exc

    def tensors(ds: "torchvision.datasets.CIFAR10") -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
        return x, torch.as_tensor(ds.targets, dtype=torch.int64)

    return Dataset("cifar10", *tensors(train), *tensors(test), 10, *normalization("cifar10"))


def synthetic(seed: int, n_train: int, n_test: int, num_classes: int = 10, side: int = 28) -> Dataset:
    """Learnable, seeded images: a fixed random template per class plus noise."""
    gen = torch.Generator().manual_seed(seed)
    templates = torch.rand(num_classes, 1, side, side, generator=gen) * 255

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=gen)
        noise = torch.randn(n, 1, side, side, generator=gen) * 60
        return (templates[y] + noise).clamp(0, 255).to(torch.uint8), y

    return Dataset("synthetic", *draw(n_train), *draw(n_test), num_classes, (0.5,), (0.3,))


def load(name: str, root: str | None = None, download: bool = False, seed: int = 0,
         synthetic_sizes: tuple[int, int] = (6000, 1000), synthetic_side: int = 28) -> Dataset:
    """Load a data set by name (``edgempi.data.load``)."""
    if name in _IDX:
        return _load_idx(name, root, download)
    if name == "cifar10":
        return _load_cifar10(root, download)
    if name == "synthetic":
        return synthetic(seed, *synthetic_sizes, side=synthetic_side)
    raise DataError(f"unknown data set {name!r}")
