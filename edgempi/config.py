"""Run configuration: typed dataclasses read from YAML plus ``--set a.b=c`` overrides.

The config is the single source of truth of a run: it is validated on every rank before any
collective (so a bad value never leaves some ranks waiting in MPI), stored whole in the
results file, and a run can be repeated from it alone.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from edgempi.data.settings import DataSettings
from edgempi.models import NORMS
from edgempi.registry import COMPRESSORS, DATASETS, METHODS, MODELS, MODES, SettingsRegistry
from edgempi.settings import ConfigError, Settings, one_of, require
from edgempi.sim.settings import NetworkConfig  # the modelled edge brings its own settings
from edgempi.util import yamltext

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine")
EVAL_MODELS = ("global", "average")  # what an evaluation scores where devices hold their own models
BATCHED = ("auto", "on", "off")
MAX_THREADS = 4096  # torch threads of one rank: beyond any node's cores, and libgomp would try to start them all


@dataclass
class ModelConfig:
    name: str = "lenet5"
    """The network: a built-in one (listed below) or ``package.module:function`` of your own."""
    norm: str | None = None
    """The normalisation layers of the model; unset: the model's usual one."""

    def check(self, cfg: RunConfig) -> None:
        MODELS.check(self.name)
        if self.norm is not None:
            one_of(self.norm, NORMS, "model.norm")


