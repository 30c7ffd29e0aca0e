"""Datasets as in-memory tensors: IDX files (MNIST, Fashion-MNIST), CIFAR-10, synthetic.

Images stay uint8 [N, C, H, W] until a batch is drawn; labels are int64. Files are looked for
in a fixed order so a user can tell from the error exactly where to put them.

A data set is one registered loader, ``LoadOptions → Dataset``, and the :class:`Dataset` it
returns carries everything else about it: classes, normalisation, default augmentation. Its
keys of its own and the shape of its images are its ``Settings`` (derived from
:class:`~edgempi.data.settings.DataSettings`, which a loader that declares none takes). A
user's own is ``data.name: package.module:function`` with the same signature.
"""
from __future__ import annotations

import gzip
import math
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import numpy as np

from edgempi.data import inflated
from edgempi.data.settings import DataSettings, settings_class
from edgempi.registry import DATASETS
from edgempi.settings import require
from edgempi.util.lazy import torch


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

    def scaling(self, normalize: bool = True) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The (mean, std) a loader standardises the images in [0, 1] with: the data set's own,
        or 0 and 1 (x / 255 alone), as papers whose code only rescales trained (``data.normalize``)."""
        if normalize:
            return self.mean, self.std
        return (0.0,) * len(self.mean), (1.0,) * len(self.std)

    @property
    def in_channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def input_size(self) -> int:
        return self.train_x.shape[-1]


S = TypeVar("S", bound=DataSettings)


@dataclass(frozen=True)
class LoadOptions(Generic[S]):
    """What a loader is given: the ``data`` section, read into its data set's settings, and
    the run's seed."""

    settings: S
    seed: int = 0

    @property
    def root(self) -> str | None:
        return self.settings.root

    @property
    def download(self) -> bool:
        return self.settings.download


Loader = Callable[[LoadOptions[Any]], Dataset]

_IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
              "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def search_roots(root: str | None) -> list[Path]:
    """Where files are looked for: ``data.root`` alone when it is set (a root that lacks the
    files is an error naming it, never silently replaced by another copy); otherwise
    $EDGEMPI_DATA, ./data, /usr/share/datasets, in that order."""
    if root:
        path = Path(root).expanduser()
        if not path.is_dir():
            raise DataError(f"data.root {path} {'is not a folder' if path.exists() else 'does not exist'}")
        return [path]
    roots = [os.environ.get("EDGEMPI_DATA"), "data", "/usr/share/datasets"]
    return [Path(r).expanduser() for r in roots if r]


MAX_IDX_BYTES = 1 << 32  # the largest IDX file read (MNIST's training images are 47 MB)


def _read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped or not), checked against its own header: a file cut short, with
    bytes to spare or not gzip where it says so is refused, naming the file. A gzipped file is
    read from its inflated copy when one matches it (:mod:`edgempi.data.inflated`)."""
    if path.suffix != ".gz":
        return _parse_idx(path, open)[1]
    copy = inflated.copy_of(path)
    if copy is not None:
        try:
            header, values = _parse_idx(copy, open)
            if inflated.holds(path, (header, values.data)):
                return values
        except DataError:
            pass
        inflated.discard(copy)
    header, values = _parse_idx(path, gzip.open)
    inflated.write(path, (header, values.data))
    return values


def _parse_idx(path: Path, opener: Callable[..., Any]) -> tuple[bytes, np.ndarray]:
    """The header and the (writable) values of IDX file ``path`` opened with ``opener``."""
    try:
        with opener(path, "rb") as f:
            head = f.read(4)
            if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 4:
                raise DataError(f"{path}: not an unsigned-byte IDX file")
            shape = f.read(4 * head[3])
            if len(shape) != 4 * head[3]:
                raise DataError(f"{path}: truncated IDX header")
            dims = tuple(int(d) for d in np.frombuffer(shape, dtype=">u4"))
            expected = math.prod(dims)
            if expected > MAX_IDX_BYTES:
                raise DataError(f"{path}: bad IDX header (dimensions {dims})")
            # Not zero-filled: a header that claims more than the file holds costs no memory.
            raw = np.empty(expected + 1, dtype=np.uint8)  # one to spare, to tell a file that has more
            got = f.readinto(raw)
    except (OSError, EOFError, zlib.error) as exc:  # gzip: cut short, bad CRC, not gzip
        raise DataError(f"{path}: unreadable or truncated ({type(exc).__name__}: {exc})") from exc
    if got != expected:
        what = "truncated IDX file" if got < expected else "IDX file longer than its header says"
        raise DataError(f"{path}: {what} ({min(got, expected)} of {expected} values)")
    return head + shape, raw[:expected].reshape(dims)


def _find_idx_folder(folders: tuple[str, ...], roots: list[Path]) -> Path | None:
    for root in roots:
        for sub in folders:
            folder = root / sub
            if all((folder / f).exists() or (folder / f"{f}.gz").exists() for f in _IDX_FILES):
                return folder
    return None


def _checked_idx(folder: Path, num_classes: int = 10) -> list[np.ndarray]:
    """The four IDX arrays of a folder, checked against each other: images [N, H, W] and
    labels [N] of one length, test images of the training images' size, labels < classes."""
    paths = [folder / f if (folder / f).exists() else folder / f"{f}.gz" for f in _IDX_FILES]
    arrays = [_read_idx(p) for p in paths]
    for images, labels, xp, yp in zip(arrays[0::2], arrays[1::2], paths[0::2], paths[1::2]):  # training, test
        if images.ndim != 3 or labels.ndim != 1:
            raise DataError(f"{xp} must hold images [N, H, W] and {yp} labels [N] "
                            f"(found {images.shape}, {labels.shape})")
        if len(images) != len(labels):
            raise DataError(f"{xp} holds {len(images)} images but {yp} {len(labels)} labels")
        if labels.size and labels.max() >= num_classes:
            raise DataError(f"{yp}: label {labels.max()} is out of range (0-{num_classes - 1})")
    if arrays[0].shape[1:] != arrays[2].shape[1:]:
        raise DataError(f"{paths[2]}: images of size {arrays[2].shape[1:]}, {paths[0]} {arrays[0].shape[1:]}")
    return arrays


