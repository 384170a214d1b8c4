"""Keep the memory a training step frees mapped for the next step (glibc's malloc).

Every step allocates and frees the same large tensors (activations, gradients: 0.1-10 MB
at batch 128-1024). glibc serves blocks that large with mmap, and trims free memory at the
top of its heap, so each step faults its pages back in: measured 400-1,000 minor page
faults a step at batch 128 and ~4,000 at 1024 on the 2-core VM of the benchmarks, about
20% of the step (1.2-1.3x faster without, HyperGrid 8x8, 2 x 256 MLPs). Raising the two
thresholds keeps those pages; the cost is that the process holds on to up to
TRIM_THRESHOLD bytes of freed memory.
"""

from __future__ import annotations

import ctypes
import platform

# mallopt parameters (malloc.h) and their values here: blocks below MMAP_THRESHOLD come
# from the heap (32 MiB is glibc's largest), and the heap keeps up to TRIM_THRESHOLD free.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 32 * 2**20
TRIM_THRESHOLD = 1 * 2**30


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds for this process (once is enough); whether it
    applied (False: not glibc, e.g. macOS or musl)."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    applied = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)
    return bool(applied and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
