"""Training augmentation for an image and its instance masks, applied jointly (numpy + cv2).

SpineAugmenter(seed)(image uint8 [H, W, 3], masks bool [H, W, N]) -> (image, masks). The same
affine warp moves image (bilinear) and masks (nearest); intensity changes (gamma, contrast,
bias field, noise, blur, inversion for T1/STIR-like contrast) touch the image only.
It has no `to_deterministic`, so mrcnn.data calls it directly (imgaug does not run on NumPy 2).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class SpineAugmenter:
    """Random joint augmentation; each op fires with its probability (p_*)."""

    seed: int | None = None
    rotate_deg: float = 10.0
    scale: tuple[float, float] = (0.85, 1.15)
    shift: float = 0.05  # fraction of the image size
    flip: float = 0.0  # left-right flip swaps anterior/posterior: off (display layout is fixed)
    p_affine: float = 0.7
    p_gamma: float = 0.5
    p_contrast: float = 0.5
    p_bias: float = 0.4
    p_noise: float = 0.4
    p_blur: float = 0.2
    p_invert: float = 0.1

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    def __call__(self, image: np.ndarray, masks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """image uint8 [H, W, C], masks bool [H, W, N] -> augmented (same shapes and dtypes)."""
        if image.shape[:2] != masks.shape[:2]:
            raise ValueError(f"image {image.shape} and masks {masks.shape} differ in size")
        rng = self.rng
        if rng.random() < self.p_affine:
            image, masks = self.warp(image, masks, self.random_matrix(image.shape[:2]))
        return self.intensity(image), masks

    # ------------------------------------------------------------------ geometry

    def random_matrix(self, shape: tuple[int, int]) -> np.ndarray:
        """A random 2x3 affine (rotation, scale, shift, optional flip) about the image centre."""
        h, w = shape
        rng = self.rng
        angle = rng.uniform(-self.rotate_deg, self.rotate_deg)
        zoom = rng.uniform(*self.scale)
        mat = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, zoom)
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
