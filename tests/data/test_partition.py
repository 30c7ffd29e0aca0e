"""Partition schemes: disjoint, deterministic, and shaped by their parameters."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import small_config, write_config

from edgempi import cli, data
from edgempi.data.names import split_name, title
from edgempi.data.partition import (
    DIRICHLET_TRIES,
    SCHEMES,
    counts,
    counts_figure,
    format_counts,
    partition,
    plot_counts,
)

LABELS = np.random.default_rng(0).integers(0, 10, 6000)
DEVICES = 10
PARAMS = {
    "iid": {},
    "contiguous": {},
    "dirichlet": {"alpha": 0.5},
    "shards": {"shards_per_device": 2},
    "quantity": {"skew": 1.0},
    "sorted_fraction": {"p": 0.5},
    "concentrated": {"labels": [3], "on_devices": 2},
}
COVERS_ALL = {"dirichlet", "quantity", "contiguous"}  # the others drop the remainder to keep sizes equal
SEEDLESS = {"contiguous"}  # the file's order, whatever the seed


def table(scheme: str, **kw: object) -> np.ndarray:
    return counts(LABELS, partition(LABELS, DEVICES, scheme, 7, min_samples=32, **kw), 10)


def test_every_scheme_is_tested():
    assert set(PARAMS) == set(SCHEMES)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_disjoint_sorted_deterministic_and_seeded(scheme):
    parts = partition(LABELS, DEVICES, scheme, 7, min_samples=32, **PARAMS[scheme])
    joined = np.concatenate(parts)
    assert len(parts) == DEVICES and len(np.unique(joined)) == len(joined)
    assert all(np.array_equal(p, np.sort(p)) and len(p) >= 32 for p in parts)
    assert len(joined) == (len(LABELS) if scheme in COVERS_ALL else len(LABELS) // DEVICES * DEVICES)
    again = partition(LABELS, DEVICES, scheme, 7, min_samples=32, **PARAMS[scheme])
    other = partition(LABELS, DEVICES, scheme, 8, min_samples=32, **PARAMS[scheme])
    assert all(np.array_equal(p, q) for p, q in zip(parts, again))
    assert all(np.array_equal(p, q) for p, q in zip(parts, other)) == (scheme in SEEDLESS)


def test_iid_matches_the_plain_permutation_split():
    order = np.random.default_rng(np.random.SeedSequence(7)).permutation(len(LABELS))
    parts = partition(LABELS, DEVICES, "iid", 7)
    assert all(np.array_equal(p, np.sort(order[d * 600:(d + 1) * 600])) for d, p in enumerate(parts))


def test_contiguous_is_array_split_in_file_order():
    """The FDA paper's IID split: device d holds the d-th slice of the file, labels as they lie."""
    labels = np.arange(1003) % 7
    parts = partition(labels, 4, "contiguous", 7)
    assert [(p[0], p[-1]) for p in parts] == [(0, 250), (251, 501), (502, 752), (753, 1002)]
    assert all(np.array_equal(labels[p], s) for p, s in zip(parts, np.array_split(labels, 4)))
    with pytest.raises(ValueError, match="min_samples=300"):
        partition(labels, 4, "contiguous", 7, min_samples=300)


def test_dirichlet_alpha_controls_label_skew():
    iid_like = table("dirichlet", alpha=1000.0)
    share = iid_like / iid_like.sum(axis=1, keepdims=True)
    assert np.abs(share - 0.1).max() < 0.05
    skewed = table("dirichlet", alpha=0.05)
    top_two = np.sort(skewed, axis=1)[:, -2:].sum(axis=1) / skewed.sum(axis=1)
    assert np.median(top_two) > 0.9


@pytest.mark.parametrize("devices, alpha, min_samples, digest", [
    (50, 0.5, 1, "2e195bcd2b83639d"), (200, 2.0, 1, "b5ebc0deafc57482"), (40, 0.3, 12, "08b7615af1a50cc5")])
def test_dirichlet_split_is_the_one_it_always_was(devices, alpha, min_samples, digest):
    """The split of the per-device loop it replaced (digests from it), redraws included: the loop-free
    form changes no run's shards."""
    import hashlib

    labels = np.random.default_rng(7).integers(0, 10, 3000)
    h = hashlib.sha256()
    for part in partition(labels, devices, "dirichlet", 3, min_samples=min_samples, alpha=alpha):
        h.update(np.asarray(part, dtype=np.int64).tobytes() + b"|")
    assert h.hexdigest()[:16] == digest


def test_dirichlet_gives_up_after_bounded_retries():
    two_classes = np.repeat([0, 1], 500)
    with pytest.raises(ValueError, match=rf"alpha=0.01.*min_samples=100.*{DIRICHLET_TRIES}"):
        partition(two_classes, 4, "dirichlet", 0, min_samples=100, alpha=0.01)


@pytest.mark.parametrize("per_device", [2, 3, 5])
def test_shards_limit_classes_per_device(per_device):
    # holds while a shard (6000 / 10 / per_device) is no larger than the smallest class (~570)
    present = (table("shards", shards_per_device=per_device) > 0).sum(axis=1)
    assert present.max() <= 2 * per_device and present.min() >= 1


