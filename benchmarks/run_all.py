"""Run every benchmark and write benchmarks/RESULTS.md plus the raw JSON (what `make bench` runs).

Each benchmark runs in its own subprocess (a clean process per measurement: backends are
fixed at import and peak memory is per process). Numbers are medians of alternating runs;
the load average is recorded because the machine may be shared.

    python -m benchmarks.run_all [--quick] [--out DIR] [--backends tensorflow,jax,torch]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks import common
from benchmarks.report import render

STEPS = ("floor", "latency", "isolated", "end_to_end")


def run_step(step: str, out: Path, quick: bool, extra: list[str], timeout: float | None) -> dict:
    """python -m benchmarks.<step> --json <out> in a subprocess; its status and duration."""
    cmd = [sys.executable, "-m", f"benchmarks.{step}", "--json", str(out), *extra]
    if quick:
        cmd.append("--quick")
    env = common.bench_env()
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=common.REPO_ROOT, env=env, capture_output=True,
                              text=True, timeout=timeout)
        status = {"returncode": proc.returncode, "stderr_tail": proc.stderr[-1500:]}
    except subprocess.TimeoutExpired:
        status = {"returncode": None, "error": f"timed out after {timeout} s"}
    status["seconds"] = time.perf_counter() - start
    status["command"] = " ".join(shlex.quote(c) for c in cmd[1:])
    return status


def available_backends(requested: list[str]) -> tuple[list[str], list[str]]:
    """The requested Keras backends that can run here, and notes on those skipped."""
    import importlib.util

    modules = {"tensorflow": "tensorflow", "jax": "jax", "torch": "torch"}
    kept, notes = [], []
    for backend in requested:
        if importlib.util.find_spec(modules[backend]) is None:
            notes.append(f"{backend} backend skipped: {modules[backend]} is not installed "
                         f"in {sys.prefix}")
        else:
            kept.append(backend)
    return kept, notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, 1 repeat (smoke)")
    parser.add_argument("--out", type=Path, default=common.BENCH_DIR,
                        help="folder for RESULTS.md and results/*.json")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--steps", default=",".join(STEPS),
                        help="steps to run; '' re-renders RESULTS.md from results/*.json")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per step")
    parser.add_argument("--plan", choices=("full", "headline"), default="full",
                        help="latency cases: all, or only the targets' (a quicker re-run)")
    args = parser.parse_args(argv)

    for key, value in common.BENCH_ENV.items():  # recorded in the report's machine section
        os.environ.setdefault(key, value)
    raw = args.out / "results"
    raw.mkdir(parents=True, exist_ok=True)
    backends, notes = available_backends([b for b in args.backends.split(",") if b])
    statuses: dict[str, Any] = {}
    data: dict[str, Any] = {}
    for step in [s for s in args.steps.split(",") if s]:
        if step not in STEPS:
            raise SystemExit(f"unknown step {step!r}; use {STEPS}")
        extra = ["--backends", ",".join(backends), "--plan", args.plan] \
            if step == "latency" else []
        path = raw / f"{step}.json"
        statuses[step] = run_step(step, path, args.quick, extra, args.timeout)
        if path.is_file() and statuses[step]["returncode"] == 0:
            data[step] = json.loads(path.read_text())
        print(f"{step}: {statuses[step]['seconds']:.0f} s, rc={statuses[step]['returncode']}",
              flush=True)
    for step in STEPS:  # steps not run this time: keep the previous results, if any
        path = raw / f"{step}.json"
        if step not in statuses and path.is_file():
            data[step] = json.loads(path.read_text())
            if statuses:
                notes.append(f"{step}: results of an earlier run (not re-run this time)")
    before = raw / "latency_before.json"  # kept by hand: the numbers before an optimisation
    if before.is_file():
        data["latency_before"] = json.loads(before.read_text())
    summary = {"machine": common.machine(), "quick": args.quick, "python": sys.executable,
               "statuses": statuses, "notes": notes, **data}
    common.write_json(raw / "summary.json", summary)
    text = render(summary)
    target = args.out / "RESULTS.md"
    tmp = target.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(target)
    print(f"wrote {target}")
    return 0 if all(s.get("returncode") == 0 for s in statuses.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
