"""Synchronous data-parallel SGD: every step, the devices' gradients averaged by Allreduce, in
buckets started while backward runs (or by the configured compressed exchange, with its error
feedback)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgempi.algorithms.base import Capabilities, Context, MethodSettings, Policy
from edgempi.algorithms.buckets import GradientBuckets
from edgempi.algorithms.compressed import exchange_state, load_exchange_state, make_exchange
from edgempi.registry import METHODS
from edgempi.settings import exclusive, require

if TYPE_CHECKING:
    import torch

    from edgempi.comm import Comm
    from edgempi.config import RunConfig


@dataclass
class LargeBatchSettings(MethodSettings):
    """``sync_bn``: BatchNorm statistics over the global batch (reduced in forward and backward).
    ``bucket_mb``: the size of the gradient buckets whose Allreduce starts during backward;
    0: one Allreduce after backward. The mean is the same bit for bit either way."""

    sync_bn: bool = exclusive(False, "only large_batch synchronises BatchNorm")
    """BatchNorm statistics over the global batch (reduced in forward and backward)."""
    bucket_mb: float = exclusive(4.0, "only large_batch exchanges gradients in buckets")
    """MiB per gradient bucket whose Allreduce starts during backward (0: one Allreduce after backward)."""

    def check(self, cfg: RunConfig) -> None:
        super().check(cfg)
        require(self.bucket_mb >= 0, "algorithm.bucket_mb", f"must be >= 0 (0: one Allreduce), got {self.bucket_mb}")
        # SyncBN's collectives run inside backward, over ranks: one device per rank, all of them in every step.
        require(not self.sync_bn or cfg.parallel.devices_per_rank == 1, "parallel.devices_per_rank",
                "several devices per rank are not combined with sync_bn (it reduces statistics over ranks)")
        require(not self.sync_bn or cfg.network.deadline_s is None, "network.deadline_s",
                "stragglers are not dropped with sync_bn (its collectives in backward need every rank)")


@METHODS.register("large_batch")
class LargeBatch(Policy):
    """Devices that miss the round's deadline (``network.deadline_s``) are left out of the mean;
    if none made it, the step is skipped.

    The uncompressed exchange of one device per rank that every device joins (no deadline, no
    device spanning several ranks, no SyncBN, whose own collectives run in backward) goes in
    buckets during backward (:mod:`edgempi.algorithms.buckets`)."""
    paper = "Goyal et al., Accurate, Large Minibatch SGD: Training ImageNet in 1 Hour, 2017, arXiv:1706.02677"

    Settings = LargeBatchSettings
    capabilities = Capabilities(exchanges_gradients=True, compresses="gradients", rank_groups=True)

    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self.exchange = make_exchange(ctx)
        self.buckets = GradientBuckets(ctx.flat, ctx.comm, self.settings.bucket_mb) if self.overlaps(ctx) else None

    def overlaps(self, ctx: Context) -> bool:
        """Can the gradient's Allreduce start during backward? Not when who reports is known only
        after it (a deadline), nor with a row per device, a compressor, the reduction within a
        device's group of ranks, or SyncBN's collectives inside backward. A gradient that fits one
        bucket could only start at the end of backward: the blocking Allreduce is then quicker."""
        no_deadline = ctx.clock is None or ctx.clock.deadline is None
        several = ctx.flat.grads.numel() * ctx.flat.grads.element_size() > self.settings.bucket_mb * 2**20
        return (self.settings.bucket_mb > 0 and several and self.exchange is None and ctx.bank.count == 1
                and no_deadline and ctx.group_reduce is None and not self.settings.sync_bn)

    @classmethod
    def prepare_model(cls, settings: LargeBatchSettings, model: torch.nn.Module,  # type: ignore[override]
                      comm: Comm) -> torch.nn.Module:
        if settings.sync_bn:
            from edgempi.models.syncbn import convert_sync_bn  # defines a torch.nn.Module: needs torch

            convert_sync_bn(model, comm)
        return model

    def after_backward(self, step: int) -> bool:
        if self.ctx.group_reduce is not None:  # a device spans several ranks: their parts make its gradient
            self.ctx.group_reduce(self.ctx.flat.grads)
            if self.ctx.comm.size == 1:  # one device, no peers: nothing left to average
                return True
        if self.buckets is not None:
            return self.buckets.finish() > 0
        if self.exchange is None:
            return self.ctx.average_(self.ctx.bank.grads) > 0
        self.exchange.exchange_mean_(self.ctx.flat.grads, step, step / self.ctx.steps_per_epoch)
        return True

    def state_dict(self) -> dict[str, Any]:
        return {"exchange": exchange_state(self.exchange)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        load_exchange_state(self.exchange, state["exchange"])