@dataclass(frozen=True)
class IdxDataset:
    """A data set of four IDX files (MNIST's format): where to look, and what it is."""

    name: str
    folders: tuple[str, ...]  # folder names looked for under each root
    torchvision_class: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    hint: str = ""  # how to install it, for the not-found message
    doc: str = ""  # what it is, for docs/config.md

    def __call__(self, opts: LoadOptions[DataSettings]) -> Dataset:
        roots = search_roots(opts.root)
        # Files lying loose in a root count only in the data.root a user named: in a shared
        # folder ($EDGEMPI_DATA, ./data) they could be another data set's.
        folders = self.folders if opts.root else tuple(f for f in self.folders if f != ".")
        folder = _find_idx_folder(folders, roots)
        if folder is None and opts.download:
            import torchvision

            target = roots[0]
            try:
                getattr(torchvision.datasets, self.torchvision_class)(str(target), download=True)
            except Exception as exc:  # network errors come in many types
                raise DataError(f"{self.name}: download into {target} failed ({exc})") from exc
            folder = _find_idx_folder(self.folders, [target])
        if folder is None and opts.root:
            raise DataError(f"{self.name}: data.root {roots[0]} lacks its four IDX files (looked in "
                            f"{', '.join(str(roots[0] / sub) for sub in self.folders)}); or set data.download=true")
        if folder is None:
            looked = ", ".join(str(r) for r in roots)
            raise DataError(f"{self.name} not found (looked in {looked}); {self.hint}put the IDX files in a folder "
                            "and set data.root or $EDGEMPI_DATA, or set data.download=true")
        train_x, train_y, test_x, test_y = _checked_idx(folder)
        return Dataset(self.name, torch.from_numpy(train_x).unsqueeze(1),
                       torch.from_numpy(train_y.astype(np.int64)), torch.from_numpy(test_x).unsqueeze(1),
                       torch.from_numpy(test_y.astype(np.int64)), 10, self.mean, self.std)


DATASETS.add("fashion-mnist", IdxDataset(
    "fashion-mnist", ("fashion-mnist", "FashionMNIST/raw", "FashionMNIST", "."), "FashionMNIST", (0.2860,), (0.3530,),
    "apt-get install dataset-fashion-mnist, or ",
    doc="Fashion-MNIST: 28×28 grey images of clothing, 10 classes, 60,000 + 10,000."))
DATASETS.add("mnist", IdxDataset("mnist", ("mnist", "MNIST/raw", "MNIST", "."), "MNIST", (0.1307,), (0.3081,),
                            doc="MNIST: 28×28 grey images of handwritten digits, 10 classes, 60,000 + 10,000."))


def _cifar_problem(folder: Path) -> str | None:
    """The first CIFAR-10 file that is missing or not the original (torchvision's md5 list),
    named; the batches are pickles, which are only loaded once their checksums match."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity

    for name, md5 in [*CIFAR10.train_list, *CIFAR10.test_list, [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]:
        path = folder / name
        if not path.is_file():
            return f"{path} is missing"
        if md5 is not None and not check_integrity(str(path), md5):
            return f"{path} is damaged or not the CIFAR-10 original (md5 mismatch)"
    return None


CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


@dataclass
class CifarSettings(DataSettings):
    """CIFAR-10's section: no keys of its own; its images are 3×32×32."""

    def input_shape(self) -> tuple[int, int]:
        return 3, 32


