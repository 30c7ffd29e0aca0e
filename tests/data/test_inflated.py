"""Inflated copies of gzipped IDX files: used only when they match the file's own gzip trailer,
written once, never torn, and never in the way of an error the file itself would give."""
from __future__ import annotations

import gzip
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from test_data import make_idx_folder, write_idx

from edgempi import data
from edgempi.data import inflated
from edgempi.data.sources import DataError

IMAGES = "train-images-idx3-ubyte.gz"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("EDGEMPI_CACHE", str(folder))
    return folder


def copies(folder) -> list[str]:
    return sorted(p.name for p in folder.glob("*.idx")) if folder.exists() else []


def kept_whole(path: Path) -> bool:
    """Whether gzip file ``path`` has a copy that holds its inflated contents."""
    copy = inflated.copy_of(path)
    return copy is not None and inflated.holds(path, (copy.read_bytes(),))


def test_a_first_load_keeps_copies_and_a_second_reads_them_without_inflating(tmp_path, cache, monkeypatch):
    make_idx_folder(tmp_path / "mnist")
    first = data.load("mnist", root=str(tmp_path))
    assert len(copies(cache)) == 4 and not list(cache.glob("*.partial"))

    def no_gzip(*args, **kwargs):
        raise AssertionError("inflated again")

    monkeypatch.setattr(gzip, "open", no_gzip)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch warns of a read-only array: the values are no copy
        second = data.load("mnist", root=str(tmp_path))
    for name in ("train_x", "train_y", "test_x", "test_y"):
        assert getattr(first, name).equal(getattr(second, name))


@pytest.mark.parametrize("damage", [
    lambda b: b[:-5],                                   # cut short
    lambda b: b[:100] + bytes([b[100] ^ 1]) + b[101:],  # one bit flipped
    lambda b: b"",                                      # emptied
    lambda b: b[:6],                                    # cut inside its dimensions
])
def test_a_damaged_copy_is_never_read_and_is_rewritten(tmp_path, cache, damage):
    make_idx_folder(tmp_path / "mnist")
    expected = data.load("mnist", root=str(tmp_path)).train_x
    (copy,) = cache.glob("train-images-*.idx")
    copy.write_bytes(damage(copy.read_bytes()))
    assert data.load("mnist", root=str(tmp_path)).train_x.equal(expected)
    assert kept_whole(tmp_path / "mnist" / IMAGES)  # rewritten


def test_a_changed_file_gets_its_own_copy(tmp_path, cache):
    folder = tmp_path / "mnist"
    make_idx_folder(folder)
    data.load("mnist", root=str(tmp_path))
    write_idx(folder / IMAGES, np.full((40, 28, 28), 7))
    assert data.load("mnist", root=str(tmp_path)).train_x.eq(7).all()
    assert len(copies(cache)) == 5


def test_a_damaged_gzip_file_is_still_refused_when_its_copy_is_good(tmp_path, cache):
    folder = tmp_path / "mnist"
    make_idx_folder(folder)
    data.load("mnist", root=str(tmp_path))
    path = folder / IMAGES
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(DataError, match=f"{IMAGES}: unreadable or truncated"):
        data.load("mnist", root=str(tmp_path))


def test_a_copy_being_written_by_another_rank_is_left_alone(tmp_path, cache):
    folder = tmp_path / "mnist"
    make_idx_folder(folder)
    path = folder / IMAGES
    cache.mkdir()
    partial = inflated.copy_path(path, cache, inflated.trailer(path)).with_suffix(".partial")
    partial.write_bytes(b"")
    data.load("mnist", root=str(tmp_path))
    assert partial.exists() and inflated.copy_of(path) is None
    old = partial.stat().st_mtime - inflated.STALE_PARTIAL_S - 1
    os.utime(partial, (old, old))  # its writer died long ago: removed, the next load writes
    data.load("mnist", root=str(tmp_path))
    assert not partial.exists()
    data.load("mnist", root=str(tmp_path))
    assert kept_whole(path)


