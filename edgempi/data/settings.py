"""The ``data`` section: the keys every data set takes, and the base a data set derives its own from.

A data set declares its own keys as a ``Settings`` dataclass derived from :class:`DataSettings`
beside its loader (``data.synthetic_side`` lives with the synthetic images), as a method or a
compressor does; ``config.py`` reads the section into the class that ``data.name`` picks. A
loader that declares none (a user's function) takes :class:`DataSettings` itself.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, cast

from edgempi.data.concept_drift import DriftConfig
from edgempi.data.partition import PARAMETERS, SCHEMES, scheme_parameters
from edgempi.registry import DATASETS
from edgempi.settings import Settings, one_of, require


@dataclass
class DataSettings(Settings):
    root: str | None = None
    """The folder of the data's files; unset: ``$EDGEMPI_DATA``, ``./data``, ``/usr/share/datasets`` are searched."""
    download: bool = False
    """Let torchvision download the data set when its files are not found."""
    partition: str = "iid"
    """How the training set is split over the devices (``edgempi partition`` shows the split)."""
    alpha: float | None = None
    """``dirichlet``: the concentration α of the label skew; smaller is more skewed."""
    shards_per_device: int | None = None
    """``shards``: label-sorted shards dealt to each device (McMahan et al. 2017); unset: 2."""
    skew: float | None = None
    """``quantity``: spread of the device sizes, σ of ``lognormal`` or exponent of ``powerlaw`` (0: equal); unset: 1."""
    law: str | None = None
    """``quantity``: how device sizes are drawn, ``lognormal`` or ``powerlaw``; unset: ``lognormal``."""
    p: float | None = None
    """``sorted_fraction``: the fraction of each device's samples dealt from a label-sorted pool."""
    labels: list[int] | None = None
    """``concentrated``: the labels all of whose samples sit on ``on_devices`` devices."""
    on_devices: int | None = None
    """``concentrated``: how many devices hold those labels; unset: 1."""
    min_samples: int | None = None
    """The fewest training samples a device may get; unset: one local batch."""
    augment: bool | None = None
    """Random crop and flip of each batch; unset: on for ``cifar10`` only."""
    normalize: bool = True
    """Standardise inputs by the data set's mean and std; false: x / 255 alone (as the FDA paper's code)."""
    drift: DriftConfig = field(default_factory=DriftConfig)
    """Concept drift: at the given steps the data the devices draw from changes (as in Kamp et al. 2018)."""

    @classmethod
    def section(cls) -> str:
        return "data"

    @classmethod
    def default(cls) -> DataSettings:
        """The section of a config that names no data set: the default data set's settings."""
        return settings_class(DATASETS.default)(name=DATASETS.default)

    def input_shape(self) -> tuple[int, int]:
        """(channels, side) of the images, known before they are loaded: what a config check
        builds the model for (:func:`edgempi.models.probe`). MNIST's 1×28×28 unless the data
        set's own settings say otherwise."""
        return 1, 28

    def partition_args(self) -> dict[str, object]:
        """The partition parameters that were set (each scheme refuses those it does not take)."""
        return {k: getattr(self, k) for k in PARAMETERS if getattr(self, k) is not None}

    def check(self, cfg: Any) -> None:
        DATASETS.get(self.name)
        one_of(self.partition, SCHEMES, "data.partition")
        takes = scheme_parameters(self.partition)
        for key in self.partition_args():
            require(key in takes, f"data.{key}", f"not used by partition {self.partition!r} "
                    f"(it takes: {', '.join(takes) or 'nothing'})")
        require(self.min_samples is None or self.min_samples > 0, "data.min_samples", "must be > 0")
        self.drift.check(cfg)


def settings_class(name: str) -> type[DataSettings]:
    """The settings class of data set ``name`` (the registry refuses one not derived from
    :class:`DataSettings`)."""
    return cast("type[DataSettings]", DATASETS.settings_class(name))
