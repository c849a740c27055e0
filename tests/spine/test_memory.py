"""spine.memory: freed memory goes back to the system."""

from __future__ import annotations

import sys

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
