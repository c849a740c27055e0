"""The outputs of spine-evaluate: tables (CSV, JSON), plots (PNG) and REPORT.md.

Everything here reads the results computed by spine.evaluation.run (volumes) and
spine.evaluation.png (PNG folders) and writes files atomically (mrcnn.atomic), so a reader
never sees a half-written report.
Figures are drawn with matplotlib's Agg canvas (never shown); overlays with
mrcnn.visualize.draw_overlay.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrcnn.atomic import write_bytes_atomic
from spine.evaluation.deformed import report_lines
from spine.evaluation.metrics import SliceEvaluation
from spine.volume import label_instances

if TYPE_CHECKING:
    from spine.evaluation.png import FolderEvaluation
    from spine.evaluation.run import CaseResult

METHOD_COLORS = {"model": "#1f77b4", "baseline": "#ff7f0e"}
CITATIONS = {
    "chu2015": 'Chu C. et al., "Fully automatic localization and segmentation of 3D vertebral '
    'bodies from CT/MR images via a learning-based method", PLoS ONE 10(11): '
    "e0143327, 2015.",
    "myosegmentum": 'Burian E. et al., "Lumbar muscle and vertebral bodies segmentation of '
    "chemical shift encoding-based water-fat MRI: the reference database "
    'MyoSegmenTUM spine", BMC Musculoskelet Disord 20:152, 2019.',
}


# ----------------------------------------------------------------------------- files
def figure_png(fig: Any) -> bytes:
    """A matplotlib Figure (Agg canvas, never shown) as PNG bytes."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def image_png(rgb: np.ndarray) -> bytes:
    """uint8 [H, W, 3] -> PNG bytes."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(rgb)).save(buf, format="PNG")
    return buf.getvalue()


VOLUME_COLUMNS = [
    "name",
    "source",
    "method",
    "gt_bodies",
    "pred_bodies",
    "mean_dice",
    "recall",
    "false_bodies",
    "merges",
    "foreground_dice",
    "mAP50",
    "mAP50_95",
    "seconds",
]
BODY_COLUMNS = ["name", "source", "method", "gt_label", "level", "dice", "matched_label"]


def per_volume_rows(results: Sequence[CaseResult]) -> list[dict[str, Any]]:
    """One row per (volume, method) with the columns of VOLUME_COLUMNS."""
    rows = []
    for r in results:
        for method, m in r.methods.items():
            s = m.slices.summary()
            rows.append(
                {
                    "name": r.case.subject,
                    "source": r.case.source,
                    "method": method,
                    "gt_bodies": int(m.scores.gt_ids.size),
                    "pred_bodies": int(m.scores.pred_ids.size),
                    "mean_dice": round(m.scores.mean_dice, 4),
                    "recall": round(m.scores.recall, 4),
                    "false_bodies": m.scores.false_bodies,
                    "merges": m.scores.merges,
                    "foreground_dice": round(m.scores.foreground_dice, 4),
                    "mAP50": round(s["mAP50"], 4),
                    "mAP50_95": round(s["mAP50_95"], 4),
                    "seconds": round(m.seconds, 2),
                }
            )
    return rows


def per_body_rows(results: Sequence[CaseResult]) -> list[dict[str, Any]]:
    """One row per (volume, method, ground-truth body) with the columns of BODY_COLUMNS."""
    rows = []
    for r in results:
        for method, m in r.methods.items():
            levels = m.scores.levels or [""] * m.scores.gt_ids.size
            for gid, level, d, hit in zip(
                m.scores.gt_ids, levels, m.scores.dice, m.scores.matched, strict=True
            ):
                rows.append(
                    {
                        "name": r.case.subject,
                        "source": r.case.source,
                        "method": method,
                        "gt_label": int(gid),
                        "level": level,
                        "dice": round(float(d), 4),
                        "matched_label": int(hit),
                    }
                )
    return rows


def csv_text(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as CSV text with a header line."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _json_safe(value: Any) -> Any:
    """NaN -> None so metrics.json is strict JSON."""
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def write_outputs(
    results: Sequence[CaseResult], summary: dict[str, Any], out_dir: str | Path
) -> dict[str, Any]:
    """Write metrics.json, per_volume.csv, per_body.csv, the plots and REPORT.md into out_dir.

    summary: spine.evaluation.run.summarize(results). Every file is written atomically.
    Returns the summary.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(out / "per_volume.csv", csv_text(per_volume_rows(results), VOLUME_COLUMNS))
    write_bytes_atomic(out / "per_body.csv", csv_text(per_body_rows(results), BODY_COLUMNS))
    write_bytes_atomic(out / "metrics.json", json.dumps(_json_safe(summary), indent=2) + "\n")
    write_report(results, summary, out)
    return summary


