"""Freed tensor memory kept by the process for the next step, not handed back to the kernel.

glibc serves every allocation above its mmap threshold (128 KiB at start, raised as large blocks
are freed, at most 32 MiB) with fresh pages from the kernel, and gives them back when the block
is freed; memory at the top of the heap above the trim threshold goes back too. A training step
allocates and frees the same activations and gradients every time, so each step faulted them
all in again: ~4,000 page faults (16 MB) per batched LeNet-5 group step, with every page zeroed
by the kernel. Fixing the threshold at glibc's maximum and trimming only above 1 GiB keeps that
memory in the process after the first step; the peak resident memory is what it was.
"""
from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # mallopt's parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's largest on 64-bit: larger blocks are mapped still
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Keep freed blocks of up to 32 MiB for reuse; False where the C library is not glibc
    (macOS, musl), which then allocates as before."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
