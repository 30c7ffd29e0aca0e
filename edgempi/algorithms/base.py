"""What a training method is: its settings, what it can do, and a synchronisation rule with hooks
in the one loop.

A method is one module: a :class:`MethodSettings` dataclass with its keys and checks, and a
:class:`Policy` that names it (``Settings``), declares what it does and supports
(``capabilities``, a :class:`Capabilities`) and registers itself with ``@METHODS.register``.
"""
from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from edgempi.algorithms.held import HeldModel
from edgempi.config import RunConfig
from edgempi.devices import DeviceBank
from edgempi.flat import FlatModel
from edgempi.registry import METHODS
from edgempi.settings import ConfigError, Settings, exclusive, one_of, require
from edgempi.sim import Clock
from edgempi.util.lazy import torch

if TYPE_CHECKING:
    from edgempi.comm import Comm  # importing comm starts MPI



@dataclass(frozen=True)
class Capabilities:
    """What a method does and supports, declared once on its policy (``Policy.capabilities``)
    and asked through :attr:`MethodSettings.capabilities` by the loop, the evaluation, the
    recorder and the checks of other config sections. A limit that depends on the method's own
    settings (large_batch's ``sync_bn``) is its settings' :meth:`~MethodSettings.check`."""

    exchanges: bool = True
    """False: one device that never talks (the centralized baseline)."""
    exchanges_gradients: bool = False
    """Every device's gradient is kept and exchanged (:meth:`Policy.after_backward`) before its optimizer step."""
    models_differ: bool = False
    """Devices may hold different models between syncs: evaluations score ``Policy.held`` or the average."""
    compresses: str | None = None
    """What a compressed exchange of this method carries (``gradients``, ``updates``); None: it does not compress."""
    rank_groups: bool = False
    """Trains devices that each span a group of ranks (a ``parallel.mode`` that splits one model over
    ranks): a device's gradient parts are summed by :attr:`Context.group_reduce` before the exchange."""
    virtual_devices: bool = True
    """Several devices per rank (``parallel.devices_per_rank``) are supported."""
    drops_stragglers: bool = True
    """Devices that miss ``network.deadline_s`` can be left out of its exchanges."""
    sync_columns: tuple[str, ...] = ()
    """What a sync record holds besides its step (the columns of /syncs)."""
    device_hook: bool = False
    """Not declared: whether the policy overrides :meth:`Policy.before_device_step` (then its
    devices' steps are never batched), filled in by :attr:`MethodSettings.capabilities`."""


# What the capabilities replaced: attributes of the policy or its settings that no longer mean anything.
FORMER = ("models_differ", "exchanges_gradients", "sync_columns", "compresses", "spatial", "exchanges", "batches",
          "virtual_devices", "drops_stragglers")


def capabilities_of(name: str, policy: type[Policy]) -> Capabilities:
    """``policy``'s declaration, with ``device_hook`` filled in; a plug-in that declares its
    capabilities any other way is a one-line config error, not a method silently run as another."""
    declared = getattr(policy, "capabilities", None)
    if not isinstance(declared, Capabilities):
        raise ConfigError("algorithm.name", f"{name!r} declares capabilities = {declared!r}, not an "
                                            "edgempi.algorithms.Capabilities(...) (docs/plugins.md)")
    settings = {f.name for f in dataclasses.fields(policy.Settings)}
    former = [a for a in FORMER if hasattr(policy, a) or (a not in settings and hasattr(policy.Settings, a))]
    if former:
        raise ConfigError("algorithm.name", f"{name!r} declares {', '.join(former)} as attributes; declare them in "
                                            "capabilities = Capabilities(...) (docs/plugins.md)")
    return dataclasses.replace(declared, device_hook=policy.before_device_step is not Policy.before_device_step)


@dataclass
class MethodSettings(Settings):
    """The ``algorithm`` section as every method reads it; a method derives its own keys."""

    eval_stats: str = "average"
    """Devices' models are evaluated averaged, with ``average``d BatchNorm statistics or each device's
    ``local`` ones."""

    @property
    def capabilities(self) -> Capabilities:
        """What the method does and supports: the one place every other module asks."""
        return capabilities_of(self.name, METHODS.get(self.name))

    @classmethod
    def section(cls) -> str:
        return "algorithm"

    def check(self, cfg: RunConfig) -> None:
        capabilities = self.capabilities  # a plug-in's declaration is checked here, before any MPI work
        one_of(self.eval_stats, ("average", "local"), "algorithm.eval_stats")
        require(cfg.compression.name == "none" or capabilities.compresses is not None, "compression.name",
                f"{self.name} does not compress (large_batch compresses gradients, fedavg updates)")

    def check_world(self, world_size: int) -> None:
        """Does the method fit the number of ranks the job was started with?"""

    def kept_rows(self, cfg: RunConfig, ranks: int) -> int:
        """Model-sized rows one of ``ranks`` ranks keeps for the method besides its devices'
        (:mod:`edgempi.host.footprint`); 0: none worth counting."""
        return 0


