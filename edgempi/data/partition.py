"""How the training set is split across devices: a function of the seed only."""
from __future__ import annotations

import numpy as np


def partition(labels: np.ndarray, devices: int, scheme: str, seed: int, **kw: object) -> list[np.ndarray]:
    """Index arrays, one per device; every rank computes the same split without communicating."""
    if scheme != "iid":
        raise ValueError(f"data.partition: unknown scheme {scheme!r}")
    n = len(labels) // devices
    order = np.random.default_rng(np.random.SeedSequence(seed)).permutation(len(labels))
    return [np.sort(order[d * n:(d + 1) * n]) for d in range(devices)]


def counts(labels: np.ndarray, parts: list[np.ndarray], num_classes: int) -> np.ndarray:
    """[devices × classes] sample counts, as stored in /partition/counts."""
    return np.stack([np.bincount(labels[p], minlength=num_classes) for p in parts])
