"""The reference: one process with all the data; nothing crosses a network."""
from edgempi.algorithms.base import Policy


class Centralized(Policy):
    """Local SGD on the whole training set; the loop's defaults are exactly that."""
