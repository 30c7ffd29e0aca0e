"""How figures and tables name a data set and its split: ``Fashion-MNIST, IID``,
``MNIST, Dirichlet α = 0.1``, so a figure says what it was measured on without its reader
opening a config."""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

DATASETS = {"fashion-mnist": "Fashion-MNIST", "mnist": "MNIST", "cifar10": "CIFAR-10", "synthetic": "synthetic data"}


def _num(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def dataset_name(name: str) -> str:
    """The data set's own spelling; a user's ``package.module:function`` as it is."""
    return DATASETS.get(name, name)


def split_name(scheme: str, args: Mapping[str, Any]) -> str:
    """A partition scheme with the parameters that shape it (their defaults where unset, as
    :mod:`edgempi.data.partition` applies them)."""
    get = args.get
    if scheme == "iid":
        return "IID"
    if scheme == "contiguous":
        return "contiguous slices"
    if scheme == "dirichlet":
        return f"Dirichlet α = {_num(get('alpha'))}"
    if scheme == "shards":
        return f"{_num(get('shards_per_device') or 2)} shards per device"
    if scheme == "quantity":
        law, skew = get("law") or "lognormal", _num(1.0 if get("skew") is None else get("skew"))
        return f"log-normal sizes, σ = {skew}" if law == "lognormal" else f"{law} sizes, exponent {skew}"
    if scheme == "sorted_fraction":
        return f"label-sorted fraction p = {_num(get('p'))}"
    if scheme == "concentrated":
        chosen = get("labels")
        labels = ",".join(_num(x) for x in (chosen if isinstance(chosen, (list, tuple)) else [chosen]))
        devices = get("on_devices") or 1
        return f"labels {labels} on {devices} device{'s' if devices != 1 else ''}"
    return scheme


def title(name: str | None, scheme: str | None, args: Mapping[str, Any]) -> str:
    """``Fashion-MNIST, Dirichlet α = 0.1``; a part that is None (not shared by the runs a
    figure shows) is left out."""
    parts = [dataset_name(name) if name is not None else None, split_name(scheme, args) if scheme is not None else None]
    return ", ".join(p for p in parts if p)
