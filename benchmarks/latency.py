"""Inference latency per slice: ours (Keras 3, per backend) vs torchvision's Mask R-CNN.

For each case (backbone, image size, batch) both models are built with the same sizes and
counts (benchmarks.models), warmed up, then called alternately (ours, theirs, ours, ...)
so a change of machine load hits both; the median of the timed calls is reported, per slice
(call time / batch), with the ratio ours / theirs.

Each Keras backend runs in its own subprocess (KERAS_BACKEND is fixed at import), and each
of those times torchvision in the same process when torch is installed (.venv-bench);
without torch the torchvision column is skipped with a note.

    python -m benchmarks.latency --json out.json [--quick] [--backends tensorflow,jax]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path
from typing import Any

from benchmarks import common

BACKENDS = ("tensorflow", "jax", "torch")


def default_cases(quick: bool, backend: str, plan: str = "full") -> list[dict[str, Any]]:
    """The (backbone, size, batch, repeats) cases of one backend's worker.

    plan "headline": only the targets' cases (R50 at 512 and 1024, the demo trunk at 512),
    for a re-run after a change when the full plan would take too long.
    """
    if plan == "headline" and not quick:
        if backend != "tensorflow":
            return []
        rows = [("r50", 512, 1, 5), ("r50-rpn512", 512, 1, 5), ("r50", 1024, 1, 3),
                ("r50-rpn512", 1024, 1, 3), ("demo", 512, 1, 3), ("demo", 512, 4, 2)]
        return [{"backbone": b, "size": s, "batch": n, "repeats": r} for b, s, n, r in rows]
    if quick:
        return [{"backbone": "demo", "size": 128, "batch": 1, "repeats": 1},
                {"backbone": "demo", "size": 128, "batch": 2, "repeats": 1}]
    if backend != "tensorflow":  # the headline cases only: these backends are secondary
        return [{"backbone": "r50", "size": 512, "batch": 1, "repeats": 2},
                {"backbone": "demo", "size": 512, "batch": 1, "repeats": 2}]
    # (backbone, size, batch, timed calls): R50 in full, the others at batch 1 (+ the demo
    # model batched, as the pipeline runs it). Sized to finish in ~30 min on 2 busy cores.
    plan = [("r50", 512, 1, 3), ("r50-rpn512", 512, 1, 3), ("r50", 512, 4, 2),
            ("r50", 1024, 1, 3), ("r50-rpn512", 1024, 1, 3), ("r50", 1024, 2, 2),
            ("r101", 512, 1, 3), ("r101", 1024, 1, 2),
            ("demo", 512, 1, 3), ("demo", 512, 4, 2), ("demo", 1024, 1, 2)]
    cases = [{"backbone": b, "size": s, "batch": n, "repeats": r} for b, s, n, r in plan]
    return cases


# ---------------------------------------------------------------------------- worker
def run_case(case: dict[str, Any], warmup: int, with_torchvision: bool) -> dict[str, Any]:
    """Time one case in this process: build both models, warm up, alternate, take medians."""
    import keras

    from benchmarks import models

    size, batch, repeats = int(case["size"]), int(case["batch"]), int(case["repeats"])
    config = models.our_config(case["backbone"], size, batch)
    _, source = models.base_fields(case["backbone"])
    result: dict[str, Any] = {**case, "backend": keras.backend.backend(), "source": source,
                              "pre_nms_limit": int(config.PRE_NMS_LIMIT),
                              "post_nms_rois": int(config.POST_NMS_ROIS_INFERENCE),
                              "detections_max": int(config.DETECTION_MAX_INSTANCES)}
    calls: dict[str, Any] = {"ours": models.our_call(config, size, batch)}
    if with_torchvision:
        theirs, calls["torchvision"] = models.torchvision_call(config, size, batch)
        proposals: list[int] = []
        theirs.rpn.register_forward_hook(
            lambda _m, _i, out: proposals.append(int(out[0][0].shape[0])))
    first = {name: common.time_call(fn) for name, fn in calls.items()}  # includes tracing
    for _ in range(max(0, warmup - 1)):
        for fn in calls.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in calls}
    outputs: dict[str, Any] = {}
    load_before = common.load()
    for _ in range(repeats):
        for name, fn in calls.items():
            start = common.time_call(lambda fn=fn, name=name: outputs.__setitem__(name, fn()))
            times[name].append(start)
    result["load"] = [load_before, common.load()]
    result["first_call_s"] = first
    result["times_s"] = times
    result["median_s"] = {name: common.median(t) for name, t in times.items()}
    result["per_slice_s"] = {name: m / batch for name, m in result["median_s"].items()}
    # The fastest call is the least disturbed by other work on a shared machine.
    result["best_s"] = {name: min(t) for name, t in times.items()}
    result["detections"] = {"ours": [int(r["masks"].shape[-1]) for r in outputs["ours"]]}
    if "torchvision" in outputs:
        result["detections"]["torchvision"] = [int(o["masks"].shape[0])
                                               for o in outputs["torchvision"]]
        result["torchvision_proposals"] = proposals[-1] if proposals else None
        result["ratio"] = result["median_s"]["ours"] / result["median_s"]["torchvision"]
        result["ratio_best"] = result["best_s"]["ours"] / result["best_s"]["torchvision"]
    else:
        result["torchvision_note"] = "torch/torchvision not installed: column skipped"
    return result


def threads() -> dict[str, Any]:
    """Thread settings of the frameworks in this process (do they use every core?)."""
    info: dict[str, Any] = {"cpu_count": os.cpu_count()}
    try:
        import tensorflow as tf

        info["tf_intra_op"] = tf.config.threading.get_intra_op_parallelism_threads()
        info["tf_inter_op"] = tf.config.threading.get_inter_op_parallelism_threads()
    except ImportError:
        pass
    if common.torchvision_available():
        import torch

        info["torch_threads"] = torch.get_num_threads()
    return info


def worker(cases: list[dict[str, Any]], warmup: int, out: Path) -> None:
    """Run the cases in this process (backend already chosen by KERAS_BACKEND)."""
    with_tv = common.torchvision_available()
    if with_tv:
        # torch must load before TensorFlow: the other order segfaults (clashing libraries).
        import torch  # noqa: F401
        import torchvision  # noqa: F401
    import keras

    results = []
    for case in cases:
        try:
            results.append(run_case(case, warmup, with_tv))
        except Exception as exc:  # one failing case must not lose the others
            results.append({**case, "backend": keras.backend.backend(),
                            "error": f"{type(exc).__name__}: {exc}",
                            "traceback": traceback.format_exc(limit=4)})
        gc.collect()
        keras.backend.clear_session()
        common.write_json(out, {"backend": keras.backend.backend(), "threads": threads(),
                                "cases": results})


# ---------------------------------------------------------------------------- driver
def run(backends: list[str], quick: bool, warmup: int, timeout: float | None = None,
        cases: list[dict[str, Any]] | None = None, plan: str = "full") -> dict[str, Any]:
    """One subprocess per backend; returns the merged results."""
    merged: dict[str, Any] = {"machine": common.machine(), "quick": quick, "warmup": warmup,
                              "plan": plan, "workers": {}, "cases": []}
    for backend in backends:
        spec = cases if cases is not None else default_cases(quick, backend, plan)
        if not spec:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "worker.json"
            cmd = [sys.executable, "-m", "benchmarks.latency", "--worker", "--json", str(out),
                   "--warmup", str(warmup), "--cases", json.dumps(spec)]
            env = common.bench_env(KERAS_BACKEND=backend)
            try:
                proc = subprocess.run(cmd, env=env, cwd=common.REPO_ROOT, timeout=timeout,
                                      capture_output=True, text=True)
                status = {"returncode": proc.returncode, "stderr_tail": proc.stderr[-2000:]}
            except subprocess.TimeoutExpired:
                status = {"returncode": None, "error": f"timed out after {timeout} s"}
            if out.is_file():
                data = json.loads(out.read_text())
                merged["cases"].extend(data["cases"])
                status["threads"] = data.get("threads")
            merged["workers"][backend] = status
    merged["load_after"] = common.load()
    return merged


def summarize(case: dict[str, Any]) -> dict[str, Any]:
    """(Re)compute a case's medians, bests, per-slice times and ratios from its times_s."""
    times = case["times_s"]
    case["median_s"] = {name: common.median(t) for name, t in times.items()}
    case["best_s"] = {name: min(t) for name, t in times.items()}
    case["per_slice_s"] = {name: m / case["batch"] for name, m in case["median_s"].items()}
    if "torchvision" in times:
        case["ratio"] = case["median_s"]["ours"] / case["median_s"]["torchvision"]
        case["ratio_best"] = case["best_s"]["ours"] / case["best_s"]["torchvision"]
    return case