def test_quantity_sizes_are_skewed_and_labels_iid():
    flat = table("quantity", skew=0.0).sum(axis=1)
    assert flat.max() - flat.min() <= 1
    for law in ("lognormal", "powerlaw"):
        t = table("quantity", skew=1.5, law=law)
        sizes = t.sum(axis=1)
        assert sizes.max() > 4 * sizes.min() and sizes.min() >= 32
        big = t[sizes.argmax()] / sizes.max()
        assert np.abs(big - 0.1).max() < 0.05


@pytest.mark.parametrize("p", [0.0, 0.5, 0.8])
def test_sorted_fraction_biases_a_fraction_p(p):
    t = table("sorted_fraction", p=p)
    dominant = t.max(axis=1) / t.sum(axis=1)
    # a sorted slice of 300·p·… samples is mostly one class; the IID rest spreads ~10 % per class
    expected = p + (1 - p) * 0.1
    assert np.abs(np.median(dominant) - expected) < 0.08


def test_concentrated_labels_sit_only_on_the_chosen_devices():
    t = table("concentrated", labels=[2, 5], on_devices=3)
    holders = np.flatnonzero(t[:, [2, 5]].sum(axis=1))
    assert len(holders) == 3
    assert t[:, [2, 5]].sum() == (LABELS == 2).sum() + (LABELS == 5).sum()
    assert set(t.sum(axis=1)) == {600}


@pytest.mark.parametrize("scheme, kw, key", [
    ("bogus", {}, "bogus"),
    ("iid", {"alpha": 1.0}, "alpha"),
    ("dirichlet", {}, "alpha"),
    ("dirichlet", {"alpha": -1.0}, "alpha"),
    ("shards", {"shards_per_device": 0}, "shards_per_device"),
    ("shards", {"shards_per_device": 1000}, "shards_per_device"),
    ("quantity", {"skew": -1.0}, "skew"),
    ("quantity", {"law": "zipf"}, "law"),
    ("sorted_fraction", {"p": 1.5}, "p"),
    ("concentrated", {}, "labels"),
    ("concentrated", {"labels": [42]}, "labels"),
    ("concentrated", {"labels": [1], "on_devices": 11}, "on_devices"),
    ("concentrated", {"labels": list(range(9)), "on_devices": 1}, "on_devices"),
])
def test_bad_parameters_name_themselves(scheme, kw, key):
    with pytest.raises(ValueError, match=key) as info:
        partition(LABELS, DEVICES, scheme, 0, **kw)
    assert "\n" not in str(info.value)


def test_too_few_samples_for_one_batch_is_refused():
    with pytest.raises(ValueError, match="min_samples=700"):
        partition(LABELS, DEVICES, "iid", 0, min_samples=700)
    with pytest.raises(ValueError, match="min_samples"):
        partition(LABELS, DEVICES, "quantity", 0, min_samples=700, skew=1.0)


def test_format_and_plot_counts(tmp_path):
    t = table("shards", shards_per_device=2)
    text = format_counts(t).splitlines()
    assert len(text) == DEVICES + 3 and text[1].split() == ["device", *map(str, range(10)), "total"]
    assert text[0].strip() == "samples per class" and text[0].index("samples") > text[1].index("device") + 5
    assert text[-1].split()[-1] == str(t.sum()) and text[2].split()[-1] == str(t[0].sum())
    plot_counts(t, str(tmp_path / "counts.png"))
    assert (tmp_path / "counts.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_heat_map_colours_start_at_zero():
    """An IID split differs by a few percent between cells: on a scale from its min to its max
    that noise would span all colours; from zero it is one even colour."""
    labels = np.random.default_rng(1).integers(0, 10, 60000)  # Fashion-MNIST's size, 4 devices: ~1500 a cell
    t = counts(labels, partition(labels, 4, "iid", 0), 10)
    assert 0.03 < np.ptp(t) / t.mean() < 0.2
    image = counts_figure(t).axes[0].images[0]
    assert image.norm.vmin == 0 and image.norm.vmax == t.max()
    assert np.ptp(image.norm(t.astype(float))) < 0.2  # a fifth of the colour scale, not all of it


@pytest.mark.parametrize("scheme,expected", [
    ("iid", "IID"), ("contiguous", "contiguous slices"), ("dirichlet", "Dirichlet α = 0.5"),
    ("shards", "2 shards per device"), ("quantity", "log-normal sizes, σ = 1"),
    ("sorted_fraction", "label-sorted fraction p = 0.5"), ("concentrated", "labels 3 on 2 devices")])
def test_a_split_is_named_with_its_parameters(scheme: str, expected: str) -> None:
    assert split_name(scheme, PARAMS[scheme]) == expected
    assert title("fashion-mnist", scheme, PARAMS[scheme]) == f"Fashion-MNIST, {expected}"


def test_partition_plot_says_the_data_set_and_split(tmp_path, monkeypatch) -> None:
    titles = []
    monkeypatch.setattr(data, "plot_counts", lambda table, path, name="": titles.append(name) or
                        plot_counts(table, path, name))
    cfg = write_config(tmp_path / "c.yaml", small_config(data={"partition": "dirichlet", "alpha": 1.0}))
    assert cli.main(["partition", str(cfg), "--devices", "4", "--plot", str(tmp_path / "p.png")]) == 0
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert titles == ["synthetic data, Dirichlet α = 1"]
    assert counts_figure(counts(LABELS, partition(LABELS, 4, "iid", 0), 10), "MNIST, IID").axes[0].get_title() == \
        "MNIST, IID: 4 devices × 10 classes"
