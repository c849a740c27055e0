"""benchmarks/RESULTS.md from the raw JSON of run_all (tables, machine, load, commands).

The hand-written part (method, fairness notes, what was optimised) lives in
benchmarks/NOTES.md and is appended verbatim, so regenerating never loses it.
"""

from __future__ import annotations

from typing import Any

from benchmarks.common import BENCH_DIR

BACKBONE_NAMES = {"r50": "ResNet-50", "r101": "ResNet-101", "demo": "demo (light)",
                  "r50-rpn512": "ResNet-50, RPN 512 (Matterport)"}


def _f(value: Any, digits: int = 2) -> str:
    """A number for a table cell ('-' when missing)."""
    if value is None or (isinstance(value, float) and value != value):
        return "-"
    return f"{value:.{digits}f}"


def _machine(summary: dict[str, Any]) -> list[str]:
    m = summary.get("machine", {})
    versions = ", ".join(f"{k} {v}" for k, v in m.get("versions", {}).items())
    lines = [
        f"- Date: {m.get('date', '?')}; run with `{summary.get('python', 'python')}`"
        f"{' (--quick: tiny sizes, smoke only)' if summary.get('quick') else ''}",
        f"- CPU: {m.get('cpu', '?')}, {m.get('cores', '?')} cores "
        f"({', '.join(m.get('flags', []))}), {m.get('memory_gib', '?')} GiB, no GPU",
        f"- Software: Python {m.get('python', '?')}; {versions}",
        f"- Load average (1/5/15 min) when the report was written: {m.get('load')}; "
        "the machine is shared, so numbers above the core count mean contention "
        "(each latency row lists the 1-min load before/after its timed runs)",
    ]
    lines.append(f"- Benchmark processes' environment: {m.get('env')} (set by run_all unless "
                 "already set; see the notes on OpenMP below)")
    for note in summary.get("notes", []):
        lines.append(f"- Note: {note}")
    return lines


def _isolated_case(summary: dict[str, Any], backbone: str, size: int) -> dict[str, Any] | None:
    return next((c for c in summary.get("isolated", {}).get("cases", [])
                 if c.get("backbone") == backbone and c.get("size") == size and "ratio" in c),
                None)


def _targets(summary: dict[str, Any]) -> list[str]:
    rows = ["| Target | Measured | Met |", "| --- | --- | --- |"]
    lat = summary.get("latency", {}).get("cases", [])
    for size in (512, 1024):
        case = next((c for c in lat if c.get("backbone") == "r50" and c.get("size") == size
                     and c.get("batch") == 1 and c.get("backend") == "tensorflow"
                     and "ratio" in c), None)
        alone = _isolated_case(summary, "r50", size)
        if case:
            ratios = [case["ratio"]] + ([alone["ratio"]] if alone else [])
            text = f"{case['ratio']:.2f} (median; best calls {case['ratio_best']:.2f})"
            if alone:
                text += f"; each alone in its process {alone['ratio']:.2f}"
            rows.append(f"| R50 {size} px, batch 1, ours/torchvision <= 1.0 (TF) | {text} | "
                        f"{'yes' if max(ratios) <= 1.0 else 'no'} |")
    e2e = summary.get("end_to_end")
    if e2e and "warm_best_total_s" in e2e:
        t = e2e["warm_best_total_s"]
        n = e2e.get("phantom", {}).get("slices", "?")
        rows.append(f"| demo model, {n}-slice phantom end to end < 15 s (model loaded) | "
                    f"{t:.1f} s | {'yes' if t < 15.0 else 'no'} |")
    return rows if len(rows) > 2 else []


