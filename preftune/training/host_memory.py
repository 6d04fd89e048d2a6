"""Returning freed CPU memory to the system. glibc serves large allocations with mmap (returned on free) until a large
block is freed, after which it raises its mmap threshold (up to 32 MiB) and serves them from the heap, where freed
activations stay resident and fragment. A fixed threshold keeps every large tensor in its own mapping: less resident
memory, at the cost of a page fault on each first touch (bench/results/peak_memory_hh.md)."""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

logger = logging.getLogger("preftune.training")
M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter (malloc.h)


def fix_mmap_threshold(kib: int | None) -> bool:
    """Fix glibc's mmap threshold at `kib` KiB (None: leave glibc's default); True when applied (Linux with glibc)."""
    if kib is None:
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, Windows, musl without mallopt)
    return bool(mallopt(M_MMAP_THRESHOLD, kib * 1024))
