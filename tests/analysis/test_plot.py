"""Plots are written, in each format, and actually show something."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from edgempi.analysis import load_runs, plot
from runfiles import config, eval_curve, write_run


@pytest.fixture
def runs(tmp_path: Path):
    for seed, shift in ((0, 0.0), (1, 0.05)):
        write_run(tmp_path / f"f{seed}.h5", config("fedavg", seed=seed), eval_curve(np.linspace(0.3, 0.8, 8) + shift))
        write_run(tmp_path / f"l{seed}.h5", config("large_batch", seed=seed),
                  eval_curve(np.linspace(0.4, 0.9, 8) - shift, rounds_per_eval=100, secs_per_eval=1.3 + seed))
    return load_runs([tmp_path])


def assert_drawn(path: Path) -> None:
    assert path.stat().st_size > 10_000
    pixels = mpimg.imread(path)[..., :3]
    coloured = np.abs(pixels - pixels.mean(axis=2, keepdims=True)).max(axis=2) > 0.1
    assert coloured.mean() > 0.002, "no coloured lines in the figure"


def test_one_line_per_run_on_bytes(runs, tmp_path: Path) -> None:
    out = plot(runs, "bytes", "test_acc", out=tmp_path / "p.png")
    assert_drawn(out)


@pytest.mark.parametrize("x", ["step", "epoch", "round", "time", "simtime"])
def test_grouped_mean_and_band(runs, tmp_path: Path, x: str) -> None:
    out = plot(runs, x, "test_acc", group_by="algorithm.name", out=tmp_path / f"{x}.png")
    assert_drawn(out)


def test_train_loss_and_vector_formats(runs, tmp_path: Path) -> None:
    for suffix in (".pdf", ".svg"):
        out = plot(runs, "step", "train_loss", out=tmp_path / f"loss{suffix}")
        assert out.stat().st_size > 2_000
    assert (tmp_path / "loss.svg").read_text().count("<path") > 4


def test_labels_come_from_config(runs, tmp_path: Path) -> None:
    plot(runs, "epoch", "test_acc", group_by="algorithm.name", out=tmp_path / "g.svg")
    svg = (tmp_path / "g.svg").read_text()
    assert "fedavg (n=2)" in svg and "large_batch (n=2)" in svg


def test_bad_arguments(runs, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="x: unknown axis 'flops'"):
        plot(runs, "flops", "test_acc", out=tmp_path / "x.png")
    with pytest.raises(ValueError, match="y: unknown metric"):
        plot(runs, "step", "acc", out=tmp_path / "x.png")
    with pytest.raises(ValueError, match="out: unsupported format"):
        plot(runs, "step", "test_acc", out=tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="no runs"):
        plot([], "step", "test_acc", out=tmp_path / "x.png")
