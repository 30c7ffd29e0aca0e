"""Training methods as policies of the one loop in :mod:`edgempi.train`.

Each module registers its method (``@METHODS.register``); importing it here is the whole of a
built-in method's registration. A user's own method needs none: ``algorithm.name:
package.module:Policy``.
"""
from edgempi.algorithms import centralized, dynamic, fda, fedavg, fedprox, large_batch, scaffold  # noqa: F401
from edgempi.algorithms.base import Capabilities, Context, FederatedSettings, MethodSettings, Policy
from edgempi.algorithms.held import HeldModel
from edgempi.registry import METHODS


def policy_class(name: str) -> type[Policy]:
    """The policy of a method name (or of a ``package.module:Policy`` path)."""
    return METHODS.get(name)


__all__ = ["Capabilities", "Context", "FederatedSettings", "HeldModel", "METHODS", "MethodSettings", "Policy",
           "policy_class"]
