"""Process memory tuning that has to happen inside the gateway.

Image requests allocate a few large buffers each (the base64 text, the decoded bytes, Pillow's
pixels, the re-encoded PNG). glibc serves blocks over its mmap threshold with mmap and returns
them to the OS on free, but it *raises* that threshold each time such a block is freed, so later
ones come from the heap, which then keeps its high-water mark: RSS steps up under a burst of
images and stays there (the soak's leak probe saw +10 MiB over 4,000 image requests, flat for
text). A fixed threshold keeps large buffers on mmap; measured in ``docs/benchmarks.md``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

log = logging.getLogger("thoughtguard")

_M_MMAP_THRESHOLD = -3  # from glibc's <malloc.h>


def fix_mmap_threshold(nbytes: int) -> bool:
    """Pin glibc's mmap threshold at ``nbytes`` (0: leave it); False where there is no glibc."""
    if nbytes <= 0 or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    ok = bool(mallopt(_M_MMAP_THRESHOLD, nbytes))
    if not ok:
        log.warning("mallopt(M_MMAP_THRESHOLD, %d) was refused; glibc keeps its sliding threshold", nbytes)
    return ok
