"""Training augmentation for an image and its instance masks, applied jointly (numpy + cv2).

SpineAugmenter(seed)(image uint8 [H, W, 3], masks bool [H, W, N]) -> (image, masks). The same
affine warp (rotation, zoom, aspect change, shift; zooms > 1 cut bodies at the field's edges)
moves image (bilinear) and masks (nearest). Intensity changes touch the image only and are
the same for the three channels (a slice and its neighbours come from one scan): random
smooth non-monotonic intensity curves and inversion (T1/T2/STIR-like contrasts), gamma,
contrast, bias field, down-then-up sampling (thick slices, coarse matrices), ghosting
(motion along the phase direction), blur and Gaussian/Rician noise; a field of view that ends
part-way through the top or bottom body; each labelled body's own brightness and contrast
(marrow signal differs between bodies and scans: fatty, oedematous, sclerotic or dark-marrow
bodies), which uses the masks, as do the simulated deformities (spine.deformity: a
compression fracture of one body, a slipped level), applied first. `SpineAugmenter.heavy`
is the contrast-randomised recipe the bundled model is trained with (weights/README.md).
It has no `to_deterministic`, so mrcnn.data calls it directly (imgaug does not run on NumPy 2).
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace

import cv2
import numpy as np

from spine.deformity import deform, random_fracture, random_listhesis


@dataclass
class SpineAugmenter:
    """Random joint augmentation; each op fires with its probability (p_*)."""

    seed: int | None = None
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.85, 1.15)
    aspect: tuple[float, float] = (1.0, 1.0)  # width / height stretch range
    shift: float = 0.05  # fraction of the image size
    flip: float = 0.0  # left-right flip swaps anterior/posterior: off (display layout is fixed)
    p_affine: float = 0.7
    p_gamma: float = 0.5
    p_contrast: float = 0.5
    p_bias: float = 0.4
    p_noise: float = 0.4
    p_blur: float = 0.2
    p_invert: float = 0.1
    p_curve: float = 0.0  # random smooth (possibly non-monotonic) intensity curve
    p_resample: float = 0.0  # down-then-up sampling
    p_ghost: float = 0.0  # motion ghosts along one axis
    p_fov_cut: float = 0.0  # end the field of view through the top or bottom body
    p_body: float = 0.0  # each body's own intensity remap (remap_body_intensities)
    p_fracture: float = 0.0  # a compression fracture of one body (spine.deformity)
    p_listhesis: float = 0.0  # one body and the spine above slipped forward (spine.deformity)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def with_settings(self, settings: dict[str, str]) -> SpineAugmenter:
        """A copy with some settings changed, from text as a command line gives it:
        {"p_resample": "0.3", "scale": "0.8,1.2"}. Probabilities (p_*, flip) must lie in
        [0, 1]; ranges take two numbers; the seed is not a setting (spine-train --seed)."""
        names = sorted(f.name for f in fields(self) if f.name != "seed")
        changed: dict[str, float | tuple[float, ...]] = {}
        for name, text in settings.items():
            if name not in names:
                raise ValueError(f"unknown augmentation setting {name!r}: use one of {names}")
            try:
                numbers = tuple(float(part) for part in text.split(","))
            except ValueError:
                raise ValueError(f"augmentation setting {name}={text!r} is not a number") from None
            current = getattr(self, name)  # a range is a tuple, anything else one number
            width = len(current) if isinstance(current, tuple) else 1
            if len(numbers) != width:
                raise ValueError(
                    f"augmentation setting {name} takes {width} number(s), got {text!r}"
                )
            if (name.startswith("p_") or name == "flip") and not 0.0 <= numbers[0] <= 1.0:
                raise ValueError(f"augmentation setting {name} is a probability: {text!r}")
            changed[name] = numbers if isinstance(current, tuple) else numbers[0]
        return replace(self, **changed)

    @classmethod
    def heavy(cls, seed: int | None = None) -> SpineAugmenter:
        """Heavy geometry and contrast randomisation, so that the model cannot rely on one
        scanner's look (the recipe for training across sources)."""
        return cls(
            seed=seed, rotate_deg=20.0, scale=(0.7, 1.5), aspect=(0.8, 1.25), shift=0.08,
            p_affine=0.8, p_gamma=0.5, p_contrast=0.5, p_bias=0.5, p_noise=0.4, p_blur=0.25,
            p_invert=0.25, p_curve=0.5, p_resample=0.25, p_ghost=0.15, p_fov_cut=0.25,
        )  # fmt: skip

    def __call__(self, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image uint8 [H, W, C], masks bool [H, W, N] -> augmented (same shapes and dtypes)."""
        if image.shape[:2] != masks.shape[:2]:
            raise ValueError(f"image {image.shape} and masks {masks.shape} differ in size")
        rng = self.rng
        # Drawn only when enabled, so recipes without deformities keep their random stream.
        if self.p_fracture and rng.random() < self.p_fracture:
            image, masks = deform(image, masks, random_fracture(masks, rng))
        if self.p_listhesis and rng.random() < self.p_listhesis:
            image, masks = deform(image, masks, random_listhesis(masks, rng))
        if rng.random() < self.p_affine:
            image, masks = self.warp(image, masks, self.random_matrix(image.shape[:2]))
        if rng.random() < self.p_fov_cut:
            image, masks = cut_field_of_view(image, masks, rng)
        if rng.random() < self.p_body:
            image = remap_body_intensities(image, masks, rng)
        return self.intensity(image), masks

    # ------------------------------------------------------------------ geometry

    def random_matrix(self, shape: tuple[int, int]) -> np.ndarray:
        """A random 2x3 affine (rotation, scale, shift, optional flip) about the image centre."""
        h, w = shape
        rng = self.rng
        angle = rng.uniform(-self.rotate_deg, self.rotate_deg)
        zoom = rng.uniform(*self.scale)
        mat = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, zoom)
        stretch = rng.uniform(*self.aspect)
        if stretch != 1.0:  # x' = cx + s (x - cx) after the rotation: an aspect change
            mat[0] *= stretch
            mat[0, 2] += (1.0 - stretch) * (w - 1) / 2.0
        mat[:, 2] += rng.uniform(-self.shift, self.shift, 2) * (w, h)
        if rng.random() < self.flip:
            mat = np.array([[-1.0, 0, w - 1], [0, 1.0, 0]]) @ np.vstack([mat, [0, 0, 1]])
        return mat

    @staticmethod
    def warp(
        image: np.ndarray, masks: np.ndarray, matrix: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Apply one 2x3 affine to image (bilinear) and masks [H, W, N] (nearest), zero border."""
        h, w = image.shape[:2]
        out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=0)
        out = out.reshape(image.shape)
        warped = np.zeros_like(masks, dtype=bool)
        for start in range(0, masks.shape[-1], 256):  # cv2 channel limit
            part = masks[..., start : start + 256].astype(np.uint8)
            res = cv2.warpAffine(part, matrix, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
            warped[..., start : start + 256] = res.reshape(h, w, -1) > 0
        return out, warped

    # ------------------------------------------------------------------ intensity

    def intensity(self, image: np.ndarray) -> np.ndarray:
        """Random gamma, contrast, bias field, inversion, blur and noise on uint8 [H, W, C]."""
        rng = self.rng
        x = image.astype(np.float32) / 255.0
        h, w = x.shape[:2]
        if rng.random() < self.p_invert:
            body = x > 0.02  # keep air dark: invert tissue only, like a T1/STIR image
            x = np.where(body, 1.0 - x, x)
        if rng.random() < self.p_curve:
            x = random_intensity_curve(x, rng)
        if rng.random() < self.p_resample:
            x = down_up_sample(x, rng)
        if rng.random() < self.p_ghost:
            x = ghosting(x, rng)
        if rng.random() < self.p_gamma:
            x = x ** rng.uniform(0.7, 1.5)
        if rng.random() < self.p_contrast:
            x = x * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08)
        if rng.random() < self.p_bias:
            coarse = rng.normal(0.0, 0.25, (3, 3)).astype(np.float32)
            field = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
            x = x * np.exp(field)[..., None]
        if rng.random() < self.p_blur:
            x = cv2.GaussianBlur(x, (0, 0), rng.uniform(0.5, 1.5)).reshape(x.shape)
        if rng.random() < self.p_noise:
            sigma = rng.uniform(0.01, 0.05)
            n1 = rng.normal(0, sigma, (h, w, 1)).astype(np.float32)
            if rng.random() < 0.5:
                x = x + n1  # Gaussian
            else:  # Rician: magnitude of a complex signal with noise in both channels
                n2 = rng.normal(0, sigma, (h, w, 1)).astype(np.float32)
                x = np.sqrt((x + n1) ** 2 + n2**2)
        return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def cut_field_of_view(
    image: np.ndarray, masks: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """End the field of view at a random row through the top (or bottom) labelled structure.

    Scans often stop part-way through the highest or lowest body in view; the model must still
    outline the part it sees. image [H, W, C], masks bool [H, W, N]: rows beyond the cut become
    0 in both (the visible part of a cut body stays its label; a body wholly beyond is dropped
    later as empty). The cut lies in the first 20-70 % of the outermost instance's height, so
    it passes through that instance; images without instances are returned unchanged.
    """
    rows = np.flatnonzero(masks.any(axis=(1, 2))) if masks.shape[-1] else np.empty(0, int)
    if rows.size == 0:
        return image, masks
    image, masks = image.copy(), masks.copy()
    top_side = rng.random() < 0.5
    edge_row = rows[0] if top_side else rows[-1]
    outer = masks[edge_row].any(axis=0)  # instances reaching the outermost labelled row
    extent = np.flatnonzero(masks[:, :, outer].any(axis=(1, 2)))
    height = extent[-1] - extent[0] + 1
    depth = int(round(rng.uniform(0.2, 0.7) * height))
    if top_side:
        cut = extent[0] + depth  # rows [0, cut) are beyond the field of view
        image[:cut], masks[:cut] = 0, False
    else:
        cut = extent[-1] + 1 - depth  # rows [cut, H) are beyond it
        image[cut:], masks[cut:] = 0, False
    return image, masks


def remap_body_intensities(
    image: np.ndarray, masks: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Give each labelled body its own linear intensity change (SynthSeg-style per-region
    remapping, with the regions we have labels for): inside body k, x -> a_k (x - m_k) + m_k
    + b_k, with m_k the body's mean, contrast a_k in [0.6, 1.4] and brightness b_k in
    [-0.3, 0.3] (of the full range), so a body may end up brighter or darker than the discs
    and tissue around it, as marrow does across scans and diseases.

    image uint8 [H, W, C], masks bool [H, W, N] (same channels for all three slices: the
    neighbours' bodies lie where the centre slice's do, to within the slice spacing). Each
    body's weight is its mask blurred by ~1.5 px, so no new hard edge marks its outline.
    """
    if masks.shape[-1] == 0:
        return image
    x = image.astype(np.float32) / 255.0
    for k in range(masks.shape[-1]):
        inside = masks[:, :, k]
        if not inside.any():
            continue
        weight = cv2.GaussianBlur(inside.astype(np.float32), (0, 0), 1.5)[..., None]
        mean = x[inside].mean(axis=0)  # [C]
        remapped = rng.uniform(0.6, 1.4) * (x - mean) + mean + rng.uniform(-0.3, 0.3)
        x = weight * remapped + (1.0 - weight) * x
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


def random_intensity_curve(x: np.ndarray, rng: np.random.Generator, knots: int = 6) -> np.ndarray:
    """Map intensities in [0, 1] through a random smooth curve (SynthSeg-style contrast change).

    The curve passes through `knots` random levels at evenly spaced inputs, interpolated by a
    monotone-free cubic (np.interp on a fine grid, then smoothed), so tissues can swap their
    order of brightness (e.g. fat bright or dark, marrow darker than disc). Air (x < 0.02)
    stays dark as on any MR image.
    """
    grid = np.linspace(0.0, 1.0, 256)
    levels = np.sort(rng.uniform(0.0, 1.0, knots)) if rng.random() < 0.5 else rng.uniform(
        0.0, 1.0, knots
    )
    curve = np.interp(grid, np.linspace(0.0, 1.0, knots), levels)
    curve = np.convolve(np.pad(curve, 16, mode="edge"), np.ones(33) / 33.0, mode="valid")
    curve = (curve - curve.min()) / max(float(np.ptp(curve)), 1e-3)  # use the full range
    mapped = np.interp(x, grid, curve).astype(np.float32)
    return np.where(x < 0.02, x, mapped)


def down_up_sample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shrink [H, W, C] by 1.5-3x along one or both axes (area) and enlarge it back (linear):
    the blur of a coarse acquisition matrix or thick slices."""
    h, w = x.shape[:2]
    factor = rng.uniform(1.5, 3.0)
    axes = rng.integers(0, 3)  # 0 rows, 1 columns, 2 both
    fy = factor if axes in (0, 2) else 1.0
    fx = factor if axes in (1, 2) else 1.0
    small = cv2.resize(x, (max(8, int(w / fx)), max(8, int(h / fy))), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR).reshape(x.shape)


def ghosting(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Add 1-3 faint shifted copies of the image along one axis (periodic motion ghosts in the
    phase-encoding direction), [H, W, C] in [0, 1]."""
    axis = int(rng.integers(0, 2))
    out = x.copy()
    for k in range(1, int(rng.integers(1, 4)) + 1):
        shift = int(x.shape[axis] * rng.uniform(0.08, 0.3)) * k
        out = out + rng.uniform(0.03, 0.15) / k * np.roll(x, shift, axis=axis)
    return out
