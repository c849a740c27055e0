"""spine.memory: freed memory goes back to the system."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from spine import memory


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc_trim")
def test_trim_returns_freed_small_blocks_to_the_system():
    # 200k arrays of 1 KiB live inside malloc's arenas (below the mmap threshold); after
    # they are freed, the pages stay resident until malloc_trim hands them back.
    blocks = [np.ones(128) for _ in range(200_000)]
    grown = rss_mib()
    del blocks
    before_trim = rss_mib()
    assert memory.release_freed_memory()
    after_trim = rss_mib()
    assert before_trim - after_trim > 0.5 * (grown - after_trim) > 50


def test_one_trimmer_thread_per_process():
    first = memory.start_trimmer(interval_s=3600)
    assert first.daemon and first.is_alive()
    assert memory.start_trimmer(interval_s=3600) is first


# Four threads, alive at once (one malloc arena each, as Streamlit's session threads), each
# hold 40 MiB in 8 MiB numpy arrays and free them, after a freed 30 MiB mmapped block has
# made glibc raise its mmap threshold (to 30 MiB) and trim threshold (to 60 MiB). Prints the
# MiB still resident after malloc_trim.
THREAD_ARENAS = textwrap.dedent("""
    import sys, threading
    import numpy as np
    from spine import memory

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    if sys.argv[1] == "fixed":
        assert memory.fix_malloc_thresholds()
    big = np.ones(30 * 2**20 // 8)
    del big
    barrier = threading.Barrier(4)

    def work():
        blocks = [np.ones(8 * 2**20 // 8) for _ in range(5)]
        barrier.wait()
        del blocks

    start = rss_mib()
    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    memory.release_freed_memory()
    print(rss_mib() - start)
""")


def retained_mib(mode: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", THREAD_ARENAS, mode], capture_output=True, text=True, check=True
    )
    return float(out.stdout.split()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_fixed_thresholds_return_thread_arena_memory_after_free():
    # glibc's default (dynamic thresholds): the free tops of the thread arenas stay resident
    # and malloc_trim does not trim them (measured 88 MiB of the 160 MiB).
    assert retained_mib("dynamic") > 30
    # Thresholds held at 128 KiB: the arrays are mmapped and unmapped when freed.
    assert retained_mib("fixed") < 8


def test_fix_malloc_thresholds_is_a_no_op_without_glibc(monkeypatch):
    monkeypatch.setattr(memory.ctypes.util, "find_library", lambda name: None)
    assert memory.fix_malloc_thresholds() is False
    assert memory.release_freed_memory() is False
