"""torch's SGD and Adam, without the import of ``torch._dynamo`` their methods trigger.

Every ``torch.optim.Optimizer`` method is wrapped so that it can be skipped by the compiler
(``torch._disable_dynamo``, and ``step``'s ``_use_grad_for_differentiable``), and those
wrappers import ``torch._dynamo`` on their first call, even when nothing is compiled: 1.4–3.5 s
of every rank's start-up on these machines, as long as importing torch itself. edgempi never
compiles, so its optimizers are torch's own classes with each such method replaced by the
function the wrapper holds (its ``__wrapped__``): the same update, state and ``state_dict``,
bit for bit. If a torch release wraps differently, ``inspect.unwrap`` finds nothing to strip
and the method is torch's, wrapper and import included: slower to start, never different.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

Method = Callable[..., Any]


def _eager_step(step: Method) -> Method:
    """An optimizer's ``step`` without its wrappers, under ``no_grad`` as the wrapper ran it
    (``differentiable`` is never set here)."""
    return torch.no_grad()(inspect.unwrap(step))


class _Eager:
    """The :class:`torch.optim.Optimizer` methods edgempi calls, unwrapped."""

    add_param_group = inspect.unwrap(torch.optim.Optimizer.add_param_group)
    zero_grad = inspect.unwrap(torch.optim.Optimizer.zero_grad)
    state_dict = inspect.unwrap(torch.optim.Optimizer.state_dict)
    load_state_dict = inspect.unwrap(torch.optim.Optimizer.load_state_dict)


class SGD(_Eager, torch.optim.SGD):
    """:class:`torch.optim.SGD`, eager only."""

    step = _eager_step(torch.optim.SGD.step)


class Adam(_Eager, torch.optim.Adam):
    """:class:`torch.optim.Adam`, eager only."""

    step = _eager_step(torch.optim.Adam.step)