class Cifar10:
    """CIFAR-10 from torchvision's ``cifar-10-batches-py``; augmented (crop + flip) by default."""

    Settings = CifarSettings

    def __call__(self, opts: LoadOptions[CifarSettings]) -> Dataset:
        import torchvision

        roots = search_roots(opts.root)
        found = next((r for r in roots if (r / "cifar-10-batches-py").is_dir()), None)
        if found is None and not opts.download:
            looked = ", ".join(str(r) for r in roots)
            raise DataError(f"cifar10 not found (looked for cifar-10-batches-py in {looked}); download it "
                            "and set data.root or $EDGEMPI_DATA, or set data.download=true")
        problem = _cifar_problem(found / "cifar-10-batches-py") if found is not None else None
        if problem:
            raise DataError(f"cifar10: {problem}")
        target = found if found is not None else roots[0]
        try:
            train = torchvision.datasets.CIFAR10(str(target), train=True, download=found is None)
            test = torchvision.datasets.CIFAR10(str(target), train=False, download=False)
        except Exception as exc:  # network errors come in many types
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"cifar10 in {target}: {reason}") from exc

        def tensors(ds: torchvision.datasets.CIFAR10) -> tuple[torch.Tensor, torch.Tensor]:
            if ds.data.shape[1:] != (32, 32, 3) or len(ds.data) != len(ds.targets) or max(ds.targets, default=0) >= 10:
                raise DataError(f"cifar10 in {target}: {'training' if ds.train else 'test'} batches hold "
                                f"{ds.data.shape} images for {len(ds.targets)} labels "
                                "(expected [N, 32, 32, 3], labels < 10)")
            x = torch.from_numpy(np.ascontiguousarray(ds.data.transpose(0, 3, 1, 2)))
            return x, torch.as_tensor(ds.targets, dtype=torch.int64)

        return Dataset("cifar10", *tensors(train), *tensors(test), 10, CIFAR10_MEAN, CIFAR10_STD, augment=True)


DATASETS.add("cifar10", Cifar10())


@dataclass
class SyntheticSettings(DataSettings):
    """The synthetic images' section: how many, and how large."""

    synthetic_train: int = 6000
    """``synthetic``: the number of training images."""
    synthetic_test: int = 1000
    """``synthetic``: the number of test images."""
    synthetic_side: int = 28
    """``synthetic``: the side of its square images, in pixels."""

    def input_shape(self) -> tuple[int, int]:
        return 1, self.synthetic_side

    def check(self, cfg: Any) -> None:
        super().check(cfg)
        require(self.synthetic_train > 0, "data.synthetic_train", "must be > 0")
        require(self.synthetic_test > 0, "data.synthetic_test", "must be > 0")
        require(self.synthetic_side >= 8, "data.synthetic_side", "must be >= 8")


class Synthetic:
    """Learnable, seeded images: a fixed random template per class plus noise
    (``data.synthetic_train`` / ``synthetic_test`` of them, of side ``synthetic_side``)."""

    Settings = SyntheticSettings

    def __call__(self, opts: LoadOptions[SyntheticSettings], num_classes: int = 10) -> Dataset:
        side = opts.settings.synthetic_side
        gen = torch.Generator().manual_seed(opts.seed)
        templates = torch.rand(num_classes, 1, side, side, generator=gen) * 255

        def draw(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            y = torch.randint(num_classes, (n,), generator=gen)
            noise = torch.randn(n, 1, side, side, generator=gen) * 60
            return (templates[y] + noise).clamp(0, 255).to(torch.uint8), y

        return Dataset("synthetic", *draw(opts.settings.synthetic_train), *draw(opts.settings.synthetic_test),
                       num_classes, (0.5,), (0.3,))


DATASETS.add("synthetic", Synthetic())


def load(name: str, root: str | None = None, download: bool = False, seed: int = 0, **keys: Any) -> Dataset:
    """Load a data set by name, or by ``package.module:function`` (``edgempi.data.load``);
    ``keys``: its own settings (``synthetic_train=600``)."""
    return from_settings(settings_class(name)(name=name, root=root, download=download, **keys), seed)


def from_settings(settings: DataSettings, seed: int = 0) -> Dataset:
    """Load the data set a (checked) ``data`` section names."""
    loader: Loader = DATASETS.get(settings.name)
    dataset = loader(LoadOptions(settings, seed))
    if not isinstance(dataset, Dataset):
        raise DataError(f"data.name: {settings.name!r} returned {type(dataset).__name__}, not an edgempi.data.Dataset")
    return dataset
