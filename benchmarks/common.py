"""Shared helpers of the benchmark scripts: machine description, timing, JSON output.

Benchmarks are scripts, not tests: nothing here asserts a time. Every script writes one JSON
file (its raw numbers plus the machine and load it ran on) that run_all turns into RESULTS.md.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
BENCH_DIR = REPO_ROOT / "benchmarks"

PACKAGES = ("tensorflow-cpu", "tensorflow", "keras", "jax", "jaxlib", "torch", "torchvision",
            "numpy")


# OpenMP threads (torch) spin while they wait by default: on a machine whose cores are
# oversubscribed by other work that made torchvision 10x slower in our runs (5.5 s -> 0.5 s a
# call). Passive waiting is the setting for a shared machine; TF's thread pool is not OpenMP.
BENCH_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "TF_CPP_MIN_LOG_LEVEL": "2"}


def bench_env(**extra: str) -> dict[str, str]:
    """The environment of a benchmark subprocess: ours plus BENCH_ENV (unless already set)."""
    env = dict(os.environ)
    for key, value in BENCH_ENV.items():
        env.setdefault(key, value)
    env.update(extra)
    return env


def load() -> list[float]:
    """1/5/15 minute load averages (the machine is shared: a load above the core count
    means the numbers are slower than an idle machine would give)."""
    return [round(v, 2) for v in os.getloadavg()]


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() otherwise)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> list[str]:
    """The SIMD features that matter for float32 kernels (AVX2, AVX-512, AMX)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set()
    for line in text.splitlines():
        if line.startswith("flags"):
            flags = set(line.split(":", 1)[1].split())
            break
    wanted = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16")
    return [f for f in wanted if f in flags]


def memory_gib() -> float:
    """Total memory of the machine in GiB."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return 0.0


def versions() -> dict[str, str]:
    """Installed versions of the packages whose speed is measured."""
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def machine() -> dict[str, Any]:
    """Everything RESULTS.md says about where the numbers come from."""
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "flags": cpu_flags(),
        "memory_gib": memory_gib(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": versions(),
        "load": load(),
        "env": {key: os.environ.get(key) for key in BENCH_ENV},
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
    }


def median(values: list[float]) -> float:
    """Median of a list of times (the benchmarks' summary statistic)."""
    return float(statistics.median(values)) if values else float("nan")


def time_call(fn: Callable[[], Any]) -> float:
    """Wall-clock seconds of one call of fn."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (temp file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_plain))
    tmp.replace(path)
    return path


def _plain(value: Any) -> Any:
    """numpy scalars/arrays -> Python values for json.dumps."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


def torchvision_available() -> bool:
    """True when torch and torchvision import (the .venv-bench environment)."""
    import importlib.util

    return all(importlib.util.find_spec(m) is not None for m in ("torch", "torchvision"))