@dataclass
class TrainConfig:
    epochs: float | None = None
    """Length of the run in epochs (an epoch: every device passes over its shard once); default one epoch."""
    steps: int | None = None
    """Length of the run in local steps, instead of ``epochs`` (``--set`` one replaces the file's other)."""
    batch_size: int = 32
    """Samples per local step on each device (``large_batch``'s global batch is devices × this)."""
    optimizer: str = "sgd"
    """The optimizer of each device's local steps."""
    lr: float = 0.01
    """The local learning rate (after warm-up, before the schedule)."""
    adam_eps: float = 1e-8
    """ε of Adam's denominator: torch's default; Keras' is 1e-7 (the FDA paper)."""
    momentum: float = 0.0
    """SGD momentum (0: plain SGD)."""
    nesterov: bool = False
    """Nesterov momentum for SGD."""
    weight_decay: float = 0.0
    """L2 weight decay of the local optimizer."""
    warmup_steps: int = 0
    """Steps of linear learning-rate warm-up from ``lr``/``warmup_steps`` to ``lr``."""
    schedule: str = "constant"
    """Learning rate after warm-up: ``constant``, ``step`` (× ``gamma`` at each milestone), ``cosine`` (to 0)."""
    milestones: list[float] = field(default_factory=list)
    """``step`` schedule: the epochs at which the learning rate is multiplied by ``gamma``."""
    gamma: float = 0.1
    """``step`` schedule: the factor applied at each milestone."""
    eval_every: int = 0
    """Steps between evaluations on the test set (0: once per epoch); also at step 0 and the last step."""
    log_every: int = 10
    """Steps between rows of ``/steps`` (and the last step)."""
    threads: int = 0
    """Torch threads per rank (0: this rank's share of its node's cores)."""
    stop_at_acc: float | None = None
    """End the run, completed, at the first evaluation whose test accuracy reaches this fraction."""
    eval_model: str = "global"
    """What an evaluation scores where devices hold their own models: ``global``, the model of the last sync
    (after any server step); ``average``, the devices' current average (charged one sync by ``report``)."""
    signal_grace_s: float = 10.0
    """After SIGTERM, SIGINT or SIGUSR1: seconds to checkpoint before the job is aborted."""
    stall_timeout_s: float = 600.0
    """A rank without a step for this many seconds ends the job as failed (0 = off)."""


    def check(self, cfg: RunConfig) -> None:
        require(self.epochs is None or self.steps is None, "train.steps",
                "set only one of train.epochs and train.steps")
        require(self.epochs is None or self.epochs > 0, "train.epochs", "must be > 0")
        require(self.steps is None or self.steps > 0, "train.steps", "must be > 0")
        require(self.batch_size > 0, "train.batch_size", "must be > 0")
        one_of(self.optimizer, OPTIMIZERS, "train.optimizer")
        require(self.lr > 0, "train.lr", "must be > 0")
        require(self.adam_eps > 0, "train.adam_eps", "must be > 0")
        require(0 <= self.momentum < 1, "train.momentum", "must be in [0, 1)")
        require(not self.nesterov or self.momentum > 0, "train.nesterov", "needs train.momentum > 0")
        require(self.weight_decay >= 0, "train.weight_decay", "must be >= 0")
        require(self.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
        one_of(self.schedule, SCHEDULES, "train.schedule")
        require(all(m > 0 for m in self.milestones), "train.milestones", "epochs must be > 0")
        require(0 < self.gamma <= 1, "train.gamma", "must be in (0, 1]")
        require(self.eval_every >= 0, "train.eval_every", "must be >= 0 (0 = once per epoch)")
        require(self.log_every > 0, "train.log_every", "must be > 0")
        require(self.threads >= 0, "train.threads", "must be >= 0 (0 = share the node's cores)")
        require(self.threads <= MAX_THREADS, "train.threads", f"must be <= {MAX_THREADS}, more cores than a node has "
                "(each rank's thread count is also checked against its node's cores when the run starts)")
        require(self.stop_at_acc is None or 0 < self.stop_at_acc <= 1, "train.stop_at_acc", "must be in (0, 1]")
        one_of(self.eval_model, EVAL_MODELS, "train.eval_model")
        require(math.isfinite(self.signal_grace_s) and self.signal_grace_s >= 0, "train.signal_grace_s",
                "must be a number of seconds >= 0")
        require(math.isfinite(self.stall_timeout_s) and self.stall_timeout_s >= 0, "train.stall_timeout_s",
                "must be a number of seconds >= 0 (0 = off)")


@dataclass
class OutputConfig:
    dir: str = "results"
    """The folder of the results file (``--out`` sets it)."""
    name: str | None = None
    """The results file's name; unset: ``<config>-<algorithm>-<hash>.h5``."""

    def check(self, cfg: RunConfig) -> None:
        require(self.name is None or (bool(self.name) and "/" not in self.name),
                "output.name", "must be a file name without a directory")


@dataclass
class ParallelConfig:
    mode: str = "data"
    """``data``: each rank trains whole models; ``spatial``: a group of ranks splits the first layers into tiles."""
    grid: list[int] = field(default_factory=lambda: [1, 1])
    """``spatial``: rows × columns of tiles, one rank each."""
    layers: int = 1
    """``spatial``: how many leading layers of the model are split into tiles."""
    groups: str | list[list[int]] = "auto"
    """``spatial``: the fused layer groups ``[[first, last], ...]``, or ``auto`` (planned from measured timings)."""
    devices_per_rank: int = 1
    """Virtual devices on each rank, each with its own data, model and optimizer state."""
    batched: str | bool = "auto"
    """Step a rank's devices as one computation (``on``), one by one (``off``), or as one where possible (``auto``)."""

    def __post_init__(self) -> None:
        if isinstance(self.batched, bool):  # YAML reads a bare on / off as true / false
            self.batched = "on" if self.batched else "off"

    def check(self, cfg: RunConfig) -> None:
        one_of(self.mode, MODES.names(), "parallel.mode")
        if self.mode == "spatial":
            require(cfg.algorithm.capabilities.rank_groups, "parallel.mode",
                    f"spatial partitioning trains with algorithm.name=large_batch, not {cfg.algorithm.name}")
            require(len(self.grid) == 2 and min(self.grid) >= 1, "parallel.grid",
                    "must be [rows, columns] of tiles, >= 1")
            require(self.layers >= 1, "parallel.layers", "must be >= 1")
            require(self.groups == "auto" or isinstance(self.groups, list), "parallel.groups",
                    "must be auto or a list of [first, last] layer ranges")
            require(cfg.network.deadline_s is None, "network.deadline_s", "stragglers are not modelled in spatial mode")
            require(cfg.network.jitter == 0, "network.jitter", "per-round variation is not modelled in spatial mode")
        require(self.devices_per_rank >= 1, "parallel.devices_per_rank", "must be >= 1")
        if self.devices_per_rank > 1:
            require(self.mode == "data" and cfg.algorithm.capabilities.virtual_devices
                    and cfg.compression.name == "none", "parallel.devices_per_rank",
                    "several devices per rank are for data-parallel methods (not centralized) without compression")
        one_of(str(self.batched), BATCHED, "parallel.batched")  # a str since __post_init__
        if self.batched == "on":  # as FedBN's check: only this setting builds the model to check it
            from edgempi import batched, models

            reason = batched.why_not(cfg, models.probe(cfg))
            require(reason is None, "parallel.batched", f"on is not possible here: {reason}")


@dataclass
class CheckpointConfig:
    every_steps: int = 0
    """Checkpoint every this many steps, beside the results file (0: off)."""
    every_minutes: float = 0.0
    """Checkpoint every this many minutes of wall time (0: off)."""

    def check(self, cfg: RunConfig) -> None:
        require(self.every_steps >= 0, "checkpoint.every_steps", "must be >= 0 (0 = off)")
        require(self.every_steps % cfg.train.log_every == 0, "checkpoint.every_steps",
                f"must be a multiple of train.log_every ({cfg.train.log_every}): checkpoints are taken at /steps rows")
        require(self.every_minutes >= 0, "checkpoint.every_minutes", "must be >= 0 (0 = off)")


@dataclass
class RunConfig:
    seed: int = 0
    """Seeds the partition, the initial weights and every device's random stream: same config, same numbers."""
    # Read into the settings class of the method / compressor / data set that ``name`` picks (edgempi.registry):
    # a MethodSettings / CompressionSettings subclass, typed Any since config.py imports no method or compressor.
    data: DataSettings = field(default_factory=DataSettings.default, metadata={"registry": DATASETS})
    """What is trained on, and how it is split over the devices: ``name`` picks the data set (below)."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The network every device trains."""
    train: TrainConfig = field(default_factory=TrainConfig)
    """Each device's local training: length, batch, optimizer, learning-rate schedule, evaluation."""
    algorithm: Any = field(default_factory=METHODS.default_settings, metadata={"registry": METHODS})
    """The method: ``name`` picks it; the section holds the keys of that method (below)."""
    compression: Any = field(default_factory=COMPRESSORS.default_settings, metadata={"registry": COMPRESSORS})
    """What a compressed exchange sends: ``name`` picks the compressor (below)."""
    network: NetworkConfig = field(default_factory=NetworkConfig)
    """The modelled edge network behind ``sim_s``: links, devices' compute speeds, stragglers."""
    output: OutputConfig = field(default_factory=OutputConfig)
    """Where the results file goes."""
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    """Periodic checkpoints (``NAME.ckpt/`` beside the results file), for ``edgempi run --resume``."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """How devices map onto ranks: several devices per rank, or spatial partitioning of the first layers."""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


# -- parsing -------------------------------------------------------------------------------
_YAML11_EXPONENT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check a YAML value against a field's type hint, converting the safe cases (int → float)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return _coerce(key, value, option)
            except ConfigError as exc:
                errors.append(exc.reason)
        raise ConfigError(key, errors[0] if errors else f"invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if not isinstance(value, list):
            raise ConfigError(key, f"expected a list, got {value!r}")
        return [_coerce(key, v, item) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(key, f"expected an integer, got {value!r}")
    if hint is float:
        if isinstance(value, str) and _YAML11_EXPONENT.fullmatch(value.strip()):
            value = float(value)  # YAML 1.1 reads 3e-5 (no dot) as a string
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ConfigError(key, f"expected a finite number, got {value!r}")
            return float(value)
        raise ConfigError(key, f"expected a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(key, f"expected a string, got {value!r}")
    raise ConfigError(key, f"unsupported type {hint!r}")  # pragma: no cover - a schema bug


def _build(cls: type, values: Any, prefix: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(prefix.rstrip(".") or "config", f"expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in fields:
            raise ConfigError(key, f"unknown key (known: {', '.join(sorted(fields))})")
        hint, registry = hints[name], fields[name].metadata.get("registry")
        if registry is not None:
            kwargs[name] = read_section(registry, value if value is not None else {}, f"{key}.")
        elif isinstance(hint, type) and dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value if value is not None else {}, f"{key}.")
        else:
            kwargs[name] = _coerce(key, value, hint)
    return cls(**kwargs)


def read_section(registry: SettingsRegistry, values: Any, prefix: str) -> Settings:
    """A section read into the settings class of the entry its ``name`` picks. Keys that only
    other entries take are left out (so ``--set algorithm.name=fedavg`` can switch a file's
    method), unless the field says that setting it elsewhere would silently do nothing."""
    if not isinstance(values, dict):
        raise ConfigError(prefix.rstrip("."), f"expected a mapping, got {values!r}")
    name = _coerce(registry.key, values.get("name", registry.default), str)
    cls = registry.settings_class(name)
    own = {f.name for f in dataclasses.fields(cls)}
    foreign = registry.foreign_fields(cls)
    kept = {}
    for key, value in values.items():
        if key in own:
            kept[key] = value
            continue
        if key not in foreign:
            raise ConfigError(f"{prefix}{key}", f"unknown key (known: {', '.join(sorted(own | set(foreign)))})")
        f, takers = foreign[key]
        reason = f.metadata.get("exclusive")
        if reason and value is not None and value != f.default:
            raise ConfigError(f"{prefix}{key}", f"{reason}; not used by {name} (taken by {', '.join(takers)})")
    return _build(cls, {**kept, "name": name}, prefix)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` → (["a", "b"], YAML value of c): ``--set train.lr=0.05``."""
    if "=" not in text:
        raise ConfigError(text, "an override must look like KEY=VALUE")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(key, "empty key")
    return path, yamltext.value(raw, key)


#: keys of which a run takes one: setting one on the command line replaces the file's other.
ALTERNATIVES = ({"train.epochs", "train.steps"},)


def merge_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    """Apply ``--set`` overrides in order. ``train.steps`` on the command line replaces the
    file's ``train.epochs`` (and the other way round); both on the command line stay an error."""
    parsed = [parse_override(text) for text in overrides]
    given = {".".join(path) for path, _ in parsed}
    for keys in ALTERNATIVES:
        for key in (keys & given) if len(keys & given) == 1 else ():
            (other,) = keys - {key}
            section, name = other.split(".")
            if isinstance(raw.get(section), dict):
                raw[section].pop(name, None)
    for path, value in parsed:
        node = raw
        for i, part in enumerate(path[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(".".join(path[: i + 1]), "is not a section")
            node = child
        node[path[-1]] = value
    return raw


def from_dict(raw: dict[str, Any], overrides: Iterable[str] = ()) -> RunConfig:
    cfg = _build(RunConfig, merge_overrides(copy.deepcopy(raw), overrides), "")
    validate(cfg)
    return cfg


def load(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a YAML config, apply ``--set`` overrides, and validate (without MPI)."""
    raw = yamltext.read(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), f"expected a mapping of sections (data, model, train, ...), got a "
                                     f"{type(raw).__name__}")
    return from_dict(raw, overrides)


# -- validation ----------------------------------------------------------------------------
def validate(cfg: RunConfig) -> None:
    """Check every section by its own rules; a rule that spans sections lives with the section
    (or the method, compressor) that needs it. World size: :func:`validate_world`."""
    require(cfg.seed >= 0, "seed", "must be >= 0")
    for section in (cfg.data, cfg.model, cfg.train, cfg.algorithm, cfg.compression, cfg.network, cfg.parallel,
                    cfg.checkpoint, cfg.output):
        section.check(cfg)


def validate_world(cfg: RunConfig, world_size: int) -> None:
    """Does the method fit the number of ranks the job was started with?"""
    if cfg.parallel.mode == "spatial":
        tiles = cfg.parallel.grid[0] * cfg.parallel.grid[1]
        require(world_size % tiles == 0, "parallel.grid",
                f"{cfg.parallel.grid} needs a multiple of {tiles} ranks, the job has {world_size}")
    cfg.algorithm.check_world(world_size)
    from edgempi import cohort  # a cohort deals out over the ranks

    cohort.check_world(cfg, world_size)
