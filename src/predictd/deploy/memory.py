"""The server's memory allocator told to give large blocks back to the system as soon as they are freed.

glibc's malloc serves a block of 128 KiB or more with an mmap of its own, and unmaps it when it is freed;
but the first time such a block is freed it raises that threshold to the block's size (up to 32 MiB), so
that later large blocks (a 1 MB input, its 2 MB status body) come from the heap, which is given back only
from its top and so, in practice, rarely. A process that handled megabyte predictions then keeps their
memory long after its caches let go of them. Measured (tests/integration/test_memory_bounds.py, 60 echo
predictions of 1 MB in and out through a 48 MiB cache budget): the API process grew by 218 MiB with the
moving threshold, by 50 MiB with it fixed. The cost is an mmap and munmap per large block, which only large
requests and answers make.
"""

from __future__ import annotations

import ctypes
import sys

M_MMAP_THRESHOLD = -3  # glibc's <malloc.h>
LARGE_BLOCK_BYTES = 128 * 1024  # glibc's own initial threshold, kept


def give_back_large_blocks() -> bool:
    """Fix the allocator's mmap threshold at ``LARGE_BLOCK_BYTES``; False where there is no glibc to tell
    (another C library, another system): nothing is changed there."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, LARGE_BLOCK_BYTES))
