"""Communication compression: compressors, error feedback, and the exchange that uses them.

``create(name, **kw)`` builds one compressor (no MPI). A training loop builds one
:class:`GradientExchange` per use with :meth:`GradientExchange.from_config` and calls
``exchange_mean_(flat, step, epoch)``.
"""
from __future__ import annotations

from .base import Compressor, Payload, payload_bytes
from .exchange import GradientExchange, build_compressor, validate
from .memory import ErrorFeedback, MomentumCorrection, NoMemory
from .registry import COMPRESSORS, create

__all__ = ["COMPRESSORS", "Compressor", "ErrorFeedback", "GradientExchange", "MomentumCorrection",
           "NoMemory", "Payload", "build_compressor", "create", "payload_bytes", "validate"]

