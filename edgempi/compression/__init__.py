"""Communication compression: compressors, error feedback, and the exchange that uses them.

``create(name, **kw)`` builds one compressor (no MPI). A training loop builds one
:class:`GradientExchange` per use with :meth:`GradientExchange.from_config` and calls
``exchange_mean_(flat, step, epoch)``. Each compressor registers itself with its settings
(``@COMPRESSORS.register``); a user's own is named ``package.module:Class``.
"""
from __future__ import annotations

from edgempi.registry import COMPRESSORS

from . import compressors, powersgd  # noqa: F401  (registration)
from .base import CompressionSettings, Compressor, Payload, payload_bytes
from .exchange import GradientExchange
from .memory import ErrorFeedback, MomentumCorrection, NoMemory
from .registry import create

__all__ = ["COMPRESSORS", "CompressionSettings", "Compressor", "ErrorFeedback", "GradientExchange",
           "MomentumCorrection", "NoMemory", "Payload", "create", "payload_bytes"]
