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


class ConfigError(ValueError):
    """A problem with the user's configuration; printed as one line, exit code 2."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


DATASETS = ("fashion-mnist", "mnist", "cifar10", "synthetic")
OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "step", "cosine")
FDA_VARIANTS = ("naive", "linear", "sketch")


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

    def partition_args(self) -> dict[str, object]:
        """The partition parameters that were set (each scheme refuses those it does not take)."""
        from edgempi.data.partition import PARAMETERS

        return {k: getattr(self, k) for k in PARAMETERS if getattr(self, k) is not None}


@dataclass
class ModelConfig:
    name: str = "lenet5"
    norm: str | None = None


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


@dataclass
class AlgorithmConfig:
    name: str = "large_batch"
    local_steps: int | None = None
    local_epochs: float | None = None
    average_buffers: bool = True
    check_every: int = 1  # dynamic: local steps between checks of ‖w − r‖² > delta
    delta: float | None = None  # dynamic: the divergence threshold Δ (required)
    balancing: bool = False  # dynamic: average the violators (plus random others) before a full sync
    variant: str = "linear"  # fda: naive, linear or sketch
    theta: float | None = None  # fda: the variance threshold Θ; when unset, theta_per_param × d
    theta_per_param: float = 3.0e-5  # in the range the FDA authors fitted: 2.7e-5 … 4.9e-5
    sketch_depth: int = 5
    sketch_width: int = 250
    sync_bn: bool = False
    participation: float = 1.0  # fedavg: seeded fraction of devices taking part in each round
    dropout: float = 0.0  # fedavg: seeded probability that a chosen device fails to report
    eval_stats: str = "average"


@dataclass
class CompressionConfig:
    name: str = "none"
    ratio: float = 0.01  # topk / randomk: fraction of elements kept
    warmup_epochs: int = 0  # topk: DGC density warm-up (0 = off)
    sample_ratio: float = 0.01  # topk: sample for the threshold
    levels: int = 127  # qsgd
    bucket_size: int = 512  # qsgd
    rank: int = 4  # powersgd
    error_feedback: bool = True
    clip_norm: float = 0.0  # DGC local gradient clipping (0 = off)


@dataclass
class NetworkConfig:
    preset: str = "lan"
    up_mbps: float | None = None
    down_mbps: float | None = None
    latency_ms: float | None = None
    spread: float = 0.0
    compute_factor: float = 1.0
    compute_spread: float = 0.0
    step_ms: float | None = None  # modelled time of one local step (× compute factor) instead of the measured one
    deadline_s: float | None = None  # stragglers: a round closes this long after it opened (needs step_ms)
    jitter: float = 0.0  # sigma of a log-normal slowdown of each device's round, drawn afresh every exchange


@dataclass
class OutputConfig:
    dir: str = "results"
    name: str | None = None


@dataclass
class ParallelConfig:
    mode: str = "data"  # data | spatial
    grid: list[int] = field(default_factory=lambda: [1, 1])  # spatial: rows × columns of tiles
    layers: int = 1  # spatial: how many leading layers of the model are partitioned
    groups: str | list[list[int]] = "auto"  # spatial: fused layer groups [[first, last], ...] or auto
    devices_per_rank: int = 1  # virtual devices trained one after another on each rank


@dataclass
class CheckpointConfig:
    every_steps: int = 0
    every_minutes: float = 0.0


@dataclass
class RunConfig:
    seed: int = 0
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    algorithm: AlgorithmConfig = field(default_factory=AlgorithmConfig)
    compression: CompressionConfig = field(default_factory=CompressionConfig)
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
        raise ConfigError(prefix or "config", f"expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}{name}"
        if name not in known:
            raise ConfigError(key, f"unknown key (known: {', '.join(sorted(known))})")
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value if value is not None else {}, f"{key}.")
        else:
            kwargs[name] = _coerce(key, value, hint)
    return cls(**kwargs)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=c`` → (["a", "b"], YAML value of c): ``--set train.lr=0.05``."""
    if "=" not in text:
        raise ConfigError(text, "an override must look like KEY=VALUE")
    key, raw = text.split("=", 1)
    path = key.strip().split(".")
    if not all(path):
        raise ConfigError(key, "empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as exc:
        raise ConfigError(key, f"value is not valid YAML: {raw!r}") from exc
    return path, value


def merge_overrides(raw: dict[str, Any], overrides: Iterable[str]) -> dict[str, Any]:
    for text in overrides:
        path, value = parse_override(text)
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


MAX_YAML_BYTES = 1 << 20  # a config or sweep file is a page of text; more is a mistake or an attack
MAX_YAML_VALUES = 100_000  # values after aliases are expanded: a few hundred in real files


def _expanded_values(node: yaml.Node, memo: dict[int, int], open_: set[int]) -> int:
    """How many values ``node`` becomes once every alias is copied out (aliases share nodes,
    so a few lines can stand for billions: the "billion laughs"); counted, not built. An
    alias inside the node it names expands for ever: more than the limit."""
    key = id(node)
    if key in open_:
        return MAX_YAML_VALUES + 1
    if key not in memo:
        open_.add(key)
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        memo[key] = 1 + sum(_expanded_values(c, memo, open_) for c in children)
        open_.discard(key)
    return memo[key]


def read_yaml(path: str | Path, what: str = "config file") -> Any:
    """Read a YAML file that must be small UTF-8 text and not expand beyond MAX_YAML_VALUES;
    every refusal is one ConfigError naming the file."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            data = f.read(MAX_YAML_BYTES + 1)
    except OSError as exc:
        raise ConfigError(str(path), f"cannot read {what} ({exc.strerror})") from exc
    if len(data) > MAX_YAML_BYTES:
        raise ConfigError(str(path), f"larger than {MAX_YAML_BYTES >> 20} MiB: not a {what}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start}): "
                                     f"not a {what}") from exc
    if "\x00" in text:
        raise ConfigError(str(path), f"holds NUL bytes: not a {what}")
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        if node is not None and _expanded_values(node, {}, set()) > MAX_YAML_VALUES:
            raise ConfigError(str(path), f"expands to more than {MAX_YAML_VALUES} values through aliases")
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(str(path), f"not valid YAML{where}") from exc
    except RecursionError as exc:
        raise ConfigError(str(path), "nested too deeply") from exc


def load(path: str | Path, overrides: Iterable[str] = ()) -> RunConfig:
    """Read a YAML config, apply ``--set`` overrides, and validate (without MPI)."""
    raw = read_yaml(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(str(path), f"expected a mapping of sections (data, model, train, ...), got a "
                                     f"{type(raw).__name__}")
    return from_dict(raw, overrides)


# -- validation ----------------------------------------------------------------------------
def _check(condition: bool, key: str, reason: str) -> None:
    if not condition:
        raise ConfigError(key, reason)


def _one_of(value: str, options: Iterable[str], key: str) -> None:
    options = tuple(options)
    _check(value in options, key, f"unknown value {value!r} (choose from {', '.join(options)})")


def _delegated(check: Any, *args: Any) -> None:
    """Run a module's own validation, whose ValueErrors read ``section.key: reason``."""
    try:
        check(*args)
    except ValueError as exc:
        key, _, reason = str(exc).partition(": ")
        raise ConfigError(key, reason or str(exc)) from exc


def validate(cfg: RunConfig) -> None:
    """Check values and their combinations; world size is checked by :func:`validate_world`."""
    from edgempi import algorithms, compression, models  # registries know their names; imported late
    from edgempi.data.partition import SCHEMES, scheme_parameters
    from edgempi.network import PRESETS

    _check(cfg.seed >= 0, "seed", "must be >= 0")
    _one_of(cfg.data.name, DATASETS, "data.name")
    _one_of(cfg.data.partition, SCHEMES, "data.partition")
    takes = scheme_parameters(cfg.data.partition)
    for key in cfg.data.partition_args():
        _check(key in takes, f"data.{key}", f"not used by partition {cfg.data.partition!r} "
               f"(it takes: {', '.join(takes) or 'nothing'})")
    _check(cfg.data.min_samples is None or cfg.data.min_samples > 0, "data.min_samples", "must be > 0")
    _check(cfg.data.synthetic_train > 0, "data.synthetic_train", "must be > 0")
    _check(cfg.data.synthetic_test > 0, "data.synthetic_test", "must be > 0")
    _one_of(cfg.model.name, models.names(), "model.name")
    if cfg.model.norm is not None:
        _one_of(cfg.model.norm, models.NORMS, "model.norm")

    t = cfg.train
    _check(t.epochs is None or t.steps is None, "train.steps", "set only one of train.epochs and train.steps")
    _check(t.epochs is None or t.epochs > 0, "train.epochs", "must be > 0")
    _check(t.steps is None or t.steps > 0, "train.steps", "must be > 0")
    _check(t.batch_size > 0, "train.batch_size", "must be > 0")
    _one_of(t.optimizer, OPTIMIZERS, "train.optimizer")
    _check(t.lr > 0, "train.lr", "must be > 0")
    _check(0 <= t.momentum < 1, "train.momentum", "must be in [0, 1)")
    _check(not t.nesterov or t.momentum > 0, "train.nesterov", "needs train.momentum > 0")
    _check(t.weight_decay >= 0, "train.weight_decay", "must be >= 0")
    _check(t.warmup_steps >= 0, "train.warmup_steps", "must be >= 0")
    _one_of(t.schedule, SCHEDULES, "train.schedule")
    _check(all(m > 0 for m in t.milestones), "train.milestones", "epochs must be > 0")
    _check(0 < t.gamma <= 1, "train.gamma", "must be in (0, 1]")
    _check(t.eval_every >= 0, "train.eval_every", "must be >= 0 (0 = once per epoch)")
    _check(t.log_every > 0, "train.log_every", "must be > 0")
    _check(t.threads >= 0, "train.threads", "must be >= 0 (0 = share the node's cores)")

    a = cfg.algorithm
    _one_of(a.name, algorithms.POLICIES, "algorithm.name")
    if a.name == "fedavg":
        _check((a.local_steps is None) != (a.local_epochs is None), "algorithm.local_steps",
               "fedavg needs exactly one of algorithm.local_steps and algorithm.local_epochs")
    _check(a.local_steps is None or a.local_steps > 0, "algorithm.local_steps", "must be > 0")
    _check(a.local_epochs is None or a.local_epochs > 0, "algorithm.local_epochs", "must be > 0")
    _check(a.name != "dynamic" or a.delta is not None, "algorithm.delta",
           "dynamic needs the divergence threshold algorithm.delta (e.g. 1.0 for LeNet-5)")
    _check(a.delta is None or a.delta >= 0, "algorithm.delta", "must be >= 0")
    _check(a.check_every > 0, "algorithm.check_every", "must be > 0")
    _check(not a.balancing or a.name == "dynamic", "algorithm.balancing", "is dynamic averaging's (Kamp et al.)")
    _check(not a.balancing or (a.participation == 1 and a.dropout == 0 and cfg.network.deadline_s is None),
           "algorithm.balancing", "is not combined with partial participation, dropouts or deadlines")
    _one_of(a.variant, FDA_VARIANTS, "algorithm.variant")
    _check(a.theta is None or a.theta >= 0, "algorithm.theta", "must be >= 0")
    _check(a.theta_per_param >= 0, "algorithm.theta_per_param", "must be >= 0")
    _check(a.sketch_depth > 0, "algorithm.sketch_depth", "must be > 0")
    _check(a.sketch_width > 0, "algorithm.sketch_width", "must be > 0")
    _one_of(a.eval_stats, ("average", "local"), "algorithm.eval_stats")
    _check(0 < a.participation <= 1, "algorithm.participation", "must be in (0, 1]")
    _check(0 <= a.dropout < 1, "algorithm.dropout", "must be in [0, 1)")
    _check(a.name in ("fedavg", "dynamic", "fda") or (a.participation == 1 and a.dropout == 0),
           "algorithm.participation", "partial participation and dropouts are for fedavg, dynamic and fda")
    _check(cfg.compression.name == "none" or (a.participation == 1 and a.dropout == 0), "algorithm.participation",
           "partial participation is not combined with compression")
    _check(not a.sync_bn or a.name == "large_batch", "algorithm.sync_bn", "only large_batch synchronises BatchNorm")
    _delegated(compression.validate, cfg.compression.__dict__)
    _check(cfg.compression.name == "none" or a.name in ("large_batch", "fedavg"), "compression.name",
           f"{a.name} does not compress (large_batch compresses gradients, fedavg updates)")

    n = cfg.network
    _one_of(n.preset, PRESETS, "network.preset")
    for key in ("up_mbps", "down_mbps"):
        value = getattr(n, key)
        _check(value is None or value > 0, f"network.{key}", "must be > 0")
    _check(n.latency_ms is None or n.latency_ms >= 0, "network.latency_ms", "must be >= 0")
    _check(n.spread >= 0, "network.spread", "must be >= 0 (sigma of a log-normal factor per device)")
    _check(n.compute_factor > 0, "network.compute_factor", "must be > 0")
    _check(n.compute_spread >= 0, "network.compute_spread", "must be >= 0")
    _check(n.step_ms is None or n.step_ms > 0, "network.step_ms", "must be > 0")
    _check(n.deadline_s is None or n.deadline_s > 0, "network.deadline_s", "must be > 0")
    _check(n.jitter >= 0, "network.jitter", "must be >= 0 (sigma of a log-normal factor per device and round)")
    _check(n.deadline_s is None or n.step_ms is not None, "network.deadline_s",
           "needs network.step_ms (modelled step times), so who is late is the same on every rank and every run")
    _check(n.deadline_s is None or (cfg.compression.name == "none" and a.name != "centralized" and not a.sync_bn),
           "network.deadline_s", "stragglers are dropped from dense exchanges only (not with compression, "
           "sync_bn or centralized)")
    par = cfg.parallel
    _one_of(par.mode, ("data", "spatial"), "parallel.mode")
    if par.mode == "spatial":
        _check(a.name == "large_batch", "parallel.mode", "spatial partitioning trains with algorithm.name=large_batch")
        _check(len(par.grid) == 2 and min(par.grid) >= 1, "parallel.grid", "must be [rows, columns] of tiles, >= 1")
        _check(par.layers >= 1, "parallel.layers", "must be >= 1")
        _check(par.groups == "auto" or isinstance(par.groups, list), "parallel.groups",
               "must be auto or a list of [first, last] layer ranges")
        _check(n.deadline_s is None, "network.deadline_s", "stragglers are not modelled in spatial mode")
        _check(n.jitter == 0, "network.jitter", "per-round variation is not modelled in spatial mode")
    _check(par.devices_per_rank >= 1, "parallel.devices_per_rank", "must be >= 1")
    if par.devices_per_rank > 1:
        _check(par.mode == "data" and a.name != "centralized" and cfg.compression.name == "none" and not a.sync_bn,
               "parallel.devices_per_rank", "several devices per rank are for data-parallel large_batch, fedavg, "
               "dynamic and fda without compression or sync_bn")
    _check(cfg.data.synthetic_side >= 8, "data.synthetic_side", "must be >= 8")
    _check(cfg.checkpoint.every_steps >= 0, "checkpoint.every_steps", "must be >= 0 (0 = off)")
    _check(cfg.checkpoint.every_steps % t.log_every == 0, "checkpoint.every_steps",
           f"must be a multiple of train.log_every ({t.log_every}): checkpoints are taken at /steps rows")
    _check(cfg.checkpoint.every_minutes >= 0, "checkpoint.every_minutes", "must be >= 0 (0 = off)")
    _check(cfg.output.name is None or (cfg.output.name and "/" not in cfg.output.name),
           "output.name", "must be a file name without a directory")


def validate_world(cfg: RunConfig, world_size: int) -> None:
    """Does the method fit the number of ranks the job was started with?"""
    if cfg.parallel.mode == "spatial":
        tiles = cfg.parallel.grid[0] * cfg.parallel.grid[1]
        _check(world_size % tiles == 0, "parallel.grid",
               f"{cfg.parallel.grid} needs a multiple of {tiles} ranks, the job has {world_size}")
    if cfg.algorithm.name == "centralized":
        _check(world_size == 1, "algorithm.name",
               f"centralized runs on one rank, but the job has {world_size} (drop mpiexec -n)")
