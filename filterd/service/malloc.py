"""glibc's malloc told to give a big message's memory back as soon as it is freed.

A message of a few megabytes lives in one buffer (smtp/data.py) that glibc serves with
mmap and unmaps on free, but only until the first such free: glibc then raises its mmap
threshold to that size (up to 32 MB), and later buffers of that size come from the heap,
where growing one copies it and freeing one seldom shrinks the process. Four 8 MB messages
at once then peaked 20 MB higher (bench.memory, docs/performance.md). Fixing the threshold
with mallopt keeps it where it is; it is what MALLOC_MMAP_THRESHOLD_ in the environment does.
A no-op where the C library is not glibc, and when the environment already sets it.
"""

from __future__ import annotations

import ctypes
import logging
import os

log = logging.getLogger(__name__)

M_MMAP_THRESHOLD = -3           # glibc's <malloc.h>
MMAP_THRESHOLD = 256 * 1024     # bytes; a fixed value also stops glibc moving it


def return_big_buffers() -> bool:
    """Fix glibc's mmap threshold for this process; True if it was set here."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):   # not glibc (musl, macOS): leave malloc alone
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    if mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) != 1:
        log.debug("mallopt(M_MMAP_THRESHOLD) refused")
        return False
    return True
