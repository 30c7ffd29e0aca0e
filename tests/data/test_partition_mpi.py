"""Every rank computes the same partition by itself, whatever its own random state."""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from edgempi.data.partition import SCHEMES, partition

PARAMS = {"dirichlet": {"alpha": 0.3}, "shards": {"shards_per_device": 2}, "quantity": {"skew": 1.0},
          "sorted_fraction": {"p": 0.5}, "concentrated": {"labels": [1], "on_devices": 2}}


@pytest.mark.mpi(min_size=2)
def test_all_ranks_agree_on_every_scheme():
    from edgempi.comm import Comm

    comm = Comm()
    np.random.seed(comm.rank)  # global state differs per rank and must not matter
    np.random.random(comm.rank + 1)
    labels = np.random.default_rng(0).integers(0, 10, 3000)
    digest = hashlib.sha256()
    for scheme in SCHEMES:
        for part in partition(labels, 8, scheme, 11, min_samples=16, **PARAMS.get(scheme, {})):
            digest.update(len(part).to_bytes(8, "little") + part.astype(np.int64).tobytes())
    assert len(set(comm.allgather_object(digest.hexdigest()))) == 1
