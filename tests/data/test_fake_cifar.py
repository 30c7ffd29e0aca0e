"""The fake CIFAR-10 folder is read by torchvision exactly as written."""
from __future__ import annotations

import numpy as np
import pytest
from fake_cifar import LABEL_NAMES, skip_cifar10_checksums, write_fake_cifar10
from torchvision.datasets import CIFAR10


@pytest.mark.parametrize("train", [True, False])
def test_torchvision_reads_the_fake_folder(tmp_path, monkeypatch, train):
    train_x, train_y, test_x, test_y = write_fake_cifar10(tmp_path, n_train_per_batch=4, n_test=6)
    skip_cifar10_checksums(monkeypatch)
    ds = CIFAR10(str(tmp_path), train=train, download=False)
    images, labels = (train_x, train_y) if train else (test_x, test_y)
    assert len(ds) == (20 if train else 6) and ds.classes == LABEL_NAMES
    assert np.array_equal(ds.data, images.transpose(0, 2, 3, 1))  # torchvision keeps HWC
    assert ds.targets == labels.tolist()


def test_a_missing_batch_is_noticed(tmp_path, monkeypatch):
    write_fake_cifar10(tmp_path, n_train_per_batch=2, n_test=2)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    skip_cifar10_checksums(monkeypatch)
    with pytest.raises(RuntimeError, match="not found"):
        CIFAR10(str(tmp_path), train=True, download=False)