# ----------------------------------------------------------------------------- plots
def plot_pr_curves(results: Sequence[CaseResult], summary: dict[str, Any]) -> Any:
    """Pooled precision-recall curves at mask IoU 0.5, one line per method -> Figure."""
    from mrcnn.visualize import plot_precision_recall

    fig = None
    for method, stats in summary["methods"].items():
        pooled = SliceEvaluation()
        for r in results:
            if method in r.methods:
                pooled.extend(r.methods[method].slices)
        precisions, recalls = pooled.pr_curve()
        ap = stats.get("pooled_AP50") or 0.0
        label = f"{method} (pooled AP@0.5 = {ap:.3f})"
        if fig is None:
            fig = plot_precision_recall(ap, precisions, recalls)
            ax = fig.axes[0]
            for line in ax.get_lines():
                line.set_color(METHOD_COLORS.get(method))
                line.set_label(label)
        else:
            ax.plot(recalls, precisions, color=METHOD_COLORS.get(method), label=label)
    ax.set_title("Slice masks, all validation slices pooled (IoU 0.5)")
    ax.legend(loc="lower left")
    return fig


def _grouped_boxplot(groups: dict[str, dict[str, list[float]]], xlabel: str, title: str) -> Any:
    """Box plots of Dice: groups {category: {method: values}} -> Figure."""
    from matplotlib.figure import Figure

    categories = list(groups)
    methods = sorted({m for g in groups.values() for m in g}, key=["model", "baseline"].index)
    fig = Figure(figsize=(max(4.0, 0.9 * len(categories) * len(methods) + 2), 3.6))
    ax = fig.subplots()
    width = 0.8 / max(len(methods), 1)
    for j, method in enumerate(methods):
        data = [groups[c].get(method, []) for c in categories]
        pos = [i + (j - (len(methods) - 1) / 2) * width for i in range(len(categories))]
        keep = [(p, d) for p, d in zip(pos, data, strict=True) if d]
        if not keep:
            continue
        box = ax.boxplot(
            [d for _, d in keep],
            positions=[p for p, _ in keep],
            widths=width * 0.85,
            patch_artist=True,
            showfliers=True,
        )
        for patch in box["boxes"]:
            patch.set_facecolor(METHOD_COLORS.get(method, "grey"))
            patch.set_alpha(0.6)
        ax.plot([], [], color=METHOD_COLORS.get(method, "grey"), lw=6, alpha=0.6, label=method)
    ax.set_xticks(range(len(categories)), categories)
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("Dice")
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right", fontsize="small")
    return fig


def plot_dice_per_body(results: Sequence[CaseResult]) -> Any:
    """Dice of every ground-truth body, grouped by level (or by label where levels are
    unknown), one box per method -> Figure."""
    from spine.levels import level_rank

    groups: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for method, m in r.methods.items():
            names = m.scores.levels or [f"#{g}" for g in m.scores.gt_ids]
            for name, d in zip(names, m.scores.dice, strict=True):
                groups.setdefault(name, {}).setdefault(method, []).append(float(d))
    order = sorted(groups, key=lambda n: (level_rank(n), len(n), n))
    return _grouped_boxplot(
        {k: groups[k] for k in order}, "body (level, top to bottom)", "Dice per vertebral body"
    )


