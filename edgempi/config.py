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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import yaml

from edgempi import yamltext
from edgempi.data.drift import DriftConfig
from edgempi.data.partition import PARAMETERS, SCHEMES, scheme_parameters
from edgempi.models import NORMS
from edgempi.registry import COMPRESSORS, DATASETS, METHODS, MODELS, SettingsRegistry
from edgempi.settings import ConfigError, Settings, one_of, require
from edgempi.sim.settings import NetworkConfig  # the modelled edge brings its own settings


OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine")
BATCHED = ("auto", "on", "off")
MAX_THREADS = 4096  # torch threads of one rank: beyond any node's cores, and libgomp would try to start them all


@dataclass
class DataConfig:
    name: str = "fashion-mnist"
    root: str | None = None
    download: bool = False
    partition: str = "iid"
    alpha: float | None = None  # dirichlet concentration
    shards_per_device: int | None = None  # shards
    skew: float | None = None  # quantity: sigma (lognormal) or exponent (powerlaw)
    law: str | None = None  # quantity: lognormal | powerlaw
    p: float | None = None  # sorted_fraction
    labels: list[int] | None = None  # concentrated: the labels that sit on few devices
    on_devices: int | None = None  # concentrated
    min_samples: int | None = None  # per device; default one local batch
    augment: bool | None = None  # random crop + flip; default on for cifar10
    synthetic_train: int = 6000
    synthetic_test: int = 1000
    synthetic_side: int = 28
    drift: DriftConfig = field(default_factory=DriftConfig)  # concept drift at given steps (edgempi.data.drift)

    def partition_args(self) -> dict[str, object]:
        """The partition parameters that were set (each scheme refuses those it does not take)."""
        return {k: getattr(self, k) for k in PARAMETERS if getattr(self, k) is not None}

    def check(self, cfg: "RunConfig") -> None:
        DATASETS.get(self.name)
        one_of(self.partition, SCHEMES, "data.partition")
        takes = scheme_parameters(self.partition)
        for key in self.partition_args():
            require(key in takes, f"data.{key}", f"not used by partition {self.partition!r} "
                    f"(it takes: {', '.join(takes) or 'nothing'})")
        require(self.min_samples is None or self.min_samples > 0, "data.min_samples", "must be > 0")
        require(self.synthetic_train > 0, "data.synthetic_train", "must be > 0")
        require(self.synthetic_test > 0, "data.synthetic_test", "must be > 0")
        require(self.synthetic_side >= 8, "data.synthetic_side", "must be >= 8")
        self.drift.check(cfg)


@dataclass
class ModelConfig:
    name: str = "lenet5"
    norm: str | None = None

    def check(self, cfg: "RunConfig") -> None:
        MODELS.check(self.name)
        if self.norm is not None:
            one_of(self.norm, NORMS, "model.norm")


@dataclass
class TrainConfig:
    epochs: float | None = None  # one epoch when neither epochs nor steps is set
    steps: int | None = None
    batch_size: int = 32
    optimizer: str = "sgd"
    lr: float = 0.01
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1
    eval_every: int = 0
    log_every: int = 10
    threads: int = 0
    stop_at_acc: float | None = None  # end the run at the first evaluation with test accuracy >= this


    def check(self, cfg: "RunConfig") -> None:
        require(self.epochs is None or self.steps is None, "train.steps", "set only one of train.epochs and train.steps")
        require(self.epochs is None or self.epochs > 0, "train.epochs", "must be > 0")
        require(self.steps is None or self.steps > 0, "train.steps", "must be > 0")
        require(self.batch_size > 0, "train.batch_size", "must be > 0")
        one_of(self.optimizer, OPTIMIZERS, "train.optimizer")
        require(self.lr > 0, "train.lr", "must be > 0")
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


@dataclass
class OutputConfig:
    dir: str = "results"
    name: str | None = None

    def check(self, cfg: "RunConfig") -> None:
        require(self.name is None or (self.name and "/" not in self.name),
                "output.name", "must be a file name without a directory")


@dataclass
class ParallelConfig:
    mode: str = "data"  # data | spatial
    grid: list[int] = field(default_factory=lambda: [1, 1])  # spatial: rows × columns of tiles
    layers: int = 1  # spatial: how many leading layers of the model are partitioned
    groups: str | list[list[int]] = "auto"  # spatial: fused layer groups [[first, last], ...] or auto
    devices_per_rank: int = 1  # virtual devices on each rank
    batched: str | bool = "auto"  # auto | on | off: a rank's devices step as one computation (edgempi.batched)

    def __post_init__(self) -> None:
        if isinstance(self.batched, bool):  # YAML reads a bare on / off as true / false
            self.batched = "on" if self.batched else "off"

    def check(self, cfg: "RunConfig") -> None:
        one_of(self.mode, ("data", "spatial"), "parallel.mode")
        if self.mode == "spatial":
            require(cfg.algorithm.spatial, "parallel.mode",
                    f"spatial partitioning trains with algorithm.name=large_batch, not {cfg.algorithm.name}")
            require(len(self.grid) == 2 and min(self.grid) >= 1, "parallel.grid", "must be [rows, columns] of tiles, >= 1")
            require(self.layers >= 1, "parallel.layers", "must be >= 1")
            require(self.groups == "auto" or isinstance(self.groups, list), "parallel.groups",
                    "must be auto or a list of [first, last] layer ranges")
            require(cfg.network.deadline_s is None, "network.deadline_s", "stragglers are not modelled in spatial mode")
            require(cfg.network.jitter == 0, "network.jitter", "per-round variation is not modelled in spatial mode")
        require(self.devices_per_rank >= 1, "parallel.devices_per_rank", "must be >= 1")
        if self.devices_per_rank > 1:
            require(self.mode == "data" and cfg.algorithm.virtual_devices and cfg.compression.name == "none",
                    "parallel.devices_per_rank", "several devices per rank are for data-parallel methods "
                    "(not centralized) without compression or sync_bn")
        one_of(self.batched, BATCHED, "parallel.batched")
        if self.batched == "on":  # as FedBN's check: only this setting builds the model to check it
            from edgempi import batched, models

            reason = batched.why_not(cfg, models.probe(cfg))
            require(reason is None, "parallel.batched", f"on is not possible here: {reason}")


@dataclass
class CheckpointConfig:
    every_steps: int = 0
    every_minutes: float = 0.0

    def check(self, cfg: "RunConfig") -> None:
        require(self.every_steps >= 0, "checkpoint.every_steps", "must be >= 0 (0 = off)")
        require(self.every_steps % cfg.train.log_every == 0, "checkpoint.every_steps",
                f"must be a multiple of train.log_every ({cfg.train.log_every}): checkpoints are taken at /steps rows")
        require(self.every_minutes >= 0, "checkpoint.every_minutes", "must be >= 0 (0 = off)")


@dataclass
class RunConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    # Read into the settings class of the method / compressor that ``name`` picks (edgempi.registry).
    algorithm: Settings = field(default_factory=METHODS.default_settings, metadata={"registry": METHODS})
    compression: Settings = field(default_factory=COMPRESSORS.default_settings, metadata={"registry": COMPRESSORS})
    network: NetworkConfig = field(default_factory=NetworkConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    parallel: ParallelConfig = field(default_factory=ParallelConfig)

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
        elif dataclasses.is_dataclass(hint):
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