def _latency(summary: dict[str, Any]) -> list[str]:
    data = summary.get("latency")
    if not data:
        return ["(latency benchmark did not run)"]
    lines = [
        "| Backend (ours) | Backbone | Size | Batch | Ours s/slice | torchvision s/slice | "
        "Ratio ours/tv (median) | Ratio of best calls | Ours first call s | "
        "Detections ours/tv | Load 1-min |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    key = lambda c: (c.get("backend"), c.get("backbone"), c.get("size"), c.get("batch"))  # noqa: E731
    now = {key(c) for c in data.get("cases", [])}
    # Cases of the run before the optimisations that were not re-run since (marked "before").
    older = [{**c, "backend": f"{c.get('backend')} (before opt.)"}
             for c in summary.get("latency_before", {}).get("cases", []) if key(c) not in now]
    for c in [*data.get("cases", []), *older]:
        name = BACKBONE_NAMES.get(c.get("backbone"), c.get("backbone"))
        if c.get("runs", 1) > 1:
            name += f" ({c['runs']} runs pooled)"
        head = f"| {c.get('backend')} | {name} | {c.get('size')} | {c.get('batch')} |"
        if "error" in c:
            lines.append(f"{head} error: {c['error'][:120]} | | | | | | |")
            continue
        per = c.get("per_slice_s", {})
        det = c.get("detections", {})
        det_text = f"{det.get('ours', ['-'])[0]}/{(det.get('torchvision') or ['-'])[0]}"
        load = c.get("load", [[None], [None]])
        lines.append(
            f"{head} {_f(per.get('ours'))} | {_f(per.get('torchvision'))} | "
            f"{_f(c.get('ratio'))} | {_f(c.get('ratio_best'))} | "
            f"{_f(c.get('first_call_s', {}).get('ours'), 1)} | "
            f"{det_text} | {load[0][0]}->{load[1][0]} |")
    for backend, status in data.get("workers", {}).items():
        if status.get("returncode") != 0:
            lines.append(f"\n{backend} worker failed (rc={status.get('returncode')}): "
                         f"`{(status.get('error') or status.get('stderr_tail', ''))[-300:]}`")
        if status.get("threads"):
            lines.append(f"\n{backend} worker threads: {status['threads']}")
    if any("torchvision_note" in c for c in data.get("cases", [])):
        lines.append("\ntorchvision column skipped: torch/torchvision are not installed in this "
                     "environment (run `make bench`, which uses .venv-bench).")
    return lines


def _isolated(summary: dict[str, Any]) -> list[str]:
    data = summary.get("isolated")
    if not data or not data.get("cases"):
        return [f"({(data or {}).get('skipped', 'isolated benchmark did not run')})"]
    lines = ["| Backbone | Size | Ours s (median) | torchvision s (median) | Ratio (median) | "
             "Ratio of best calls | Calls per side | Load 1-min |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for c in data["cases"]:
        name = BACKBONE_NAMES.get(c["backbone"], c["backbone"])
        if "error" in c:
            lines.append(f"| {name} | {c['size']} | error: {c['error'][:120]} | | | | | |")
            continue
        med, calls = c["median_s"], len(c["times_s"]["ours"])
        lines.append(f"| {name} | {c['size']} | {_f(med['ours'])} | {_f(med['torchvision'])} | "
                     f"{_f(c['ratio'])} | {_f(c['ratio_best'])} | {calls} | "
                     f"{min(c['load'])}-{max(c['load'])} |")
    return lines


def _before_after(summary: dict[str, Any]) -> list[str]:
    """Cases measured both before an optimisation (results/latency_before.json) and now."""
    before = {(c.get("backend"), c.get("backbone"), c.get("size"), c.get("batch")): c
              for c in summary.get("latency_before", {}).get("cases", []) if "per_slice_s" in c}
    rows = []
    for c in summary.get("latency", {}).get("cases", []):
        key = (c.get("backend"), c.get("backbone"), c.get("size"), c.get("batch"))
        if key not in before or "per_slice_s" not in c:
            continue
        b = before[key]
        rows.append(f"| {key[0]} | {BACKBONE_NAMES.get(key[1], key[1])} | {key[2]} | {key[3]} | "
                    f"{_f(b['per_slice_s']['ours'])} -> {_f(c['per_slice_s']['ours'])} | "
                    f"{_f(b['best_s']['ours'] / key[3])} -> {_f(c['best_s']['ours'] / key[3])} | "
                    f"{_f(b.get('ratio'))} -> {_f(c.get('ratio'))} | "
                    f"{_f(b.get('ratio_best'))} -> {_f(c.get('ratio_best'))} | "
                    f"{b['load'][0][0]} / {c['load'][0][0]} |")
    if not rows:
        return []
    return ["| Backend | Backbone | Size | Batch | Ours s/slice (median) | Ours s/slice (best) "
            "| Ratio (median) | Ratio (best) | Load before / after |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *rows]


def _floor(summary: dict[str, Any]) -> list[str]:
    fl = summary.get("floor")
    if not fl:
        return ["(floor benchmark did not run)"]
    mm = fl.get("matmul_gflops", {})
    peak = max((v["best"] for v in mm.values()), default=float("nan"))
    lines = [f"- float32 matmul {fl.get('matmul_n')}x{fl.get('matmul_n')}, GFLOP/s best "
             f"(median): " + ", ".join(f"{k} {v['best']:.0f} ({v['median']:.0f})"
                                         for k, v in mm.items()),
             f"- 3x3 convolution {fl.get('conv3x3_gflops', {}).get('shape')} -> 256 ch in TF: "
             f"{fl.get('conv3x3_gflops', {}).get('tensorflow', {}).get('best', 0):.0f} GFLOP/s",
             f"- memory copy ({fl.get('copy_gbps', {}).get('mib')} MiB): "
             f"{fl.get('copy_gbps', {}).get('best', 0):.1f} GB/s best "
             f"({fl.get('copy_gbps', {}).get('median', 0):.1f} median), read + write bytes",
             "",
             "Model work per image (GMAC = 1e9 multiply-adds; FLOPs = 2 x MACs), counted from "
             "our Keras layers' shapes with the benchmark counts (1000 ROIs in the box head, "
             "100 in the mask head); 'floor' = 2 x MACs / best matmul rate:",
             "",
             "| Backbone | Size | trunk | FPN | RPN | box head | mask head | total GMAC | "
             "torchvision GMAC | floor s | ours TF s/slice (batch 1) | % of matmul peak |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    lat = summary.get("latency", {}).get("cases", [])
    for row in fl.get("model_macs", []):
        m = row["ours"]
        floor_s = 2 * m["total"] / (peak * 1e9)
        case = next((c for c in lat if c.get("backbone") == row["backbone"] and
                     c.get("size") == row["size"] and c.get("batch") == 1 and
                     c.get("backend") == "tensorflow" and "per_slice_s" in c), None)
        ours = case["per_slice_s"]["ours"] if case else None
        pct = f"{100 * floor_s / ours:.0f}%" if ours else "-"
        tv = row.get("torchvision_total")
        lines.append(
            f"| {BACKBONE_NAMES.get(row['backbone'], row['backbone'])} | {row['size']} | "
            + " | ".join(_f(m.get(k, 0) / 1e9, 1) for k in ("trunk", "fpn", "rpn", "box_head",
                                                             "mask_head", "total"))
            + f" | {_f(tv / 1e9, 1) if tv else '-'} | {_f(floor_s)} | {_f(ours)} | {pct} |")
    return lines


def _end_to_end(summary: dict[str, Any]) -> list[str]:
    e = summary.get("end_to_end")
    if not e or "warm" not in e:
        return ["(end-to-end benchmark did not run)"]
    model, ph = e["model"], e["phantom"]
    lines = [f"- Model: {model['backbone']} x{model['backbone_width']} at "
             f"{model['image_size']} px ({model['config']}); weights: {model['weights']}; "
             f"loaded in {model['load_s']:.1f} s",
             f"- Input: phantom seed {ph['seed']}, {ph['slices']} slices of {ph['size']}x"
             f"{ph['size']} px, written as .nii.gz; output: label-map .nii.gz",
             "",
             "| Run | Total s | Slices/s | model.detect s | rest of pipeline s | "
             "load .nii.gz s | write labels s | bodies |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name in ("cold", "warm", "warm_2"):
        r = e.get(name)
        if r:
            lines.append(f"| {name} | {_f(r['total_s'])} | {_f(r['slices_per_s'])} | "
                         f"{_f(r['model_detect_s'])} | {_f(r['pipeline_rest_s'])} | "
                         f"{_f(r['load_volume_s'], 3)} | {_f(r['write_nifti_s'], 3)} | "
                         f"{r['bodies_found']} |")
    peaks = e.get("tracemalloc_peak_mib", {})
    traced = ", ".join(f"{k} {v:.0f} MiB" for k, v in peaks.items()) \
        if isinstance(peaks, dict) else f"{peaks:.0f} MiB"
    lines += ["", f"- Peak memory: {e['peak_rss_mib']:.0f} MiB resident (ru_maxrss, whole "
              f"process incl. the model and TensorFlow); tracemalloc peak of Python/numpy "
              f"allocations per phase of one volume: {traced}"]
    return lines


def _commands(summary: dict[str, Any]) -> list[str]:
    lines = ["- `make bench` (creates/refreshes .venv-bench with torch 2.14.1 + torchvision "
             "0.29.1 next to the project requirements, then runs `python -m benchmarks.run_all`)",
             "- each step alone: `python -m benchmarks.floor`, `python -m benchmarks.latency "
             "[--plan headline] [--backends tensorflow,jax,torch] [--merge-into FILE]`, "
             "`python -m benchmarks.isolated`, "
             "`python -m benchmarks.end_to_end`, `python -m benchmarks.profile --backbone r50 "
             "--size 1024`; `python -m benchmarks.run_all --steps ''` re-renders this file",
             "- smoke test (project venv, no torch): `python -m pytest tests/benchmarks`"]
    for step, status in summary.get("statuses", {}).items():
        lines.append(f"- {step}: `python {status['command']}` -> rc {status['returncode']}, "
                     f"{status['seconds']:.0f} s")
    return lines


def render(summary: dict[str, Any]) -> str:
    """The whole RESULTS.md text."""
    parts = ["# SpineSeg speed benchmarks", "",
             "Generated by `python -m benchmarks.run_all` (`make bench`); raw numbers in "
             "benchmarks/results/*.json. Method and fairness notes at the end.", "",
             "## Machine", "", *_machine(summary), ""]
    targets = _targets(summary)
    if targets:
        parts += ["## Targets", "", *targets, ""]
    parts += ["## Inference latency per slice: ours vs torchvision", "",
              "Median of alternating timed calls after warm-up; full `detect` on our side "
              "(mold, network, unmold masks to the image) vs `model(images)` in torchvision "
              "(normalize, network, paste masks); per slice = call time / batch.", "",
              *_latency(summary), "",
              "### Each model alone in its own process (benchmarks/isolated.py)", "",
              "ours = TF + Keras only, torchvision = torch only, run in turn; batch 1.", "",
              *_isolated(summary), "",
              *(["### Before / after the optimisations (benchmarks/NOTES.md)", "",
                 *_before_after(summary), ""] if _before_after(summary) else []),
              "## The machine's floor", "", *_floor(summary), "",
              "## End to end: phantom .nii.gz -> label-map NIfTI", "", *_end_to_end(summary), "",
              "## Commands", "", *_commands(summary), ""]
    notes = BENCH_DIR / "NOTES.md"
    if notes.is_file():
        parts += [notes.read_text().rstrip(), ""]
    return "\n".join(parts)