def plot_dice_per_source(results: Sequence[CaseResult]) -> Any:
    """Mean Dice per volume grouped by data source, one box per method -> Figure."""
    groups: dict[str, dict[str, list[float]]] = {}
    for r in results:
        for method, m in r.methods.items():
            groups.setdefault(r.case.source, {}).setdefault(method, []).append(m.scores.mean_dice)
    return _grouped_boxplot(
        dict(sorted(groups.items())), "source", "Mean Dice per volume, by source"
    )


def overlay_panel(result: CaseResult) -> np.ndarray:
    """[image | ground truth | each method] on the slice with the most ground-truth voxels.

    Returns uint8 RGB [H, W * (2 + methods), 3].
    """
    from mrcnn.visualize import draw_overlay, random_colors
    from spine.volume import window_percentile

    s = int(np.argmax((result.gt > 0).sum(axis=(1, 2))))
    gray = window_percentile(result.image[s])
    rgb = np.repeat(gray[..., None], 3, axis=-1)
    maps = [result.gt] + [m.labels for m in result.methods.values()]
    palette = random_colors(max(int(m[s].max()) for m in maps) + 1)  # one colour per label
    panels = [rgb]
    for labels in maps:
        masks, ids = label_instances(labels[s])
        panels.append(
            draw_overlay(
                rgb,
                masks,
                labels=[str(i) for i in ids],
                colors=[palette[i] for i in ids],
                show_scores=False,
            )
        )
    return np.concatenate(panels, axis=1)


# ----------------------------------------------------------------------------- report
def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _ranked(results: Sequence[CaseResult], method: str) -> list[CaseResult]:
    """Results with the method, best mean Dice first (NaN last)."""
    have = [r for r in results if method in r.methods]
    return sorted(have, key=lambda r: -np.nan_to_num(r.methods[method].scores.mean_dice, nan=-1))