@pytest.mark.parametrize("setting", ["off", ""])
def test_copies_can_be_turned_off(tmp_path, monkeypatch, setting):
    monkeypatch.setenv("EDGEMPI_CACHE", setting)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    make_idx_folder(tmp_path / "mnist")
    data.load("mnist", root=str(tmp_path))
    assert not (tmp_path / "xdg").exists() and inflated.cache_dir() is None


def test_the_default_folder_is_the_users_cache(monkeypatch, tmp_path):
    monkeypatch.delenv("EDGEMPI_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert inflated.cache_dir() == tmp_path / "edgempi"


def test_a_cache_folder_that_cannot_be_written_costs_only_the_inflation(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("EDGEMPI_CACHE", str(blocker / "cache"))
    make_idx_folder(tmp_path / "mnist")
    assert len(data.load("mnist", root=str(tmp_path)).train_x) == 40


def test_a_copy_that_fails_to_be_written_leaves_nothing_behind(tmp_path, cache, monkeypatch):
    def full_disk(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    make_idx_folder(tmp_path / "mnist")
    assert len(data.load("mnist", root=str(tmp_path)).train_x) == 40
    assert copies(cache) == [] and list(cache.glob("*.partial")) == []


def test_a_copy_that_may_not_be_removed_costs_only_the_inflation(tmp_path, cache, monkeypatch):
    make_idx_folder(tmp_path / "mnist")
    expected = data.load("mnist", root=str(tmp_path)).train_x
    (copy,) = cache.glob("train-images-*.idx")
    copy.write_bytes(b"damaged")

    def refused(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "unlink", refused)
    assert data.load("mnist", root=str(tmp_path)).train_x.equal(expected)


def test_a_file_in_two_folders_shares_one_copy_and_one_of_several_members_gets_none(tmp_path, cache):
    make_idx_folder(tmp_path / "a" / "mnist")
    make_idx_folder(tmp_path / "b" / "mnist")  # the same seeded contents: a job's staged copy
    data.load("mnist", root=str(tmp_path / "a"))
    data.load("mnist", root=str(tmp_path / "b"))
    assert len(copies(cache)) == 4
    path = tmp_path / "a" / "mnist" / IMAGES
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:1000]) + gzip.compress(raw[1000:]))  # two gzip members
    expected = data.load("mnist", root=str(tmp_path / "a")).train_x
    assert expected.equal(data.load("mnist", root=str(tmp_path / "b")).train_x)
    assert inflated.copy_of(path) is None  # its trailer covers its last member only: never kept


LOAD = """
import hashlib, sys
from edgempi import data
ds = data.load("mnist", root=sys.argv[1])
print(hashlib.sha1(ds.train_x.numpy().tobytes() + ds.test_y.numpy().tobytes()).hexdigest())
"""


def test_ranks_starting_together_read_the_same_data_and_leave_one_whole_copy(tmp_path, cache):
    make_idx_folder(tmp_path / "mnist", n_train=4000)
    ranks = [subprocess.Popen([sys.executable, "-c", LOAD, str(tmp_path)], stdout=subprocess.PIPE, text=True)
             for _ in range(8)]
    digests = {proc.communicate(timeout=120)[0] for proc in ranks}
    assert len(digests) == 1 and all(proc.returncode == 0 for proc in ranks)
    assert len(copies(cache)) == 4 and not list(cache.glob("*.partial"))
    assert all(kept_whole(tmp_path / "mnist" / f"{name}.gz") for name in
               ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"))


PEAK = """
import struct, sys
from pathlib import Path
from edgempi.data.sources import DataError, _read_idx
path = Path(sys.argv[1])
path.write_bytes(struct.pack(">BBBBIII", 0, 0, 8, 3, 1, 32768, 32768) + bytes(100))
try:
    _read_idx(path)
except DataError as exc:
    print(exc)
peak = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM"))
print(int(peak.split()[1]) // 1024)  # this process's own peak (ru_maxrss keeps the forking parent's)
"""


def test_a_header_claiming_a_gigabyte_costs_no_gigabyte(tmp_path):
    out = subprocess.run([sys.executable, "-c", PEAK, str(tmp_path / "big-idx3-ubyte")], capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert "truncated IDX file (100 of 1073741824 values)" in out[0]
    assert int(out[1]) < 600  # MB of peak memory; zero-filling the claimed buffer took 1,055
