"""Give memory freed by finished work back to the operating system (a long-lived server).

Measured on the page (benchmarks/RESULTS.md, "Memory"): after many sessions closed, the
server's memory in use by malloc was back at its start, yet ~250 MiB more stayed resident,
and malloc_trim did not return it. The cause is glibc's *dynamic* mmap threshold: when a
large block that was mmapped is freed (a slice array, a batch), glibc raises the threshold
to that size (up to 32 MiB) and the trim threshold to twice it, so later multi-MiB numpy
arrays come from the heap of the thread's malloc arena instead of their own mapping. Every
Streamlit session runs in its own thread, so up to 8 arenas per core fill that way; when
the arrays are freed, the free top of each thread arena's heap (below the raised trim
threshold) stays resident, and malloc_trim(0) never trims the top of a thread arena.

`fix_malloc_thresholds` holds both thresholds at glibc's starting value (128 KiB), which
also turns the dynamic adjustment off: large blocks are mmapped and unmapped when freed,
and free heap tops beyond 128 KiB are trimmed. `release_freed_memory` (malloc_trim(0))
returns free pages inside the arenas; `start_trimmer` runs it every `interval_s` seconds in
one daemon thread per process. Elsewhere than glibc (macOS, musl) all are no-ops.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import threading
import time
from typing import Any

_lock = threading.Lock()
_trimmer: threading.Thread | None = None

# mallopt parameters (glibc malloc.h) and glibc's starting value of both thresholds.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
FIXED_THRESHOLD = 128 * 1024


def _libc_function(name: str) -> Any:
    """The C library's function `name`, None where there is no such function (not glibc)."""
    path = ctypes.util.find_library("c")
    if path is None:
        return None
    try:
        return getattr(ctypes.CDLL(path), name)
    except (OSError, AttributeError):
        return None


def fix_malloc_thresholds(threshold: int = FIXED_THRESHOLD) -> bool:
    """Hold glibc's mmap and trim thresholds at `threshold` bytes (turning off their dynamic
    raise, see the module docstring); True when glibc took both."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    took_mmap = mallopt(M_MMAP_THRESHOLD, int(threshold))
    took_trim = mallopt(M_TRIM_THRESHOLD, int(threshold))
    return bool(took_mmap and took_trim)


def release_freed_memory() -> bool:
    """malloc_trim(0) where glibc provides it; True when it ran."""
    trim = _libc_function("malloc_trim")
    if trim is None:
        return False
    trim.argtypes, trim.restype = [ctypes.c_size_t], ctypes.c_int
    trim(0)
    return True


def start_trimmer(interval_s: float = 30.0) -> threading.Thread:
    """Start (once per process) a daemon thread calling release_freed_memory periodically."""
    global _trimmer
    with _lock:
        if _trimmer is None or not _trimmer.is_alive():

            def loop() -> None:
                while release_freed_memory():
                    time.sleep(interval_s)

            _trimmer = threading.Thread(target=loop, name="spineseg-malloc-trim", daemon=True)
            _trimmer.start()
        return _trimmer
