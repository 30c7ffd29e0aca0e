"""Training methods as policies of the one loop in :mod:`edgempi.train`."""
from edgempi.algorithms.base import Context, Policy
from edgempi.algorithms.centralized import Centralized
from edgempi.algorithms.dynamic import Dynamic
from edgempi.algorithms.fda import FDA
from edgempi.algorithms.fedavg import FedAvg
from edgempi.algorithms.large_batch import LargeBatch

POLICIES: dict[str, type[Policy]] = {
    "centralized": Centralized,
    "large_batch": LargeBatch,
    "fedavg": FedAvg,
    "dynamic": Dynamic,
    "fda": FDA,
}


def create(ctx: Context) -> Policy:
    return POLICIES[ctx.cfg.algorithm.name](ctx)


__all__ = ["Context", "POLICIES", "Policy", "create"]
