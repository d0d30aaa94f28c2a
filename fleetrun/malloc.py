"""A fixed mmap threshold for glibc's malloc, so memory freed by big outputs goes back to the system at once.

glibc serves blocks above M_MMAP_THRESHOLD (128 KiB) with their own mmap and unmaps them when freed. But each
time such a block is freed it raises the threshold to that block's size (up to 32 MiB), so after the first
1 MB output has been rendered, later ones come from the heap arenas of the worker threads, where freed space
between live objects is never returned: 200 hosts × 1 MB of output peaked at 99 MiB with one process, 78 MiB
with the threshold held at its default (bench/RESULTS.md, the output rows). Setting it explicitly turns the
adjustment off; nothing else about malloc changes. Elsewhere (musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # <malloc.h>
THRESHOLD = 128 * 1024  # glibc's own default, held fixed


def hold_mmap_threshold() -> bool:
    """Fix glibc's mmap threshold for this process (and the worker processes it forks); True if it could."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, THRESHOLD))
