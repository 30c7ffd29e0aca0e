"""Plots are written, in each format, and actually show something."""
from __future__ import annotations

from pathlib import Path

import matplotlib.image as mpimg
import matplotlib.pyplot as plt
import numpy as np
import pytest
from runfiles import config, eval_curve, legend, stored, write_run

from edgempi.analysis import load_runs, plot
from edgempi.analysis.plot import figure


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


def test_labels_are_display_names(runs, tmp_path: Path) -> None:
    fig = figure(runs, "epoch", "test_acc", group_by="algorithm.name")
    assert legend(fig) == ["FedAvg, n = 2", "Large Batch, n = 2"]
    plt.close(fig)
    fda, dyn = config("fda"), config("dynamic")
    fda["algorithm"].update(variant="linear", theta=1.0)
    dyn["algorithm"]["delta"] = 2.0
    write_run(tmp_path / "m" / "fda.h5", fda, eval_curve([0.5, 0.7]))
    write_run(tmp_path / "m" / "dyn.h5", dyn, eval_curve([0.5, 0.6]))
    write_run(tmp_path / "m" / "fedavg.h5", config("fedavg"), eval_curve([0.4, 0.6]))
    write_run(tmp_path / "m" / "fedavg2.h5", config("fedavg", lr=0.05), eval_curve([0.4, 0.5]))
    fig = figure(load_runs([tmp_path / "m"]), "step", "test_acc", title="Methods")
    assert sorted(legend(fig)) == ["Dynamic averaging (Δ = 2), lr = 0.1", "FDA (linear, Θ = 1), lr = 0.1",
                                   "FedAvg, lr = 0.05", "FedAvg, lr = 0.1"]  # no "delta=-" for the others
    ax = fig.axes[0]
    assert ax.get_title() == "Methods" and ax.get_ylabel() == "test accuracy" and ax.get_xlabel() == "steps"
    plt.close(fig)


def test_legend_sits_below_the_axes_of_a_column_wide_figure(runs, tmp_path: Path) -> None:
    fig = figure(runs, "bytes", "test_acc")
    fig.canvas.draw()
    ax = fig.axes[0]
    box, frame = fig.legends[0].get_window_extent(), ax.get_window_extent()
    assert box.y1 <= frame.y0  # below the axes: it can cover no data
    assert tuple(fig.get_size_inches()) == (3.5, 2.6)
    assert ax.get_xlabel() == "bytes per device, total (up + down + control)"
    ticks = [t.get_text() for t in ax.get_xticklabels() + ax.get_yticklabels() if t.get_text()]
    assert any(t.endswith("B") for t in ticks) and any(t.endswith("%") for t in ticks)
    plt.close(fig)
    assert mpimg.imread(plot(runs, "bytes", "test_acc", out=tmp_path / "p.png")).shape[:2] == (780, 1050)


def two_runs_of(tmp_path: Path, method: str, key: str, values: tuple, **settings) -> list:
    """Two runs of ``method`` as a run stores them (every setting of the method written out),
    differing in ``algorithm.key`` alone; the first as written before ``local_bn`` existed."""
    for i, value in enumerate(values):
        cfg = config(method)
        cfg["algorithm"].update(settings, **{key: value})
        cfg = stored(cfg)
        if i == 0:
            del cfg["algorithm"]["local_bn"]
        write_run(tmp_path / f"{method}-{value}.h5", cfg, eval_curve([0.5, 0.7]))
    return load_runs([tmp_path])


def test_a_legend_names_only_the_setting_that_differs(tmp_path: Path) -> None:
    fig = figure(two_runs_of(tmp_path / "a", "fedavg", "local_steps", (5, 10)), "step", "test_acc")
    assert sorted(legend(fig)) == ["local_steps = 10", "local_steps = 5"]
    plt.close(fig)
    fig = figure(two_runs_of(tmp_path / "b", "fedavg", "server_lr", (0.5, 1.0), server_optimizer="adam"),
                 "step", "test_acc")
    assert sorted(legend(fig)) == ["server_lr = 0.5", "server_lr = 1"]
    plt.close(fig)


def test_another_methods_defaults_are_no_difference(tmp_path: Path) -> None:
    """Large Batch has no server optimizer, FedAvg's server_momentum = 0.9 is its unused default:
    the legend says the methods and FedAvg's sync period, everything only on request."""
    for method in ("large_batch", "fedavg"):
        write_run(tmp_path / f"{method}.h5", stored(config(method)), eval_curve([0.5, 0.7]))
    runs = load_runs([tmp_path])
    fig = figure(runs, "bytes", "test_acc")
    assert legend(fig) == ["FedAvg, local_steps = 10", "Large Batch"]
    plt.close(fig)
    fig = figure(runs, "bytes", "test_acc", all_settings=True)
    assert "server_momentum = 0.9" in legend(fig)[0] and "bucket_mb = 4" in legend(fig)[1]
    plt.close(fig)


