"""The devices of one rank taking their local steps together (``parallel.batched``).

The loop (:class:`edgempi.devices.DeviceBank`) trains a rank's devices one after another; here a
group of them runs as one computation on their stacked rows: one grouped convolution per
convolution layer (the devices side by side as channel groups, channels-last), one batched
matrix product per linear layer, and the configured torch optimizer applied once to the group's
stacked weights, gradients and optimizer rows. Elementwise updates give each row what the loop
gives it; forward and backward sum in another order (float rounding only).

``torch.func.vmap`` over ``functional_call`` computes the same, but its convolution rule (grouped,
channels-first) measured slower on CPU than the loop itself, so the stacked layers are spelled
out for the layers a plain stack of them uses (``LAYERS``). Convolutions as im2col and one
batched matrix product per device measured 2-3x slower than the grouped convolution (LeNet-5's
shapes, 25 or 150 by 6 or 16, are poor matrix products, and the patches are copied). Anything
else keeps the loop: :func:`why_not` says why, once, and ``parallel.batched: on`` is refused
where it cannot be.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edgempi.data.loader import Batches
from edgempi.devices import DeviceBank, WorkObserver
from edgempi.flat import FlatModel

LAYERS = (nn.Conv2d, nn.Linear, nn.ReLU, nn.Tanh, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten, nn.Identity)
GROUP = 16  # devices per batched computation: for LeNet-5 as fast as 32 with half the activations; 64 is slower


def model_reason(model: nn.Module) -> str | None:
    """Why ``model``'s devices cannot be stacked (None: they can)."""
    if not isinstance(model, nn.Sequential):
        return f"{type(model).__name__} is not a plain stack of layers"
    if any(b.is_floating_point() for b in model.buffers()):
        return "the model keeps running statistics (BatchNorm) that every step updates"
    if not all(p.requires_grad for p in model.parameters()):
        return "the model has frozen parameters"
    for layer in model:
        if not isinstance(layer, LAYERS):
            return f"the model has a {type(layer).__name__} layer (batched: {', '.join(c.__name__ for c in LAYERS)})"
        if isinstance(layer, nn.Conv2d) and layer.padding_mode != "zeros":
            return f"a convolution pads with {layer.padding_mode!r}"
        if isinstance(layer, nn.Flatten) and (layer.start_dim, layer.end_dim) != (1, -1):
            return "a Flatten keeps more than the batch dimension"
    return None


def why_not(cfg: Any, model: nn.Module | None) -> str | None:
    """Why this run's devices train one after another (None: they are batched). ``cfg`` is the
    whole RunConfig; ``model`` None means the model could not be built to look at."""
    if cfg.parallel.batched == "off":
        return "parallel.batched is off"
    if cfg.parallel.devices_per_rank == 1:
        return "one device per rank"
    if cfg.algorithm.capabilities.device_hook:
        return f"{cfg.algorithm.name} changes each device's gradient on its own (before_device_step)"
    if model is None:
        return f"model {cfg.model.name!r} could not be built to be checked"
    return model_reason(model)


def pool_before_relu(layers: list[nn.Module]) -> list[nn.Module]:
    """The layers with each ReLU followed by a max-pool swapped with it: the two commute
    (a maximum of rectified values is the rectified maximum), and rectifying after pooling
    touches a quarter of the values (2×2 pools), forward and backward."""
    layers = list(layers)
    for i in range(len(layers) - 1):
        if isinstance(layers[i], nn.ReLU) and isinstance(layers[i + 1], nn.MaxPool2d):
            layers[i], layers[i + 1] = layers[i + 1], layers[i]
    return layers


