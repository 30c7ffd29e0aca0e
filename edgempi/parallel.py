"""How a run's ranks train its devices (``parallel.mode``), behind the one interface that the
build, the loop, the runner and the recorder ask without knowing which mode they run.

The default, ``data``, is :class:`ParallelMode` itself: each rank trains whole models, and every
device is a peer of every other. A mode in which one device spans a group of ranks derives from
it and says how many devices the ranks make, which ranks are one device's and which are peers,
how the model is spread over a device's ranks, how their gradient parts are summed before the
method's exchange, and what the results file must keep for a resumed run to train the same way.
Modes are registered here, by dotted path (:data:`edgempi.registry.MODES`), so that checking a
config or describing a results file imports none of their modules.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from edgempi.registry import MODES

if TYPE_CHECKING:
    import torch
    from torch import nn

    from edgempi.comm import Comm  # importing comm starts MPI
    from edgempi.config import RunConfig
    from edgempi.data import Dataset
    from edgempi.sim import Link


class ParallelMode:
    """``data``: a rank trains ``parallel.devices_per_rank`` devices, each a whole model.

    Built once per run from its config (:func:`mode_of`); :meth:`peers` and :meth:`wrap` are
    called once each, in that order, by :func:`edgempi.train.build`."""

    recorded: ClassVar[tuple[str, ...]] = ()
    """Attributes of the results file that the mode writes (:meth:`attrs`) and that a resumed run
    reads back (:meth:`resumed`)."""

    def __init__(self, cfg: RunConfig) -> None:
        self.cfg = cfg
        # Sums one device's gradient parts over the ranks it spans before the method's exchange
        # (edgempi.algorithms.Context.group_reduce); None: every device is one rank.
        self.group_reduce: Callable[[torch.Tensor], None] | None = None

    def devices(self, ranks: int) -> int:
        """How many devices ``ranks`` ranks train (the config has refused a count that does not fit)."""
        return ranks * self.cfg.parallel.devices_per_rank

    def peers(self, world: Comm) -> Comm:
        """The devices the method averages over (collective where it splits ``world``)."""
        return world

    def wrap(self, model: nn.Module, dataset: Dataset, link: Link | None) -> nn.Module:
        """The model a device trains, made from the one the method prepared; ``link``: this
        rank's modelled link, for a mode that plans by it."""
        return model

    def attrs(self) -> dict[str, str]:
        """What the results file records of how the run was spread (after :meth:`wrap`)."""
        return {}

    @classmethod
    def resumed(cls, cfg: RunConfig, recorded: Mapping[str, str | None]) -> RunConfig:
        """The config a resumed run trains with, given the :attr:`recorded` attributes of its
        file: what the mode chose at the run's start is not chosen anew."""
        return cfg

    @staticmethod
    def describe(attrs: Mapping[str, Any]) -> list[str]:
        """Lines for ``edgempi info`` on what a results file records of the mode."""
        return []


MODES.register("data")(ParallelMode)
MODES.add_path("spatial", "edgempi.spatial.mode:SpatialMode")


def mode_class(cfg: RunConfig) -> type[ParallelMode]:
    """The class of the run's mode, for what is asked before the run is built."""
    chosen: type[ParallelMode] = MODES.get(cfg.parallel.mode)
    return chosen


def mode_of(cfg: RunConfig) -> ParallelMode:
    return mode_class(cfg)(cfg)


def describe(name: str, attrs: Mapping[str, Any]) -> list[str]:
    """The ``edgempi info`` lines of a file trained in mode ``name``; none for a mode this
    version does not know (a file of another version)."""
    return MODES.get(name).describe(attrs) if name in MODES else []
