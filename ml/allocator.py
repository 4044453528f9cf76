"""Keep TensorFlow's freed working memory in the process for the next photo (glibc only).

Why: glibc serves every allocation over its mmap threshold (128 KB at first; raised only when
such a block is freed) straight from the kernel and returns it on free, so each photo's large
MTCNN buffers come back as fresh pages the kernel must fault in and zero. Fixing the threshold
at glibc's own ceiling for its adaptive one (32 MB on 64-bit) took a 640x480 photo's detection
from about 32 to 26 ms p50 on the 2-core CPU (docs/benchmarks.md, "Memory thresholds").
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt parameter numbers, from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20  # blocks this large or larger still come from (and go to) the kernel
TRIM_THRESHOLD = 64 * 2**20  # free memory above this at the heap's top goes back to the kernel


def reuse_freed_memory() -> bool:
    """Set glibc's thresholds for this process; False (and nothing changed) elsewhere."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl), or no libc found
        log.debug("mallopt is not available: memory thresholds left as they are")
        return False
    done = mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    return bool(done)
