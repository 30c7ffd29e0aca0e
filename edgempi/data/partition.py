"""How the training set is split across devices: a function of the labels, the parameters and the seed.

Every rank computes the whole partition by itself and keeps its own part, so no communication is
needed and no rank can disagree with another. Parameters arrive as keyword arguments, which the
config holds under ``data.partition_args``; error messages name them there.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

KEY = "data"
DIRICHLET_TRIES = 100


def _iid(labels: np.ndarray, devices: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Equal disjoint shards of a random permutation; the remainder is dropped so devices step alike."""
    n = len(labels) // devices
    order = rng.permutation(len(labels))
    return [order[d * n:(d + 1) * n] for d in range(devices)]


def _contiguous(labels: np.ndarray, devices: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Consecutive slices of the training set in file order (``np.array_split``: sizes differ by
    at most one, nothing dropped), as the FDA paper's code splits MNIST; the seed plays no part,
    and the split is as IID as the file's order is random."""
    return np.array_split(np.arange(len(labels)), devices)


def _dirichlet(labels: np.ndarray, devices: int, rng: np.random.Generator, min_samples: int,
               alpha: float | None = None) -> list[np.ndarray]:
    """Each class split across devices by proportions ~ Dir(alpha): the usual label-skew benchmark.

    As in NIID-bench (Li et al. 2022), a device that already holds its fair share (n/devices) takes
    no more of later classes, which keeps sizes bounded and makes empty devices rare. A draw that
    leaves a device below ``min_samples`` is redrawn, a bounded number of times.
    """
    _positive(alpha, "alpha")
    fair = len(labels) / devices
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(DIRICHLET_TRIES):
        held = np.zeros(devices, dtype=np.int64)
        dealt, owners = [], []  # each class's samples in drawn order, and the device each goes to
        for members in by_class:
            share = rng.dirichlet(np.full(devices, alpha)) * (held < fair)
            if share.sum() == 0:
                break
            cuts = (np.cumsum(share / share.sum()) * len(members)).astype(np.int64)[:-1]
            dealt.append(rng.permutation(members))
            owners.append(np.searchsorted(cuts, np.arange(len(members)), side="right"))
            held += np.bincount(owners[-1], minlength=devices)
        else:
            if held.min() >= min_samples:
                return _gather(np.concatenate(dealt), np.concatenate(owners), held)
    raise ValueError(f"{KEY}.alpha: with alpha={alpha} some device still held fewer than "
                     f"min_samples={min_samples} samples after {DIRICHLET_TRIES} draws; raise alpha "
                     f"or use fewer devices or a smaller batch")


def _gather(samples: np.ndarray, owners: np.ndarray, held: np.ndarray) -> list[np.ndarray]:
    """Each device's ``samples`` (``owners`` says whose), in their order: the loop-free form of
    appending each class's piece to its device, whose Python loop over the devices made a
    10,000-device split take minutes."""
    grouped = samples[np.argsort(owners, kind="stable")]
    ends = np.cumsum(held)
    return [grouped[end - n:end] for end, n in zip(ends.tolist(), held.tolist())]


def _shards(labels: np.ndarray, devices: int, rng: np.random.Generator,
            shards_per_device: int = 2) -> list[np.ndarray]:
    """McMahan et al. (2017): sort by label, cut into equal shards, deal each device a few at random.

    A shard spans at most two classes while it is no larger than the smallest class.
    """
    _positive_int(shards_per_device, "shards_per_device")
    total = devices * shards_per_device
    size = len(labels) // total
    if size == 0:
        raise ValueError(f"{KEY}.shards_per_device: {total} shards of {len(labels)} samples would be empty")
    by_label = rng.permutation(len(labels))
    by_label = by_label[np.argsort(labels[by_label], kind="stable")][:total * size]
    dealt = rng.permutation(total).reshape(devices, shards_per_device)
    shards = by_label.reshape(total, size)
    return [shards[row].ravel() for row in dealt]


def _quantity(labels: np.ndarray, devices: int, rng: np.random.Generator, min_samples: int,
              skew: float = 1.0, law: str = "lognormal") -> list[np.ndarray]:
    """Unequal dataset sizes with IID labels; ``skew`` = 0 gives equal sizes under either law.

    ``lognormal``: weights exp(N(0, skew²)); ``powerlaw``: weights (rank+1)^-skew, ranks dealt at
    random. Each device first gets ``min_samples``; the rest is shared by the weights (largest
    remainders get the leftover samples), so the whole set is used.
    """
    if not (isinstance(skew, (int, float)) and skew >= 0):
        raise ValueError(f"{KEY}.skew: must be a number >= 0 (got {skew!r})")
    weights: np.ndarray
    if law == "lognormal":
        weights = rng.lognormal(0.0, skew, devices)
    elif law == "powerlaw":
        weights = (rng.permutation(devices) + 1.0) ** -skew
    else:
        raise ValueError(f"{KEY}.law: unknown law {law!r} (choose from lognormal, powerlaw)")
    spare = len(labels) - devices * min_samples
    if spare < 0:
        raise ValueError(f"data.partition: {devices} devices × min_samples={min_samples} exceeds the "
                         f"{len(labels)} samples")
    ideal = spare * weights / weights.sum()
    sizes = np.floor(ideal).astype(np.int64)
    sizes[np.argsort(sizes - ideal, kind="stable")[:spare - sizes.sum()]] += 1
    return np.split(rng.permutation(len(labels)), np.cumsum(sizes + min_samples)[:-1])


def _sorted_fraction(labels: np.ndarray, devices: int, rng: np.random.Generator,
                     p: float | None = None) -> list[np.ndarray]:
    """FDA's biased setting: a fraction p of each device's data is a slice of a label-sorted pool.

    Theologitis et al. sort a fraction p of the (shuffled) data by label and deal it out in
    contiguous slices, the rest IID; here every device gets exactly round(p·n) of the sorted part.
    """
    if not (isinstance(p, (int, float)) and 0 <= p <= 1):
        raise ValueError(f"{KEY}.p: must be a fraction in [0, 1] (got {p!r})")
    n = len(labels) // devices
    biased = round(p * n)
    order = rng.permutation(len(labels))
    pool = order[:devices * biased]
    pool = pool[np.argsort(labels[pool], kind="stable")].reshape(devices, biased)
    rest = order[devices * biased:devices * n].reshape(devices, n - biased)
    return list(np.concatenate([pool, rest], axis=1))


def _concentrated(labels: np.ndarray, devices: int, rng: np.random.Generator,
                  chosen_labels: list[int] | int | None = None, on_devices: int = 1) -> list[np.ndarray]:
    """FDA's other setting: every sample of the chosen labels sits on a few devices; sizes stay equal.

    The chosen devices are drawn from the seed; they are filled with the chosen labels first and
    topped up from the IID rest.
    """
    if isinstance(chosen_labels, (int, np.integer)):
        chosen_labels = [chosen_labels]
    if not isinstance(chosen_labels, (list, tuple)) or not chosen_labels:
        raise ValueError(f"{KEY}.labels: needs a non-empty list of labels (got {chosen_labels!r})")
    missing = sorted(set(chosen_labels) - set(np.unique(labels).tolist()))
    if missing:
        raise ValueError(f"{KEY}.labels: labels {missing} do not occur in the data")
    _positive_int(on_devices, "on_devices")
    if on_devices > devices:
        raise ValueError(f"{KEY}.on_devices: {on_devices} exceeds the {devices} devices")
    n = len(labels) // devices
    chosen = np.isin(labels, chosen_labels)
    held = rng.permutation(np.flatnonzero(chosen))
    if len(held) > on_devices * n:
        raise ValueError(f"{KEY}.on_devices: labels {list(chosen_labels)} have {len(held)} samples, more than "
                         f"{on_devices} devices of {n} samples hold")
    rest = rng.permutation(np.flatnonzero(~chosen))
    hosts = np.sort(rng.choice(devices, on_devices, replace=False))
    quota = np.zeros(devices, dtype=np.int64)
    quota[hosts] = [len(s) for s in np.array_split(held, on_devices)]
    held_parts = np.split(held, np.cumsum(quota)[:-1])
    rest_parts = np.split(rest, np.cumsum(n - quota))[:devices]
    return [np.concatenate(pair) for pair in zip(held_parts, rest_parts)]


def _positive(value: object, name: str) -> None:
    if not (isinstance(value, (int, float)) and value > 0):
        raise ValueError(f"{KEY}.{name}: must be a number > 0 (got {value!r})")


def _positive_int(value: object, name: str) -> None:
    if not (isinstance(value, (int, np.integer)) and value >= 1):
        raise ValueError(f"{KEY}.{name}: must be an integer >= 1 (got {value!r})")


# scheme → (builder, whether it enforces min_samples itself, the parameters it takes)
_SCHEMES: dict[str, tuple[Callable[..., list[np.ndarray]], bool, tuple[str, ...]]] = {
    "iid": (_iid, False, ()),
    "contiguous": (_contiguous, False, ()),
    "dirichlet": (_dirichlet, True, ("alpha",)),
    "shards": (_shards, False, ("shards_per_device",)),
    "quantity": (_quantity, True, ("skew", "law")),
    "sorted_fraction": (_sorted_fraction, False, ("p",)),
    "concentrated": (_concentrated, False, ("labels", "on_devices")),
}
SCHEMES = tuple(_SCHEMES)
PARAMETERS = tuple(sorted({p for _, _, params in _SCHEMES.values() for p in params}))


def scheme_parameters(scheme: str) -> tuple[str, ...]:
    """The keyword parameters a scheme takes (each scheme refuses the others)."""
    return _SCHEMES[scheme][2]


def partition(labels: np.ndarray, /, devices: int, scheme: str, seed: int, min_samples: int = 1,
               **kw: object) -> list[np.ndarray]:
    """Sorted index arrays, one per device, disjoint; the same on every rank for the same arguments.

    ``labels`` is positional-only so that ``concentrated`` can take its own ``labels=[..]``.

    ``min_samples`` (one local batch, from the caller) is a floor every device must reach, so a
    device never has less than one batch to step on.
    """
    labels = np.asarray(labels)
    if scheme not in _SCHEMES:
        raise ValueError(f"data.partition: unknown scheme {scheme!r} (choose from {', '.join(SCHEMES)})")
    builder, takes_min, params = _SCHEMES[scheme]
    unknown = sorted(set(kw) - set(params))
    if unknown:
        allowed = ", ".join(params) or "none"
        raise ValueError(f"{KEY}.{unknown[0]}: partition {scheme!r} does not take it (takes: {allowed})")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"data.partition: labels must be a 1-D integer array (got {labels.dtype} {labels.shape})")
    if not isinstance(devices, (int, np.integer)) or devices < 1:
        raise ValueError(f"data.partition: devices must be an integer >= 1 (got {devices!r})")
    if not isinstance(min_samples, (int, np.integer)) or min_samples < 0:
        raise ValueError(f"data.partition: min_samples must be an integer >= 0 (got {min_samples!r})")
    rng = np.random.default_rng(np.random.SeedSequence(seed))
    if "labels" in kw:  # the builders' first argument is the label array
        kw["chosen_labels"] = kw.pop("labels")
    parts = builder(labels, devices, rng, **({"min_samples": min_samples} if takes_min else {}), **kw)
    smallest = min(len(p) for p in parts)
    if smallest < min_samples:
        raise ValueError(f"data.partition: scheme {scheme!r} leaves a device {smallest} samples, fewer than "
                         f"min_samples={min_samples} (one batch); use fewer devices or a smaller batch")
    return [np.sort(p) for p in parts]


def counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """[devices × classes] sample counts, as stored in /partition/counts."""
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])


def format_counts(table: np.ndarray) -> str:
    """A fixed-width table of the counts for the terminal: one row per device, one column per
    class (headed ``class 0 1 2 …``), with per-device and per-class totals."""
    devices, classes = table.shape
    header = ["device", *map(str, range(classes)), "total"]
    rows = [[str(d), *map(str, row), str(row.sum())] for d, row in enumerate(table)]
    rows.append(["total", *map(str, table.sum(axis=0)), str(table.sum())])
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    over = " " * widths[0] + "  " + "samples per class".ljust(sum(widths[1:-1]) + 2 * (classes - 1))
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(r, widths)) for r in [header, *rows]]
    return "\n".join([over.rstrip(), *lines])


def counts_figure(table: np.ndarray, title: str = "") -> Figure:
    """A devices × classes heat map whose colours start at zero samples, so an IID split, whose
    counts differ by a few percent, looks even instead of a checkerboard of noise; ``title``
    names the data set and split (:func:`edgempi.data.names.title`)."""
    from matplotlib.figure import Figure

    devices, classes = table.shape
    fig = Figure(figsize=(max(4.0, 0.4 * classes + 2), max(3.0, 0.25 * devices + 1.5)))
    ax = fig.add_subplot()
    image = ax.imshow(table, aspect="auto", cmap="viridis", interpolation="nearest", vmin=0,
                      vmax=max(1, int(table.max())))
    fig.colorbar(image, ax=ax, label="samples")
    ax.set_xlabel("class")
    ax.set_ylabel("device")
    ax.set_xticks(range(classes))
    ax.set_title(f"{title or 'partition'}: {devices} devices × {classes} classes")
    fig.tight_layout()
    return fig


def plot_counts(table: np.ndarray, path: str, title: str = "") -> None:
    """The heat map of :func:`counts_figure` as a PNG, drawn off-screen (works on a headless node)."""
    counts_figure(table, title).savefig(path, dpi=100)
