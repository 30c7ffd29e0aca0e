"""A compressed exchange as a policy uses it: built from the config, with checkpointable state."""
from __future__ import annotations

from typing import Any

import numpy as np

from edgempi.algorithms.base import Context
from edgempi.compression import GradientExchange
from edgempi.util.lazy import torch


def make_exchange(ctx: Context, with_buffers: bool = False, dense_downlink: bool = False) -> GradientExchange | None:
    """The run's compressed exchange, or None when ``compression.name`` is ``none``."""
    cfg = ctx.cfg
    if cfg.compression.name == "none":
        return None
    shapes = ctx.flat.shapes + (ctx.flat.buffer_shapes if with_buffers else [])
    momentum = cfg.train.momentum if cfg.train.optimizer == "sgd" else 0.0
    exchange = GradientExchange.from_config(cfg.compression, ctx.comm, shapes, seed=cfg.seed,
                                            momentum=momentum, dense_downlink=dense_downlink)
    if exchange.owns_momentum:  # DGC's momentum correction replaces the optimizer's
        for group in ctx.optimizer.param_groups:
            group["momentum"] = 0.0
    return exchange


def _holders(exchange: GradientExchange) -> list[object]:
    return [exchange.memory, exchange.compressor]


def exchange_state(exchange: GradientExchange | None) -> list[dict[str, Any]]:
    """Error-feedback memories, warm-start factors and random streams, for a checkpoint."""
    if exchange is None:
        return []
    return [{k: _snapshot(v) for k, v in vars(holder).items() if isinstance(v, _stateful())}
            for holder in _holders(exchange)]


def _stateful() -> tuple[type, ...]:
    return (torch.Tensor, torch.Generator, np.random.Generator)


def _snapshot(value: Any) -> Any:  # one of _stateful()
    if isinstance(value, torch.Tensor):
        return value.clone()
    if isinstance(value, torch.Generator):
        return value.get_state()
    return value.bit_generator.state


def load_exchange_state(exchange: GradientExchange | None, state: list[dict[str, Any]]) -> None:
    if exchange is None:
        return
    for holder, saved in zip(_holders(exchange), state):
        for key, value in saved.items():
            current = getattr(holder, key)
            if isinstance(current, torch.Generator):
                current.set_state(value)
            elif isinstance(current, np.random.Generator):
                current.bit_generator.state = value
            else:
                current.copy_(value)