def report_markdown(
    results: Sequence[CaseResult], summary: dict[str, Any], images: dict[str, str]
) -> str:
    """REPORT.md text: method table, per source, per level, plots and definitions."""
    methods = summary["methods"]
    lines = [
        "# SpineSeg evaluation",
        "",
        f"Data: `{summary.get('data', '?')}`"
        + (
            f" (split `{summary['split']}`, subset `{summary.get('subset') or 'val'}`)"
            if summary.get("split")
            else ""
        )
        + f", {summary['volumes']} volumes.",
        "",
    ]
    if summary.get("weights"):
        lines += [f"Model weights: `{summary['weights']}`.", ""]
    if summary.get("operating_confidence") is not None:
        lines += [
            f"Label maps (Dice, recall, false bodies) use the detections scoring >= "
            f"{summary['operating_confidence']:g}; slice AP ranks every detection scoring >= "
            f"{summary.get('ap_min_confidence', 0):g}.",
            "",
        ]
    lines += [
        "| method | mean Dice | recall (Dice>0.5) | false bodies / vol | mAP@0.5 | "
        "mAP@[.5:.95] | pooled AP@0.5 | s / vol |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in methods.items():
        lines.append(
            f"| {name} | {_fmt(m['mean_dice'])} | {_fmt(m['recall'])} | "
            f"{_fmt(m['false_bodies_per_volume'], 2)} | {_fmt(m['mAP50'])} | "
            f"{_fmt(m['mAP50_95'])} | {_fmt(m['pooled_AP50'])} | "
            f"{_fmt(m['seconds_per_volume'], 2)} |"
        )
    named = {k: m for k, m in methods.items() if "named_right" in m}
    if named:
        lines += [
            "",
            "## Level names",
            "",
            "| method | bodies named right | volumes fully named | volumes with a name "
            "marked unsure | fully named, of volumes with every name sure | fully named, of "
            "volumes with a name unsure |",
            "|---|---|---|---|---|---|",
        ]
        for name, m in named.items():
            lines.append(
                f"| {name} | {_fmt(m['named_right'])} | {_fmt(m['volumes_fully_named'])} | "
                f"{_fmt(m.get('volumes_names_unsure'))} | {_fmt(m.get('fully_named_when_sure'))}"
                f" | {_fmt(m.get('fully_named_when_unsure'))} |"
            )
    lines += [
        "",
        "## Per source (mean Dice per volume)",
        "",
        "| source | volumes | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    sources = sorted({s for m in methods.values() for s in m["per_source"]})
    for src in sources:
        first = next(m["per_source"][src] for m in methods.values() if src in m["per_source"])
        cells = [_fmt(m["per_source"].get(src, {}).get("mean_dice")) for m in methods.values()]
        lines.append(f"| {src} | {first['volumes']} | " + " | ".join(cells) + " |")
    levels = list(dict.fromkeys(lv for m in methods.values() for lv in m["per_level"]))
    if levels:
        lines += [
            "",
            "## Per level (mean Dice / recall)",
            "",
            "| level | bodies | " + " | ".join(methods) + " |",
            "|---|---|" + "---|" * len(methods),
        ]
        for lv in levels:
            first = next(m["per_level"][lv] for m in methods.values() if lv in m["per_level"])
            cells = [
                f"{_fmt(m['per_level'][lv]['mean_dice'])} / {_fmt(m['per_level'][lv]['recall'])}"
                if lv in m["per_level"]
                else "n/a"
                for m in methods.values()
            ]
            lines.append(f"| {lv} | {first['bodies']} | " + " | ".join(cells) + " |")
    lines += ["", "## Plots", ""]
    for key, title in (
        ("pr", "Precision-recall (slices pooled, IoU 0.5)"),
        ("per_body", "Dice per body"),
        ("per_source", "Dice per source"),
    ):
        if key in images:
            lines += [f"### {title}", "", f"![{title}]({images[key]})", ""]
    for key in ("best", "worst"):
        if key not in images:
            continue
        lines += [
            f"### {images[key + ':title']}",
            "",
            "Left to right: image, ground truth, " + ", ".join(methods) + ".",
            "",
            f"![{key}]({images[key]})",
            "",
        ]
    lines += [
        "## Definitions",
        "",
        "- Each ground-truth body is matched to the predicted body that overlaps it most; "
        "its Dice is 2|G∩P|/(|G|+|P|) (0 if nothing overlaps). Mean Dice per volume "
        "averages its bodies; recall counts bodies with Dice > 0.5; a false body is a "
        "predicted body with Dice ≤ 0.5 against every ground-truth body.",
        "- mAP@0.5 and mAP@[.5:.95]: mask AP per slice (Matterport's all-point envelope, "
        "mrcnn.metrics), averaged over the slices that contain a ground-truth body. "
        "Pooled AP@0.5 ranks all detections of all those slices together, as COCO does "
        "(COCO also samples 101 recall points; see tests/spine/test_cocoeval.py).",
        "- Level names (where the data name their levels): a body is named right when it is "
        "found and its name is its true level; a volume is fully named when every labelled "
        "body is. A volume has a name marked unsure when the page marks one of its names so "
        "(name confidence below spine.pipeline.UNSURE_NAME): the last two columns say how far "
        "a user can trust names shown as sure.",
        "- The baseline (spine.baseline) is threshold + connected components, no "
        "learning; its detections are scored by their extent (area / box area).",
        "",
    ]
    if summary.get("deformed"):
        lines += report_lines(summary["deformed"])
    cited = [CITATIONS[s] for s in sources if s in CITATIONS]
    if cited:
        lines += ["## Data sources", ""] + [f"- {c}" for c in cited] + [""]
    return "\n".join(lines)


def write_report(results: Sequence[CaseResult], summary: dict[str, Any], out: Path) -> Path:
    """Draw the plots and overlays into out/ and write out/REPORT.md (all atomically)."""
    images: dict[str, str] = {}
    if not results or not summary["methods"]:
        return write_bytes_atomic(out / "REPORT.md", report_markdown(results, summary, images))
    write_bytes_atomic(out / "pr_curve.png", figure_png(plot_pr_curves(results, summary)))
    images["pr"] = "pr_curve.png"
    write_bytes_atomic(out / "dice_per_body.png", figure_png(plot_dice_per_body(results)))
    images["per_body"] = "dice_per_body.png"
    write_bytes_atomic(out / "dice_per_source.png", figure_png(plot_dice_per_source(results)))
    images["per_source"] = "dice_per_source.png"
    primary = next(iter(summary["methods"]))
    ranked = _ranked(results, primary)
    picks = [("best", ranked[0])] + ([("worst", ranked[-1])] if len(ranked) > 1 else [])
    for tag, r in picks:
        fname = f"{tag}_{r.case.subject}.png"
        write_bytes_atomic(out / fname, image_png(overlay_panel(r)))
        images[tag] = fname
        images[f"{tag}:title"] = (
            f"{tag.capitalize()} volume ({primary}): {r.case.subject}, "
            f"mean Dice {_fmt(r.methods[primary].scores.mean_dice)}"
        )
    return write_bytes_atomic(out / "REPORT.md", report_markdown(results, summary, images))


# ----------------------------------------------------------------------------- PNG folders
def write_png_outputs(
    results: dict[str, FolderEvaluation], info: dict[str, Any], out_dir: Path
) -> dict[str, Any]:
    """metrics.json (summary per method), per_slice.json and REPORT.md in out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    summary = {**info, "methods": {m: r.summary() for m, r in results.items()}}
    write_bytes_atomic(out_dir / "metrics.json", json.dumps(summary, indent=1))
    rows = {m: [asdict(s) for s in r.slices] for m, r in results.items()}
    write_bytes_atomic(out_dir / "per_slice.json", json.dumps(rows))
    write_bytes_atomic(out_dir / "REPORT.md", png_report(summary))
    return summary


def png_report(summary: dict[str, Any]) -> str:
    """A Markdown table of the summary, methods side by side."""
    methods = list(summary["methods"])
    keys = [
        ("slices", "slices", "{:.0f}"), ("bodies", "labelled bodies", "{:.0f}"),
        ("body_dice", "body Dice", "{:.3f}"), ("recall", "found (recall)", "{:.3f}"),
        ("named_right", "named right (of all bodies)", "{:.3f}"),
        ("slices_fully_right", "slices fully right", "{:.3f}"),
        ("slices_names_unsure", "slices with a name marked unsure", "{:.3f}"),
        ("fully_right_when_sure", "fully right, of slices with every name sure", "{:.3f}"),
        ("fully_right_when_unsure", "fully right, of slices marked unsure", "{:.3f}"),
        ("s1_found", "S1 found", "{:.3f}"), ("t12_l5_found", "T12-L5 found", "{:.3f}"),
        ("t12_l5_named_of_found", "T12-L5 named right, of found", "{:.3f}"),
        ("false_per_slice", "false bodies per slice", "{:.2f}"),
        ("seconds_per_slice", "seconds per slice", "{:.2f}"),
    ]  # fmt: skip
    lines = [
        f"# {summary.get('data')} ({summary.get('subset')}, {summary.get('kind')})",
        "",
        f"Weights: {summary.get('weights')}; "
        f"operating point {summary.get('operating_confidence')}.",
        "",
        "| figure | " + " | ".join(methods) + " |",
        "|---|" + "---|" * len(methods),
    ]
    for key, label, fmt in keys:
        cells = []
        for m in methods:
            value = summary["methods"][m].get(key)
            cells.append("n/a" if value is None else fmt.format(value))
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    lines += ["", "Per level (model): bodies, Dice, found, named right", ""]
    if "model" in summary["methods"]:
        lines += ["| level | bodies | Dice | found | named |", "|---|---|---|---|---|"]
        for level, row in summary["methods"]["model"]["per_level"].items():
            lines.append(
                f"| {level} | {row['bodies']} | {row['dice']:.3f} | {row['found']:.3f} | "
                f"{row['named']:.3f} |"
            )
    if summary.get("deformed"):
        lines += report_lines(summary["deformed"])
    return "\n".join(lines) + "\n"
