"""Drawing detections: numpy/cv2 overlays (for the app) and matplotlib figures (for reports).

draw_overlay returns an RGB uint8 array and needs only numpy and cv2. The figure helpers
build matplotlib Figures on the Agg canvas without pyplot, so nothing is ever shown and no
global figure state leaks; save them with fig.savefig(path).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from mrcnn.utils import extract_bboxes

Color = tuple[float, float, float]


def random_colors(n: int, bright: bool = True, seed: int = 0) -> list[Color]:
    """n distinct RGB colours in [0, 1]: evenly spaced hues, shuffled with a fixed seed."""
    brightness = 1.0 if bright else 0.7
    colors = [colorsys.hsv_to_rgb(i / max(n, 1), 1.0, brightness) for i in range(n)]
    order = np.random.default_rng(seed).permutation(n)
    return [colors[i] for i in order]


def apply_mask(
    image: np.ndarray, mask: np.ndarray, color: Sequence[float], alpha: float = 0.5
) -> np.ndarray:
    """Blend color (RGB in [0, 1]) into image [H, W, 3] where mask [H, W] is set.

    Returns a new array of the image's dtype; pixels outside the mask are unchanged.
    """
    tint = np.asarray(color, dtype=np.float64) * 255.0
    blended = image * (1 - alpha) + alpha * tint  # [H, W, 3]
    if np.issubdtype(image.dtype, np.integer):
        blended = np.clip(np.round(blended), 0, 255)
    return np.where(np.asarray(mask, dtype=bool)[..., None], blended, image).astype(image.dtype)


def draw_overlay(
    image: np.ndarray,
    masks: np.ndarray,
    boxes: np.ndarray | None = None,
    labels: Sequence[str] | None = None,
    scores: Sequence[float] | None = None,
    colors: Sequence[Sequence[float]] | None = None,
    alpha: float = 0.45,
    show_masks: bool = True,
    show_outlines: bool = True,
    show_boxes: bool = False,
    show_scores: bool = True,
) -> np.ndarray:
    """Instances drawn over an image: tinted masks, outlines, boxes and "label score" text.

    image: [H, W] or [H, W, 3] (any numeric dtype; cast to uint8); masks: bool [H, W, N];
    boxes: [N, (y1, x1, y2, x2)] pixels (from the masks when None); labels: N strings;
    scores: [N]; colors: N RGB colours in [0, 1] (or 0-255). Returns uint8 RGB [H, W, 3].
    Text is drawn when labels are given, or when scores are given and show_scores.
    """
    overlay = _as_rgb_uint8(image)
    masks = np.asarray(masks, dtype=bool).reshape(overlay.shape[:2] + (-1,))
    count = masks.shape[-1]
    colors = _normalise_colors(colors, count)
    if boxes is None:
        boxes = extract_bboxes(masks)
    for i in range(count):
        if show_masks:
            overlay = apply_mask(overlay, masks[..., i], colors[i], alpha)
        if show_outlines:
            _draw_outline(overlay, masks[..., i], colors[i])
        if show_boxes:
            y1, x1, y2, x2 = (int(v) for v in boxes[i][:4])
            cv2.rectangle(overlay, (x1, y1), (x2 - 1, y2 - 1), _to_255(colors[i]), 1)
        text = _caption(i, labels, scores if show_scores else None)
        if text:
            _draw_text(overlay, text, boxes[i], colors[i])
    return overlay


def _as_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """A writable RGB uint8 copy of a grey or RGB(A) image."""
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[..., None]
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, axis=-1)
    image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(image).copy()


def _normalise_colors(colors: Sequence[Sequence[float]] | None, count: int) -> list[Color]:
    """Colours in [0, 1]; default random_colors; 0-255 colours are rescaled."""
    if colors is None:
        return random_colors(count)
    array = np.asarray(colors, dtype=np.float64).reshape(-1, 3)
    if array.max(initial=0) > 1:
        array = array / 255.0
    return [tuple(c) for c in array]


def _to_255(color: Sequence[float]) -> tuple[int, int, int]:
    return tuple(int(round(c * 255)) for c in color)


def _draw_outline(image: np.ndarray, mask: np.ndarray, color: Sequence[float]) -> None:
    """Draw the mask's outer and hole contours (1 px, full colour) in place."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(image, contours, -1, _to_255(color), 1)


