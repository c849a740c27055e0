"""Latency with each model alone in its own process: no second framework loaded beside it.

The latency benchmark times both models in one process, calls alternated, so load changes
hit both. But there, each framework's idle worker threads share the two cores with the
other's calls (both sides measured slower than alone: R50 512 px, ours 1.42 vs 1.05 s,
torchvision 2.27 vs 1.6 s). Here one subprocess imports only torch + torchvision, another
only TensorFlow + Keras; they run one after the other, `rounds` times in turn, and the
medians of all their calls are compared.

    python -m benchmarks.isolated [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from benchmarks import common

SIDES = ("torchvision", "ours")


def time_side(side: str, backbone: str, size: int, calls: int, warmup: int = 2) -> list[float]:
    """In this process: build one side's model, warm it up, time `calls` calls."""
    from benchmarks import models

    config = models.our_config(backbone, size, 1)
    if side == "torchvision":
        _, call = models.torchvision_call(config, size, 1)
    else:
        call = models.our_call(config, size, 1)
    for _ in range(warmup):
        call()
    return [common.time_call(call) for _ in range(calls)]


def run_side(side: str, backbone: str, size: int, calls: int, timeout: float) -> dict[str, Any]:
    """time_side in a fresh subprocess (KERAS_BACKEND=tensorflow for ours)."""
    cmd = [sys.executable, "-m", "benchmarks.isolated", "--worker",
           json.dumps([side, backbone, size, calls])]
    env = common.bench_env(KERAS_BACKEND="tensorflow")
    proc = subprocess.run(cmd, cwd=common.REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=timeout)
    if proc.returncode != 0:
        return {"error": proc.stderr[-1500:]}
    return {"times_s": json.loads(proc.stdout.strip().splitlines()[-1])}


def run(cases: list[tuple[str, int]], calls: int, rounds: int, timeout: float) -> dict[str, Any]:
    """Every (backbone, size): both sides, `rounds` times in turn; medians and the ratio."""
    result: dict[str, Any] = {"machine": common.machine(), "calls_per_round": calls,
                              "rounds": rounds, "cases": []}
    for backbone, size in cases:
        case: dict[str, Any] = {"backbone": backbone, "size": size, "batch": 1,
                                "times_s": {s: [] for s in SIDES}, "load": []}
        for _ in range(rounds):
            for side in SIDES:
                case["load"].append(common.load()[0])
                out = run_side(side, backbone, size, calls, timeout)
                if "error" in out:
                    case["error"] = f"{side}: {out['error']}"
                    break
                case["times_s"][side] += out["times_s"]
        if "error" not in case:
            case["median_s"] = {s: common.median(t) for s, t in case["times_s"].items()}
            case["best_s"] = {s: min(t) for s, t in case["times_s"].items()}
            case["ratio"] = case["median_s"]["ours"] / case["median_s"]["torchvision"]
            case["ratio_best"] = case["best_s"]["ours"] / case["best_s"]["torchvision"]
        result["cases"].append(case)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path,
                        default=common.BENCH_DIR / "results" / "isolated.json")
    parser.add_argument("--quick", action="store_true", help="demo trunk at 128 px, 1 call")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per subprocess")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        side, backbone, size, calls = json.loads(args.worker)
        print(json.dumps(time_side(side, backbone, int(size), int(calls))))
        return 0
    if not common.torchvision_available():
        common.write_json(args.json, {"skipped": "torch/torchvision not installed"})
        print("isolated: torchvision not installed, skipped")
        return 0
    if args.quick:
        result = run([("demo", 128)], calls=1, rounds=1, timeout=args.timeout)
    else:
        cases = [("r50", 512), ("r50-rpn512", 512), ("r50", 1024)]
        result = run(cases, calls=4, rounds=2, timeout=args.timeout)
    common.write_json(args.json, result)
    return 0 if all("error" not in c for c in result["cases"]) else 1


if __name__ == "__main__":
    sys.exit(main())