def merge(into: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Add another latency run's cases: a case measured in both gets the timed calls of both
    (each run alternated ours/theirs) and its statistics recomputed; new cases are appended."""
    def key(c: dict[str, Any]) -> tuple:
        return c.get("backend"), c.get("backbone"), c.get("size"), c.get("batch")

    index = {key(c): c for c in into["cases"] if "times_s" in c}
    for case in extra["cases"]:
        old = index.get(key(case))
        if old is None or "times_s" not in case:
            into["cases"].append(case)
            continue
        for name, t in case["times_s"].items():
            old["times_s"].setdefault(name, []).extend(t)
        old["load"] = [old["load"][0], case["load"][1]]
        old["runs"] = old.get("runs", 1) + 1
        summarize(old)
    return into


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=common.BENCH_DIR / "results" /
                        "latency.json")
    parser.add_argument("--quick", action="store_true", help="tiny size, 1 repeat")
    parser.add_argument("--backends", default="tensorflow,jax,torch")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--cases", default=None, help="JSON list of cases (overrides defaults)")
    parser.add_argument("--plan", choices=("full", "headline"), default="full")
    parser.add_argument("--timeout", type=float, default=None, help="seconds per backend")
    parser.add_argument("--merge-into", type=Path, default=None,
                        help="add this run's cases to an existing latency JSON (see merge)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cases = json.loads(args.cases) if args.cases else None
    if args.worker:
        worker(cases or default_cases(args.quick, os.environ.get("KERAS_BACKEND", "")),
               args.warmup, args.json)
        return 0
    backends = [b for b in args.backends.split(",") if b]
    unknown = set(backends) - set(BACKENDS)
    if unknown:
        raise SystemExit(f"unknown backend(s) {sorted(unknown)}; use {BACKENDS}")
    result = run(backends, args.quick, args.warmup, args.timeout, cases, args.plan)
    common.write_json(args.json, result)
    if args.merge_into:
        common.write_json(args.merge_into,
                          merge(json.loads(args.merge_into.read_text()), result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