def _caption(i: int, labels: Sequence[str] | None, scores: Sequence[float] | None) -> str:
    """'label 0.93', 'label' or '0.93' for instance i ('' when there is nothing to say)."""
    parts = []
    if labels is not None:
        parts.append(str(labels[i]))
    if scores is not None:
        parts.append(f"{float(scores[i]):.2f}")
    return " ".join(parts)


def _draw_text(image: np.ndarray, text: str, box: Sequence[int], color: Sequence[float]) -> None:
    """Write text above the box's top-left corner (inside the image), on a dark backing."""
    scale = max(0.3, min(image.shape[:2]) / 700)
    (width, height), baseline = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    x = int(np.clip(box[1], 0, max(image.shape[1] - width, 0)))
    y = int(np.clip(box[0] - 2, height + 1, image.shape[0] - baseline - 1))
    cv2.rectangle(image, (x, y - height - 1), (x + width, y + baseline), (0, 0, 0), -1)
    cv2.putText(
        image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, _to_255(color), 1, cv2.LINE_AA
    )


# ================================================================== matplotlib figures


def _new_figure(figsize: tuple[float, float]) -> Any:
    """A Figure on an Agg canvas, independent of pyplot (never shown)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def display_instances(
    image: np.ndarray,
    boxes: np.ndarray,
    masks: np.ndarray,
    class_ids: np.ndarray,
    class_names: Sequence[str],
    scores: np.ndarray | None = None,
    title: str = "",
    figsize: tuple[float, float] = (16, 16),
    show_mask: bool = True,
    show_bbox: bool = True,
    colors: Sequence[Sequence[float]] | None = None,
    captions: Sequence[str] | None = None,
) -> Any:
    """Matterport's display_instances as a matplotlib Figure (masks, dashed boxes, captions).

    boxes: [N, (y1, x1, y2, x2)]; masks: bool [H, W, N]; class_ids: [N] into class_names.
    """
    from matplotlib import patches

    count = len(boxes)
    colors = _normalise_colors(colors, count)
    fig = _new_figure(figsize)
    ax = fig.add_subplot(1, 1, 1)
    overlay = draw_overlay(
        image, masks[..., :count], boxes, colors=colors, alpha=0.5, show_masks=show_mask,
        show_outlines=show_mask,
    )  # fmt: skip
    ax.imshow(overlay)
    height, width = overlay.shape[:2]
    ax.set_ylim(height + 10, -10)
    ax.set_xlim(-10, width + 10)
    ax.axis("off")
    ax.set_title(title)
    for i in range(count):
        y1, x1, y2, x2 = boxes[i][:4]
        if show_bbox:
            ax.add_patch(
                patches.Rectangle(
                    (x1, y1), x2 - x1, y2 - y1, linewidth=2, alpha=0.7, linestyle="dashed",
                    edgecolor=colors[i], facecolor="none",
                )
            )  # fmt: skip
        if captions is not None:
            caption = captions[i]
        else:
            caption = _caption(i, [class_names[c] for c in class_ids], scores)
        ax.text(x1, y1 + 8, caption, color="w", size=11, backgroundcolor="none")
    return fig


def plot_precision_recall(ap: float, precisions: np.ndarray, recalls: np.ndarray) -> Any:
    """The precision-recall curve of compute_ap as a Figure, titled with the AP."""
    fig = _new_figure((6, 5))
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(f"Precision-Recall Curve. AP@50 = {ap:.3f}")
    ax.set_xlabel("Recall")
    ax.set_ylabel("Precision")
    ax.set_ylim(0, 1.1)
    ax.set_xlim(0, 1.1)
    ax.plot(recalls, precisions)
    return fig
