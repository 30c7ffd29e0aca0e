"""The original MNIST, read from $EDGEMPI_DATA or ../shared/datasets (skipped where absent)."""
from __future__ import annotations

import gzip
import hashlib
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import ROOT

from edgempi import data

# MD5 of the uncompressed files of the original release (../shared/datasets/README.md).
MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
       "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
       "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
       "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}
COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


def mnist_root() -> Path:
    for root in (os.environ.get("EDGEMPI_DATA"), ROOT.parent / "shared" / "datasets"):
        if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").exists():
            return Path(root)
    pytest.skip("MNIST not found: set EDGEMPI_DATA to the folder holding mnist/ (../shared/datasets)")


def test_the_files_are_the_original_release():
    folder = mnist_root() / "mnist"
    for stem, md5 in MD5.items():
        with gzip.open(folder / f"{stem}.gz", "rb") as f:
            assert hashlib.md5(f.read()).hexdigest() == md5, stem


def test_mnist_loads_from_its_root():
    ds = data.load("mnist", root=str(mnist_root()))
    assert tuple(ds.train_x.shape) == (60000, 1, 28, 28) and tuple(ds.test_x.shape) == (10000, 1, 28, 28)
    assert np.bincount(ds.train_y.numpy()).tolist() == COUNTS
    scaled = ds.train_x.float() / 255
    assert abs(float(scaled.mean()) - ds.mean[0]) < 1e-3 and abs(float(scaled.std()) - ds.std[0]) < 1e-3
