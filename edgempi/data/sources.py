"""Datasets as in-memory tensors: IDX files (MNIST, Fashion-MNIST), CIFAR-10, synthetic.

Images stay uint8 [N, C, H, W] until a batch is drawn; labels are int64. Files are looked for
in a fixed order so a user can tell from the error exactly where to put them.

A data set is one registered loader, ``LoadOptions → Dataset``, and the :class:`Dataset` it
returns carries everything else about it: classes, normalisation, default augmentation. A
user's own is ``data.name: package.module:function`` with the same signature.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from edgempi.registry import DATASETS


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
    mean: tuple[float, ...]  # per channel, of the training images scaled to [0, 1]
    std: tuple[float, ...]
    augment: bool = False  # random crop + flip unless data.augment says otherwise

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def input_size(self) -> int:
        return self.train_x.shape[-1]


@dataclass(frozen=True)
class LoadOptions:
    """What a loader may use of the ``data`` section."""

    root: str | None = None
    download: bool = False
    seed: int = 0
    synthetic_sizes: tuple[int, int] = (6000, 1000)
    synthetic_side: int = 28


Loader = Callable[[LoadOptions], Dataset]

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


def _find_idx_folder(folders: tuple[str, ...], roots: list[Path]) -> Path | None:
    for root in roots:
        for sub in folders:
            folder = root / sub
            if all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in _IDX_FILES):
                return folder
    return None


@dataclass(frozen=True)
class IdxDataset:
    """A data set of four IDX files (MNIST's format): where to look, and what it is."""

    name: str
    folders: tuple[str, ...]  # folder names looked for under each root
    torchvision_class: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hint: str = ""  # how to install it, for the not-found message

    def __call__(self, opts: LoadOptions) -> Dataset:
        roots = search_roots(opts.root)
        folder = _find_idx_folder(self.folders, roots)
        if folder is None and opts.download:
            import torchvision

            target = roots[0]
            try:
                getattr(torchvision.datasets, self.torchvision_class)(str(target), download=True)
            except Exception as exc:  # network errors come in many types
                raise DataError(f"{self.name}: download into {target} failed ({exc})") from exc
            folder = _find_idx_folder(self.folders, [target])
        if folder is None:
            looked = ", ".join(str(r) for r in roots)
            raise DataError(f"{self.name} not found (looked in {looked}); {self.hint}put the IDX files in a folder "
                            "and set data.root or $EDGEMPI_DATA, or set data.download=true")

        def part(stem: str) -> np.ndarray:
            path = folder / stem
            return _read_idx(path if path.exists() else folder / f"{stem}.gz")

        train_x, train_y, test_x, test_y = (part(f) for f in _IDX_FILES)
        return Dataset(self.name, torch.from_numpy(train_x.copy()).unsqueeze(1),
                       torch.from_numpy(train_y.astype(np.int64)), torch.from_numpy(test_x.copy()).unsqueeze(1),
                       torch.from_numpy(test_y.astype(np.int64)), 10, self.mean, self.std)


DATASETS.add("fashion-mnist", IdxDataset("fashion-mnist", ("fashion-mnist", "FashionMNIST/raw", "FashionMNIST", "."),
                                         "FashionMNIST", (0.2860,), (0.3530,), "apt-get install dataset-fashion-mnist, or "))
DATASETS.add("mnist", IdxDataset("mnist", ("mnist", "MNIST/raw", "MNIST", "."), "MNIST", (0.1307,), (0.3081,)))


CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@DATASETS.register("cifar10")
def cifar10(opts: LoadOptions) -> Dataset:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py``; augmented (crop + flip) by default."""
    import torchvision

    roots = search_roots(opts.root)
    found = next((r for r in roots if (r / "cifar-10-batches-py").is_dir()), None)
    if found is None and not opts.download:
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

    return Dataset("cifar10", *tensors(train), *tensors(test), 10, CIFAR10_MEAN, CIFAR10_STD, augment=True)


@DATASETS.register("synthetic")
def synthetic(opts: LoadOptions, num_classes: int = 10) -> Dataset:
    """Learnable, seeded images: a fixed random template per class plus noise
    (``data.synthetic_train`` / ``synthetic_test`` of them, of side ``synthetic_side``)."""
    side = opts.synthetic_side
    gen = torch.Generator().manual_seed(opts.seed)
    templates = torch.rand(num_classes, 1, side, side, generator=gen) * 255

    def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        y = torch.randint(num_classes, (n,), generator=gen)
        noise = torch.randn(n, 1, side, side, generator=gen) * 60
        return (templates[y] + noise).clamp(0, 255).to(torch.uint8), y

    n_train, n_test = opts.synthetic_sizes
    return Dataset("synthetic", *draw(n_train), *draw(n_test), num_classes, (0.5,), (0.3,))


def load(name: str, root: str | None = None, download: bool = False, seed: int = 0,
         synthetic_sizes: tuple[int, int] = (6000, 1000), synthetic_side: int = 28) -> Dataset:
    """Load a data set by name, or by ``package.module:function`` (``edgempi.data.load``)."""
    loader: Loader = DATASETS.get(name)
    dataset = loader(LoadOptions(root, download, seed, tuple(synthetic_sizes), synthetic_side))
    if not isinstance(dataset, Dataset):
        raise DataError(f"data.name: {name!r} returned {type(dataset).__name__}, not an edgempi.data.Dataset")
    return dataset