def test_a_non_default_setting_of_one_method_is_shown(tmp_path: Path) -> None:
    lb, fedavg = config("large_batch"), config("fedavg")
    fedavg["algorithm"]["participation"] = 0.5
    write_run(tmp_path / "lb.h5", stored(lb), eval_curve([0.5, 0.7]))
    write_run(tmp_path / "fedavg.h5", stored(fedavg), eval_curve([0.5, 0.7]))
    fig = figure(load_runs([tmp_path]), "step", "test_acc")
    assert legend(fig) == ["FedAvg, local_steps = 10, participation = 0.5", "Large Batch"]
    plt.close(fig)


def step0_runs(tmp_path: Path) -> list:
    """Runs evaluated at step 0 (no bytes sent yet), as every run is."""
    for name, per_round in (("a", 1e3), ("b", 1e5)):
        curve = eval_curve([0.1, 0.5, 0.7, 0.8], bytes_per_round=per_round)
        for column in ("step", "epoch", "rounds", "bytes_up", "bytes_down", "wall_s", "sim_s"):
            curve[column] = curve[column] - curve[column][0]
        write_run(tmp_path / f"{name}.h5", config("fedavg", lr={"a": 0.1, "b": 0.2}[name]), curve)
    return load_runs([tmp_path])


@pytest.mark.parametrize("group_by", [None, "train.lr", "algorithm.name"])  # one run, one, two per line
def test_the_step_0_point_is_drawn_on_a_log_bytes_axis(tmp_path: Path, group_by) -> None:
    fig = figure(step0_runs(tmp_path), "bytes", "test_acc", logx=True, group_by=group_by)
    ax = fig.axes[0]
    assert ax.get_xscale() == "symlog"
    lo, hi = ax.get_xlim()
    for line in ax.lines:
        x, y = line.get_xdata(), line.get_ydata()
        assert x[0] == 0 and y[0] == pytest.approx(0.1) and lo <= 0 < hi
        assert np.isfinite(ax.transData.transform([[x[0], y[0]]])).all()
    fig.canvas.draw()
    assert "0 B" in [t.get_text() for t in ax.get_xticklabels()]
    plt.close(fig)


def test_logx_changes_the_axis_on_every_axis(tmp_path: Path) -> None:
    """Byte axes are log by default (their values span decades), the others linear; both flags act."""
    runs = step0_runs(tmp_path)
    for x, default in (("bytes", "symlog"), ("step", "linear"), ("round", "linear")):
        figures = [figure(runs, x, "test_acc", logx=logx) for logx in (None, False, True)]
        assert [f.axes[0].get_xscale() for f in figures] == [default, "linear", "symlog"]
        for f in figures:
            plt.close(f)


def test_the_title_says_the_data_set_and_split(tmp_path: Path) -> None:
    for name, alpha in (("a", 0.1), ("b", 0.1), ("c", 1.0)):
        cfg = config("fedavg", data={"name": "mnist", "partition": "dirichlet", "alpha": alpha})
        write_run(tmp_path / f"{name}.h5", cfg, eval_curve([0.5, 0.7]))
    shared = load_runs([tmp_path / "a.h5", tmp_path / "b.h5"])
    for kwargs, expected in (({}, "MNIST, Dirichlet α = 0.1"), ({"title": "Mine"}, "Mine"), ({"title": ""}, "")):
        fig = figure(shared, "step", "test_acc", **kwargs)
        assert fig.axes[0].get_title() == expected
        plt.close(fig)
    fig = figure(load_runs([tmp_path]), "step", "test_acc")
    assert fig.axes[0].get_title() == "MNIST"  # the split differs: the legend says alpha
    plt.close(fig)


def test_bad_arguments(runs, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="x: unknown axis 'flops'"):
        plot(runs, "flops", "test_acc", out=tmp_path / "x.png")
    with pytest.raises(ValueError, match="y: unknown metric"):
        plot(runs, "step", "acc", out=tmp_path / "x.png")
    with pytest.raises(ValueError, match="out: unsupported format"):
        plot(runs, "step", "test_acc", out=tmp_path / "x.jpg")
    with pytest.raises(ValueError, match="no runs"):
        plot([], "step", "test_acc", out=tmp_path / "x.png")
