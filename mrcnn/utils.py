"""Image and mask helpers with Matterport semantics: resize/pad, mini masks, image meta.

numpy only, except parse_image_meta_graph (keras.ops, used inside the model). Everything
that turns an image into model input (resize_image, resize_mask, mold_image) and back
(unmold_mask, the window in the image meta) lives here, so masks land where they came from.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from typing import Any

import numpy as np
import skimage.transform
from keras import ops

Padding = list[tuple[int, int]]

# ============================================================================== resizing


def resize(
    image: np.ndarray, output_shape: Sequence[int], order: int = 1, mode: str = "constant"
) -> np.ndarray:
    """skimage resize as Matterport calls it: no anti-aliasing, values kept in their range.

    image: [H, W] or [H, W, C]; output_shape: (h, w). Returns float64 [h, w(, C)].
    """
    return skimage.transform.resize(
        image,
        tuple(output_shape),
        order=order,
        mode=mode,
        cval=0,
        clip=True,
        preserve_range=True,
        anti_aliasing=False,
    )


def resize_image(
    image: np.ndarray,
    min_dim: int | None = None,
    max_dim: int | None = None,
    min_scale: float | None = None,
    mode: str = "square",
    *,
    rng: random.Random | np.random.Generator | None = None,
) -> tuple[np.ndarray, tuple[int, int, int, int], float, Padding, tuple | None]:
    """Resize (keeping the aspect ratio) and pad or crop an image, as Matterport does.

    image: [H, W, C]. Modes: "none" (unchanged), "square" (scale so the long side fits
    max_dim, pad to [max_dim, max_dim]), "pad64" (scale up to min_dim, pad each side to a
    multiple of 64), "crop" (scale up to min_dim, random [min_dim, min_dim] crop; rng
    makes it reproducible). Returns (image in its input dtype, window (y1, x1, y2, x2) of
    the image inside the output, scale, padding [(top, bottom), (left, right), (0, 0)],
    crop (y, x, h, w) or None).
    """
    image_dtype = image.dtype
    h, w = image.shape[:2]
    window = (0, 0, h, w)
    scale = 1.0
    padding: Padding = [(0, 0), (0, 0), (0, 0)]
    crop = None
    if mode == "none":
        return image, window, scale, padding, crop

    scale = _resize_scale(h, w, min_dim, max_dim, min_scale, mode)
    if scale != 1:
        image = resize(image, (round(h * scale), round(w * scale)))
    h, w = image.shape[:2]

    if mode == "square":
        padding = [_split_pad(max_dim - h), _split_pad(max_dim - w), (0, 0)]
    elif mode == "pad64":
        assert min_dim % 64 == 0, "Minimum dimension must be a multiple of 64"
        padding = [_split_pad(-h % 64), _split_pad(-w % 64), (0, 0)]
    elif mode == "crop":
        y, x = _randint(rng, h - min_dim), _randint(rng, w - min_dim)
        crop = (y, x, min_dim, min_dim)
        image = image[y : y + min_dim, x : x + min_dim]
        window = (0, 0, min_dim, min_dim)
    else:
        raise ValueError(f"Mode {mode} not supported")

    if mode != "crop":
        image = np.pad(image, padding[: image.ndim], mode="constant", constant_values=0)
        top, left = padding[0][0], padding[1][0]
        window = (top, left, h + top, w + left)
    return image.astype(image_dtype), window, scale, padding, crop


def _resize_scale(
    h: int, w: int, min_dim: int | None, max_dim: int | None, min_scale: float | None, mode: str
) -> float:
    """Matterport's scale: up to min_dim on the short side, never below min_scale, and in
    square mode never past max_dim on the long side."""
    scale = max(1, min_dim / min(h, w)) if min_dim else 1
    if min_scale and scale < min_scale:
        scale = min_scale
    if max_dim and mode == "square" and round(max(h, w) * scale) > max_dim:
        scale = max_dim / max(h, w)
    return scale


def _split_pad(total: int) -> tuple[int, int]:
    """Split padding between the two sides, the extra pixel going after."""
    return total // 2, total - total // 2


def _randint(rng: random.Random | np.random.Generator | None, high: int) -> int:
    """Uniform integer in [0, high] (inclusive, like random.randint)."""
    if isinstance(rng, np.random.Generator):
        return int(rng.integers(0, high + 1))
    return (rng or random).randint(0, high)


def resize_mask(
    mask: np.ndarray, scale: float, padding: Padding, crop: tuple | None = None
) -> np.ndarray:
    """Apply resize_image's scale and padding (or crop) to masks bool [H, W, N].

    Nearest neighbour on pixel centres (the grid skimage resizes the image on), so the mask
    stays aligned with the resized image; output size round(H * scale), round(W * scale).
    """
    h, w = mask.shape[:2]
    new_h, new_w = round(h * scale), round(w * scale)
    rows = _nearest_indices(h, new_h)
    cols = _nearest_indices(w, new_w)
    mask = mask[rows][:, cols]
    if crop is not None:
        y, x, ch, cw = crop
        return mask[y : y + ch, x : x + cw]
    return np.pad(mask, padding[: mask.ndim], mode="constant", constant_values=0)


def _nearest_indices(size: int, new_size: int) -> np.ndarray:
    """Source index of each output pixel when resampling size -> new_size (pixel centres)."""
    centres = (np.arange(new_size) + 0.5) * (size / new_size)
    return np.clip(np.floor(centres).astype(np.int64), 0, size - 1)


# ================================================================================ masks


def extract_bboxes(mask: np.ndarray) -> np.ndarray:
    """Tight boxes of masks bool [H, W, N] -> int32 [N, (y1, x1, y2, x2)], y2/x2 exclusive.

    Empty masks get (0, 0, 0, 0).
    """
    mask = np.asarray(mask, dtype=bool)
    rows = mask.any(axis=1)  # [H, N]
    cols = mask.any(axis=0)  # [W, N]
    present = rows.any(axis=0)  # [N]
    y1 = rows.argmax(axis=0)
    y2 = mask.shape[0] - rows[::-1].argmax(axis=0)
    x1 = cols.argmax(axis=0)
    x2 = mask.shape[1] - cols[::-1].argmax(axis=0)
    boxes = np.stack([y1, x1, y2, x2], axis=1) * present[:, None]
    return boxes.astype(np.int32)


def minimize_mask(bbox: np.ndarray, mask: np.ndarray, mini_shape: Sequence[int]) -> np.ndarray:
    """Crop each mask to its box and resize it to mini_shape (saves memory in training).

    bbox: [N, 4] int; mask: [H, W, N]. Returns bool [mini_h, mini_w, N].
    """
    mini_mask = np.zeros(tuple(mini_shape) + (mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        y1, x1, y2, x2 = bbox[i][:4]
        m = mask[y1:y2, x1:x2, i].astype(np.float32)
        if m.size == 0:
            raise ValueError("Invalid bounding box with area of zero")
        mini_mask[:, :, i] = resize(m, mini_shape, mode="edge") >= 0.5
    return mini_mask


def expand_mask(bbox: np.ndarray, mini_mask: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """Inverse of minimize_mask: paste each mini mask back into its box.

    bbox: [N, 4]; mini_mask: [h, w, N]; image_shape: (H, W, ...). Returns bool [H, W, N].
    """
    mask = np.zeros(tuple(image_shape[:2]) + (mini_mask.shape[-1],), dtype=bool)
    for i in range(mask.shape[-1]):
        mask[:, :, i] = unmold_mask(mini_mask[:, :, i].astype(np.float32), bbox[i], image_shape)
    return mask


def _linear_weights(n_out: int, start: int, lo: float, hi: float, n_in: int) -> np.ndarray:
    """[n_out, n_in] weights of linear interpolation from n_in equal cells spanning [lo, hi)
    to the pixels start .. start + n_out - 1 of the image.

    Pixel p has its centre at p + 0.5, which lies at c = (p + 0.5 - lo) * n_in / (hi - lo)
    - 0.5 in cell-centre coordinates (the half-pixel convention of cv2's INTER_LINEAR and
    skimage's order-1 resize, which resize the image); c is clamped to [0, n_in - 1], so the
    edge cells repeat. For whole-pixel lo and hi this is cv2.resize of the cells to hi - lo.
    """
    centres = (start + np.arange(n_out) + 0.5 - lo) * (n_in / (hi - lo)) - 0.5
    c = np.clip(centres, 0.0, n_in - 1.0)
    i0 = np.floor(c).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = (c - i0).astype(np.float32)
    weights = np.zeros((n_out, n_in), np.float32)
    rows = np.arange(n_out)
    weights[rows, i0] = 1.0 - frac
    weights[rows, i1] += frac  # i1 == i0 only where clamped, and there frac == 0
    return weights


def _paste(target: np.ndarray, mask: np.ndarray, bbox: Sequence[float]) -> None:
    """Threshold soft mask [h, w] spread over bbox (y1, x1, y2, x2) at 0.5 into bool target
    [H, W] (a view), dropping the parts outside the image.

    The box may have fractional edges (a box found in a resized image lands between pixels
    of the original): a pixel belongs to the box when its centre lies inside (rows
    ceil(y1 - 0.5) .. ceil(y2 - 0.5) - 1), and its value is the mask bilinearly sampled at
    that centre, so outlines keep the network's sub-pixel placement instead of moving by up
    to half a pixel per edge to whole-pixel box edges.
    Separable: soft [rows, cols] = Wy [rows, h] @ mask [h, w] @ Wx [cols, w]^T.
    """
    y1, x1, y2, x2 = (float(v) for v in bbox[:4])
    height, width = target.shape[:2]
    top, left = max(math.ceil(y1 - 0.5), 0), max(math.ceil(x1 - 0.5), 0)
    bottom, right = min(math.ceil(y2 - 0.5), height), min(math.ceil(x2 - 0.5), width)
    if y2 <= y1 or x2 <= x1 or bottom <= top or right <= left:
        return
    mask = np.asarray(mask, dtype=np.float32)
    rows_w = _linear_weights(bottom - top, top, y1, y2, mask.shape[0])
    cols_w = _linear_weights(right - left, left, x1, x2, mask.shape[1])
    target[top:bottom, left:right] = (rows_w @ mask) @ cols_w.T >= 0.5


def unmold_mask(mask: np.ndarray, bbox: Sequence[float], image_shape: Sequence[int]) -> np.ndarray:
    """A predicted soft mask [h, w] in (0, 1) -> bool [H, W] mask of the image (threshold 0.5).

    bbox: (y1, x1, y2, x2) box the mask covers, in pixel edges (whole or fractional, _paste);
    parts outside the image are dropped.
    """
    full_mask = np.zeros(tuple(image_shape[:2]), dtype=bool)
    _paste(full_mask, mask, bbox)
    return full_mask


def paste_masks(masks: np.ndarray, boxes: np.ndarray, image_shape: Sequence[int]) -> np.ndarray:
    """unmold_mask for many masks at once, straight into one output array (no per-mask
    full-image temporaries). masks: [N, h, w] soft; boxes: [N, (y1, x1, y2, x2)] pixel
    edges, whole or fractional.
    Returns bool [H, W, N].
    """
    out = np.zeros((*(int(v) for v in image_shape[:2]), len(masks)), dtype=bool)
    for k in range(len(masks)):
        _paste(out[:, :, k], masks[k], boxes[k])
    return out


# ================================================================= molding and image meta


def mold_image(images: np.ndarray, config: Any) -> np.ndarray:
    """RGB images (any leading dims, last axis channels) -> float32 minus MEAN_PIXEL."""
    return images.astype(np.float32) - np.asarray(config.MEAN_PIXEL, dtype=np.float32)


def unmold_image(normalized_images: np.ndarray, config: Any) -> np.ndarray:
    """Inverse of mold_image -> uint8 RGB (clipped to [0, 255])."""
    restored = normalized_images + np.asarray(config.MEAN_PIXEL, dtype=np.float32)
    return np.clip(np.round(restored), 0, 255).astype(np.uint8)


def compose_image_meta(
    image_id: int,
    original_image_shape: Sequence[int],
    image_shape: Sequence[int],
    window: Sequence[int],
    scale: float,
    active_class_ids: Sequence[int],
) -> np.ndarray:
    """Pack image attributes into one float vector [1 + 3 + 3 + 4 + 1 + NUM_CLASSES].

    window: (y1, x1, y2, x2) of the real image inside the (padded) model input.
    active_class_ids: 1 for classes of the image's source dataset, else 0.
    """
    return np.array(
        [image_id]
        + list(original_image_shape)
        + list(image_shape)
        + list(window)
        + [scale]
        + list(active_class_ids),
        dtype=np.float64,
    )


# Slices of the meta vector, shared by the numpy and keras.ops parsers.
_META_FIELDS = {
    "image_id": 0,
    "original_image_shape": slice(1, 4),
    "image_shape": slice(4, 7),
    "window": slice(7, 11),
    "scale": 11,
    "active_class_ids": slice(12, None),
}


def parse_image_meta(meta: np.ndarray) -> dict[str, np.ndarray]:
    """Unpack compose_image_meta vectors [..., META] (numpy) into a dict of typed arrays."""
    meta = np.asarray(meta)
    parts = {name: meta[..., index] for name, index in _META_FIELDS.items()}
    return {
        name: value.astype(np.float32 if name == "scale" else np.int32)
        for name, value in parts.items()
    }


def parse_image_meta_graph(meta: Any) -> dict[str, Any]:
    """keras.ops twin of parse_image_meta: [..., META] -> dict of float tensors."""
    meta = ops.convert_to_tensor(meta)
    return {name: meta[..., index] for name, index in _META_FIELDS.items()}
