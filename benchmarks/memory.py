"""Peak memory of segmenting one large scan (512^3 float32, every slice) as the page does it.

    python -m benchmarks.memory [--size 512] [--json benchmarks/results/memory.json]

The scan is the bundled example (examples/*.nii.gz) resampled to size^3 float32 voxels, so
the model finds real vertebrae on it, written once as .nii.gz. A fresh child process then
does what the page does for an upload and "Segment all slices": load the model, read the
scan from bytes (spine.volume.load_scan), segment_volume, build the downloads
(spine.export.result_files). After each stage it records RSS (VmRSS) and the stage's peak
RSS (VmHWM, reset between stages through /proc/self/clear_refs). Not a test: no assertion.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks import common

MIB = 2**20


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM of this process in bytes (Linux /proc)."""
    found = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            found[key] = int(value.split()[0]) * 1024
    return found


def reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where that is not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def make_scan(path: Path, size: int) -> dict[str, Any]:
    """The example scan resampled to size^3 float32 (display layout), saved as .nii.gz."""
    import cv2
    import nibabel as nib
    import numpy as np

    from spine.pipeline import example_scan

    example = example_scan()
    s, h, w = example.shape
    picks = np.linspace(0, s - 1, size).round().astype(int)  # nearest slice along S
    data = np.empty((size, size, size), np.float32)
    for k, i in enumerate(picks):
        data[k] = cv2.resize(example.data[i], (size, size), interpolation=cv2.INTER_LINEAR)
    slice_mm, row_mm, col_mm = example.spacing
    # Display layout: axis 0 -> Right, 1 -> Inferior, 2 -> Posterior; same field of view.
    affine = np.array([[s * slice_mm / size, 0, 0, 0], [0, 0, -w * col_mm / size, 0],
                       [0, -h * row_mm / size, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
    img = nib.Nifti1Image(data, affine)
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return {"source": example.name, "shape": [size] * 3, "dtype": "float32",
            "file_mib": round(path.stat().st_size / MIB, 1)}


def child(scan: Path, out: Path) -> None:
    """The measured process: model, load from bytes, segment every slice, downloads."""
    stages: list[dict[str, Any]] = []
    can_reset = reset_peak()

    def stage(name: str, start: float, **extra: Any) -> None:
        status = proc_status()
        stages.append({"stage": name, "seconds": round(time.perf_counter() - start, 1),
                       "rss_mib": round(status["VmRSS"] / MIB),
                       "peak_mib": round(status["VmHWM"] / MIB), **extra})
        print(json.dumps(stages[-1]), flush=True)
        reset_peak()

    start = time.perf_counter()
    from spine import export, pipeline
    from spine.volume import load_scan

    stage("imports", start)
    start = time.perf_counter()
    segmenter = pipeline.load_segmenter()
    stage("model loaded", start)
    start = time.perf_counter()
    data = scan.read_bytes()  # what the page holds for an upload
    volume = load_scan(data, scan.name, "large")
    stage("scan read from bytes", start, upload_mib=round(len(data) / MIB, 1))
    start = time.perf_counter()
    result = segmenter.segment_volume(volume)
    stage("segment_volume (all slices)", start, bodies=result.count,
          slices_with_bodies=int(result.labels.any(axis=(1, 2)).sum()))
    start = time.perf_counter()
    files = export.result_files(volume, result)
    stage("downloads built", start, files_mib=round(
        sum(len(v[0]) for v in files.values()) / MIB, 1))
    start = time.perf_counter()
    del files, result, volume, data
    import gc

    gc.collect()
    stage("results released", start)
    peak = max(s["peak_mib"] for s in stages)
    common.write_json(out, {"stages": stages, "peak_mib": peak, "peak_reset": can_reset})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512, help="voxels per side (512)")
    parser.add_argument("--scan", type=Path, help="reuse this .nii.gz instead of making one")
    parser.add_argument("--json", type=Path, default=common.BENCH_DIR / "results" / "memory.json")
    parser.add_argument("--label", default="", help="what this run measures (before/after)")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds for the child")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.json)
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        scan = args.scan
        facts: dict[str, Any] = {}
        if scan is None:
            scan = Path(tmp) / f"large_{args.size}.nii.gz"
            facts = make_scan(scan, args.size)
        raw = Path(tmp) / "child.json"
        cmd = [sys.executable, "-m", "benchmarks.memory", "--child", str(scan), "--json", str(raw)]
        load_before = common.load()
        try:
            proc = subprocess.run(cmd, cwd=common.REPO_ROOT, env=common.bench_env(),
                                  timeout=args.timeout, capture_output=True, text=True)
            status: dict[str, Any] = {"returncode": proc.returncode,
                                      "stderr_tail": proc.stderr[-1500:]}
        except subprocess.TimeoutExpired:
            status = {"returncode": None, "error": f"timed out after {args.timeout} s"}
        measured = json.loads(raw.read_text()) if raw.is_file() else {}
    summary = {"label": args.label, "scan": facts, "machine": common.machine(),
               "load_before": load_before, "status": status, **measured}
    common.write_json(args.json, summary)
    print(json.dumps({k: summary[k] for k in ("label", "status")} | measured, indent=1))
    return 0 if status.get("returncode") == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