@dataclass
class FederatedSettings(MethodSettings):
    """What methods that average weights share: which devices report in a round, and whether
    BatchNorm statistics are averaged with the weights."""

    average_buffers: bool = True
    """Average BatchNorm statistics with the weights (false: each device keeps its own)."""
    participation: float = exclusive(1.0, "partial participation and dropouts are for methods that average weights")
    """The seeded fraction of devices asked to report in each round."""
    dropout: float = exclusive(0.0, "partial participation and dropouts are for methods that average weights")
    """The seeded probability that an asked device fails to report (it uploads nothing and adopts the average)."""

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        require(0 < self.participation <= 1, "algorithm.participation", "must be in (0, 1]")
        require(0 <= self.dropout < 1, "algorithm.dropout", "must be in [0, 1)")
        require(cfg.compression.name == "none" or self.everyone_reports, "algorithm.participation",
                "partial participation is not combined with compression")

    @property
    def everyone_reports(self) -> bool:
        return self.participation == 1 and self.dropout == 0


@dataclass
class Context:
    """What every policy may use; built once by the loop.

    ``flat`` is the one model (the device training now); ``bank`` holds every device of this
    rank as a row, and is what a policy's exchanges read and write after the devices' steps.
    ``clock`` is the simulated edge clock, which decides who misses a round's deadline."""

    cfg: RunConfig
    comm: Comm
    flat: FlatModel
    steps_per_epoch: int
    optimizer: torch.optim.Optimizer
    bank: DeviceBank = None  # type: ignore[assignment]  # default: the one device of ``flat``
    group_reduce: Callable[[torch.Tensor], None] | None = None  # sums a device's gradient parts over its ranks
    clock: Clock | None = None  # None: no deadline, nobody is late

    def __post_init__(self) -> None:
        if self.bank is None:
            self.bank = DeviceBank(self.flat, self.optimizer, 1, keep_grads=False)

    def average_(self, buf: torch.Tensor, asked: np.ndarray | None = None) -> int:
        """Average ``buf`` (a row per device of this rank) in place over the ``asked`` devices
        (a mask over all devices; None: all) that make the round's deadline, as the clock
        decides (``network.deadline_s``); returns how many reported (0: buffers unchanged)."""
        reporters = asked
        if self.clock is not None:
            reporters = self.clock.reporters(asked, buf.numel() // self.comm.local * buf.element_size())
        return self.comm.allreduce_mean_(buf, reporters)


def participants(settings: FederatedSettings, seed: int, devices: int, round_index: int) -> np.ndarray | None:
    """Who is asked to report in a round: a seeded sample of devices (``algorithm.participation``),
    less the seeded dropouts (``algorithm.dropout``); None when everyone is. (Stragglers that miss
    ``network.deadline_s`` are dropped at the exchange, :meth:`Context.average_`.)

    A function of (seed, round) only, so every rank draws the same mask without talking.
    """
    a = settings
    if a.everyone_reports:
        return None
    rng = np.random.default_rng([seed, 0xFEDA, round_index])
    mask = np.zeros(devices, dtype=bool)
    mask[rng.choice(devices, size=max(1, round(a.participation * devices)), replace=False)] = True
    mask &= rng.random(devices) >= a.dropout
    return mask


class Policy:
    """Default: train locally and never exchange anything (the centralized baseline).

    ``Settings``: the method's settings dataclass; the instance the run uses is ``self.settings``.
    ``capabilities``: what the method does and supports. Where its devices' models differ,
    evaluation scores the ``held`` model of the last sync (``train.eval_model: global``), or
    the devices' average (of the ``shared`` positions only, if set).
    """

    capabilities: ClassVar[Capabilities] = Capabilities()
    shared: torch.Tensor | None = None  # FedBN: the parameter positions averaged (None: all exchanged)
    held: HeldModel | None = None  # the global model of the last sync, where models differ
    Settings: ClassVar[type[MethodSettings]] = MethodSettings
    paper: ClassVar[str] = ""  # where the method comes from: authors, title, venue, arXiv id (docs/config.md)

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.settings = ctx.cfg.algorithm

    @classmethod
    def prepare_model(cls, settings: MethodSettings, model: torch.nn.Module, comm: Comm) -> torch.nn.Module:
        """Change the model before it is flattened (e.g. synchronised BatchNorm); most keep it."""
        return model

    def before_device_step(self, device: int, step: int) -> None:
        """After device ``device`` (of this rank) has its gradient in ``ctx.flat.grads``, before
        that gradient is exchanged or its optimizer steps: the place to change a device's local
        objective (FedProx's proximal term, SCAFFOLD's correction)."""

    def begin_cohort(self, members: np.ndarray) -> None:
        """``algorithm.cohort``: a round begins with the population's ``members`` (the whole
        cohort; this rank's devices stand for ``ctx.comm.mine(members)``): the place a method
        that keeps state per device (SCAFFOLD's cᵢ) swaps it in. Every rank calls it at the same
        step, so it may talk."""

    def after_backward(self, step: int) -> bool:
        """Between backward and the optimizer step: the place to exchange gradients. Returns
        False when there is nothing to step with (no device reported)."""
        return True

    def after_step(self, step: int) -> dict[str, Any] | None:
        """After the optimizer step: the place to exchange weights; returns a sync record."""
        return None

    def state_dict(self) -> dict[str, Any]:
        """What a checkpoint must keep of this policy (reference models, memories)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; stateless policies have nothing to restore."""