class Stacked:
    """The forward pass of a plain stack of layers for D devices at once: images (D, B, C, H, W)
    and rows (D, P) of parameters in :class:`FlatModel` order → logits (D, B, classes)."""

    def __init__(self, model: nn.Sequential) -> None:
        self.layers = pool_before_relu(list(model))
        self.shapes = [tuple(p.shape) for p in model.parameters()]
        self.sizes = [p.numel() for p in model.parameters()]

    def __call__(self, rows: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        return self.features(rows, images).transpose(1, 2)

    def features(self, rows: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
        """The stack's output with the features before the batch, (D, classes, B): each linear
        layer is then W @ x, whose weight gradient comes out in the weight's own layout (x @ Wᵀ
        gives Wᵀ's, copied over to the rows in backward)."""
        devices, batch = images.shape[:2]
        params = iter(part.reshape(devices, *shape) for part, shape in
                      zip(torch.split(rows, self.sizes, dim=1), self.shapes))
        # Feature maps as (B, D·C, H, W): device d's channels are the d-th block of C.
        x = images.transpose(0, 1).reshape(batch, -1, *images.shape[3:])
        x = x.contiguous(memory_format=torch.channels_last)
        for layer in self.layers:
            if isinstance(layer, nn.Conv2d):
                weight, bias = next(params), next(params) if layer.bias is not None else None
                x = F.conv2d(x, weight.reshape(-1, *weight.shape[2:]), None if bias is None else bias.reshape(-1),
                             layer.stride, layer.padding, layer.dilation, devices * layer.groups)
            elif isinstance(layer, nn.Linear):
                weight = next(params)
                x = torch.baddbmm(next(params).unsqueeze(2), weight, x) if layer.bias is not None else weight @ x
            elif isinstance(layer, nn.Flatten):  # (B, D·C, H, W) → (D, C·H·W, B), each device's in C, H, W order
                x = x.reshape(batch, devices, -1).permute(1, 2, 0)
            elif isinstance(layer, nn.MaxPool2d):
                x = F.max_pool2d(x, layer.kernel_size, layer.stride, layer.padding, layer.dilation, layer.ceil_mode)
            elif isinstance(layer, nn.AvgPool2d):
                x = F.avg_pool2d(x, layer.kernel_size, layer.stride, layer.padding, layer.ceil_mode,
                                 layer.count_include_pad, layer.divisor_override)
            elif isinstance(layer, nn.ReLU):
                x = F.relu(x)
            elif isinstance(layer, nn.Tanh):
                x = torch.tanh(x)
        return x

    def losses(self, rows: torch.Tensor, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Each device's mean cross-entropy over its batch, (D,)."""
        return F.cross_entropy(self.features(rows, images), labels, reduction="none").mean(1)


def equal_runs(sizes: list[int]) -> list[tuple[int, int]]:
    """(start, stop) of each run of neighbours with equal batch ``sizes``: what one stacked
    computation can take. Sizes differ only where a cohort's member holds less than a batch."""
    cuts = [0, *(i for i in range(1, len(sizes)) if sizes[i] != sizes[i - 1]), len(sizes)]
    return list(zip(cuts[:-1], cuts[1:]))


class BatchedSteps:
    """A rank's devices' local steps in equal groups of at most ``GROUP``: what
    :class:`edgempi.train.EachDevice` does device by device, with the same batches, optimizer
    rows (:class:`DeviceBank`'s, so checkpoints are the loop's) and work told to ``observer``
    (each device of a group has an equal share of the group's time). ``exchanges_gradients``:
    a device's gradient is left in ``bank.grads`` for the exchange, and :meth:`step_all` steps."""

    def __init__(self, flat: FlatModel, bank: DeviceBank, optimizer: torch.optim.Optimizer,
                 loaders: Sequence[Batches], observer: WorkObserver, exchanges_gradients: bool,
                 group: int = GROUP) -> None:
        self.stacked = Stacked(flat.model)  # type: ignore[arg-type]
        self.bank, self.optimizer, self.loaders, self.observer = bank, optimizer, loaders, observer
        self.exchanges_gradients, self.group = exchanges_gradients, group

    def steps(self, step: int) -> float:
        """Forward and backward of every device, and its optimizer step unless its gradient is
        exchanged first. Returns the sum of the losses."""
        loss_sum = 0.0
        count = self.bank.count
        groups = -(-count // self.group)  # of equal sizes, so no group of a few devices pays a group's overheads
        for group in range(groups):
            devices = range(group * count // groups, (group + 1) * count // groups)
            with self.observer.local_steps(devices):
                batches = [self.loaders[d].batch(step) for d in devices]
                for start, end in equal_runs([len(y) for _, y in batches]):
                    rows_of = slice(devices.start + start, devices.start + end)
                    images, labels = map(torch.stack, zip(*batches[start:end]))
                    rows = self.bank.params[rows_of].detach().requires_grad_()
                    losses = self.stacked.losses(rows, images, labels)
                    (grads,) = torch.autograd.grad(losses.sum(), rows)
                    if self.exchanges_gradients:
                        self.bank.grads[rows_of].copy_(grads)
                    else:
                        self.optimize(rows_of, grads)
                    loss_sum = sum(losses.tolist(), loss_sum)  # in device order, as the loop adds them
        return loss_sum

    def step_all(self) -> None:
        """Every device's optimizer step with its exchanged gradient in ``bank.grads``."""
        with self.observer.device_work(range(self.bank.count)):
            self.optimize(slice(0, self.bank.count), self.bank.grads)

    def optimize(self, devices: slice, grads: torch.Tensor) -> None:
        """One step of the configured optimizer (class and current settings) on the stacked
        rows of ``devices``, with their optimizer state as views of the bank's rows."""
        bank, settings = self.bank, dict(self.optimizer.param_groups[0])
        del settings["params"]
        param = bank.params[devices]
        param.grad = grads
        optimizer = type(self.optimizer)([param], **settings)
        stepped = bank.stepped[devices]
        if stepped.all():  # the devices of a group always step together: all or none have state
            state = {key: rows[devices] for key, rows in bank.optimizer_rows.items()}
            if "step" in state:  # Adam's step count, one number for the group (they step together)
                state["step"] = state["step"][0].clone()
            optimizer.state[param] = state
        optimizer.step()
        param.grad = None
        stepped_state = optimizer.state.get(param)
        if not stepped_state:  # plain SGD keeps no state: the devices stay "not stepped", as in the loop
            return
        for key, value in stepped_state.items():
            rows = bank.optimizer_rows.get(key)
            if rows is None:
                shape = value.shape if value.dim() == 0 else value.shape[1:]
                rows = bank.optimizer_rows[key] = torch.zeros(bank.count, *shape, dtype=value.dtype)
            if value.dim() == 0 or value.data_ptr() != rows[devices].data_ptr():
                rows[devices].copy_(value)
        bank.stepped[devices] = True
