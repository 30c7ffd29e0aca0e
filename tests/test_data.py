"""Data sources, the IID partition and the per-device loader."""
from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import torch

from edgempi import data
from edgempi.data.sources import DataError


def write_idx(path, array: np.ndarray) -> None:
    header = struct.pack(">BBBB", 0, 0, 8, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def make_idx_folder(folder, n_train=40, n_test=10):
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))


def test_idx_files_found_under_data_root(tmp_path):
    make_idx_folder(tmp_path / "fashion-mnist")
    ds = data.load("fashion-mnist", root=str(tmp_path))
    assert ds.train_x.shape == (40, 1, 28, 28) and ds.train_x.dtype == torch.uint8
    assert ds.test_y.shape == (10,) and ds.num_classes == 10


def test_environment_variable_root(tmp_path, monkeypatch):
    make_idx_folder(tmp_path / "mnist")
    monkeypatch.setenv("EDGEMPI_DATA", str(tmp_path))
    assert len(data.load("mnist").train_y) == 40


def test_a_set_root_is_never_replaced_by_another_location(tmp_path, monkeypatch):
    """data.root set but missing, not a folder or without the files: an error naming it, even
    though $EDGEMPI_DATA holds the data set."""
    make_idx_folder(tmp_path / "mnist")
    monkeypatch.setenv("EDGEMPI_DATA", str(tmp_path))
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    for root, reason in (("nowhere", "does not exist"), ("file", "is not a folder"), ("empty", "lacks its four IDX")):
        with pytest.raises(DataError, match=reason) as info:
            data.load("mnist", root=str(tmp_path / root))
        assert str(tmp_path / root) in str(info.value) and "\n" not in str(info.value)


def test_missing_data_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEMPI_DATA", raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("edgempi.data.sources.search_roots", lambda root: [tmp_path / "data", tmp_path / "share"])
    with pytest.raises(DataError) as info:
        data.load("mnist")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "data") in message and str(tmp_path / "share") in message


def test_truncated_idx_file_is_refused(tmp_path):
    folder = tmp_path / "mnist"
    make_idx_folder(folder)
    raw = gzip.open(folder / "train-images-idx3-ubyte.gz").read()
    with gzip.open(folder / "train-images-idx3-ubyte.gz", "wb") as f:
        f.write(raw[:-100])
    with pytest.raises(DataError, match="truncated"):
        data.load("mnist", root=str(tmp_path))


def test_synthetic_is_seeded_and_learnable_shape():
    a, b, c = data.load("synthetic", seed=1), data.load("synthetic", seed=1), data.load("synthetic", seed=2)
    assert torch.equal(a.train_x, b.train_x) and not torch.equal(a.train_x, c.train_x)
    assert a.train_x.shape == (6000, 1, 28, 28) and set(a.train_y.tolist()) == set(range(10))


def test_iid_partition_is_disjoint_equal_and_seeded():
    labels = np.arange(1003) % 10
    parts = data.partition(labels, 4, "iid", seed=5)
    assert [len(p) for p in parts] == [250] * 4
    assert len(np.unique(np.concatenate(parts))) == 1000
    assert all(np.array_equal(p, q) for p, q in zip(parts, data.partition(labels, 4, "iid", seed=5)))
    assert not np.array_equal(parts[0], data.partition(labels, 4, "iid", seed=6)[0])


def test_loader_epochs_cover_the_shard_once():
    x = torch.arange(20, dtype=torch.uint8).view(20, 1, 1, 1)
    loader = data.DeviceLoader(x, torch.arange(20), 6, seed=0, mean=(0.0,), std=(1 / 255,))
    epoch = torch.cat([loader.batch(step)[1] for step in range(loader.steps_per_epoch)])
    assert loader.steps_per_epoch == 3 and len(set(epoch.tolist())) == 18
    next_epoch = torch.cat([loader.batch(step)[1] for step in range(3, 6)])
    assert not torch.equal(epoch, next_epoch)
    xb, yb = data.DeviceLoader(x, torch.arange(20), 6, seed=0, mean=(0.0,), std=(1 / 255,)).batch(4)
    assert torch.equal(xb.view(-1), yb.float())  # normalisation (x/255 - 0) / (1/255) gives x back
    assert torch.equal(yb, loader.batch(4)[1])  # a batch depends on (seed, step) only


def test_a_batch_is_its_seeded_rows_of_the_shard_whole():
    """Images (every pixel, not one per image) and labels of a batch are the shard's rows that the
    device's seeded order picks for the step, paired, and normalised."""
    x = torch.randint(256, (20, 3, 4, 5), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    y = torch.randint(10, (20,), generator=torch.Generator().manual_seed(2))
    loader = data.DeviceLoader(x, y, 6, seed=3, mean=(0.5, 0.25, 0.0), std=(0.5, 1.0, 2.0))
    for step in (0, 2, 4):
        epoch, i = divmod(step, loader.steps_per_epoch)
        rows = loader.order(epoch)[i * 6:(i + 1) * 6]
        xb, yb = loader.batch(step)
        assert torch.equal(yb, y[rows]) and torch.equal(xb, loader.normalize(x[rows]))
        assert xb.shape == (6, 3, 4, 5) and xb.dtype == torch.float32


def _corrupt(folder, name, change):
    path = folder / name
    path.write_bytes(change(path.read_bytes()))


@pytest.mark.parametrize("name,change,reason", [
    ("train-images-idx3-ubyte.gz", lambda b: b[: len(b) // 2], "train-images-idx3-ubyte.gz: unreadable or truncated"),
    ("t10k-labels-idx1-ubyte.gz", lambda b: b"not gzip at all", "t10k-labels-idx1-ubyte.gz: unreadable or truncated"),
])
def test_damaged_compressed_file_is_named(tmp_path, name, change, reason):
    make_idx_folder(tmp_path / "mnist")
    _corrupt(tmp_path / "mnist", name, change)
    with pytest.raises(DataError, match=reason):
        data.load("mnist", root=str(tmp_path))


def test_images_and_labels_that_disagree_are_refused(tmp_path):
    folder = tmp_path / "mnist"
    make_idx_folder(folder)
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(39))
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz holds 40 images but .*train-labels.* 39 labels"):
        data.load("mnist", root=str(tmp_path))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.full(40, 12))
    with pytest.raises(DataError, match="train-labels-idx1-ubyte.gz: label 12 is out of range"):
        data.load("mnist", root=str(tmp_path))
    write_idx(folder / "train-labels-idx1-ubyte.gz", np.zeros(40))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", np.zeros((10, 20, 20)))
    with pytest.raises(DataError, match="t10k-images-idx3-ubyte.gz: images of size"):
        data.load("mnist", root=str(tmp_path))


@pytest.mark.parametrize("normalize", [True, False])
def test_data_normalize_switch_reaches_training_and_evaluation(normalize):
    """``data.normalize: false`` trains and evaluates on x / 255 alone (the loader's ``normalize``
    is also the one evaluation applies); ``true`` is the data set's standardisation, as before."""
    from helpers import small_config

    from edgempi.config import from_dict
    from edgempi.train import Seeds, device_loader, load_dataset, make_partition

    cfg = from_dict(small_config(), [f"data.normalize={str(normalize).lower()}"])
    dataset = load_dataset(cfg)
    seeds = Seeds.from_seed(cfg.seed, 2)
    parts = make_partition(cfg, dataset, seeds)
    loader = device_loader(cfg, dataset, parts, seeds, 1)
    xb, yb = loader.batch(3)
    shard = torch.from_numpy(parts[1])
    standard = data.DeviceLoader(dataset.train_x[shard], dataset.train_y[shard], cfg.train.batch_size,
                                 seeds.devices[1], dataset.mean, dataset.std).batch(3)
    assert torch.equal(yb, standard[1])
    test = loader.normalize(dataset.test_x[:50])
    if normalize:
        assert torch.equal(xb, standard[0]) and test.min() < 0
    else:
        raw = standard[0] * dataset.std[0] + dataset.mean[0]
        torch.testing.assert_close(xb, raw, rtol=0, atol=1e-6)
        assert xb.min() == 0 and xb.max() == 1 and test.min() == 0 and test.max() == 1
