"""Synthetic "shapes" dataset (squares, circles, triangles) for learning tests.

Each image has a noisy background of random colour and a few shapes of random size, colour
and position; the images are generated from a seed, so two datasets with different seeds are
disjoint samples of the same distribution.
"""

from __future__ import annotations

import cv2
import numpy as np

from mrcnn.data import Dataset

CLASSES = ("square", "circle", "triangle")


class ShapesDataset(Dataset):
    """count images of size x size with 1..max_shapes shapes each, reproducible from seed."""

    def load_shapes(self, count: int, size: int = 128, seed: int = 0, max_shapes: int = 4,
                    min_size: int = 12, max_size: int = 28) -> None:
        """Register count images; their content is drawn here, rendered in load_image."""
        for i, name in enumerate(CLASSES, start=1):
            self.add_class("shapes", i, name)
        rng = np.random.default_rng(seed)
        for image_id in range(count):
            bg = rng.integers(0, 256, 3)
            shapes = self._random_shapes(rng, size, max_shapes, min_size, max_size)
            self.add_image("shapes", image_id=image_id, path=None, width=size, height=size,
                           bg_color=bg, shapes=shapes, noise_seed=int(rng.integers(1 << 31)))

    @staticmethod
    def _random_shapes(rng: np.random.Generator, size: int, max_shapes: int, min_size: int,
                       max_size: int) -> list[tuple]:
        """1..max_shapes (name, colour, (cy, cx, r)) with little overlap between them."""
        shapes: list[tuple] = []
        for _ in range(int(rng.integers(1, max_shapes + 1))):
            for _attempt in range(20):
                r = int(rng.integers(min_size // 2, max_size // 2 + 1))
                cy = int(rng.integers(r + 2, size - r - 2))
                cx = int(rng.integers(r + 2, size - r - 2))
                # Keep the centres apart so every instance stays mostly visible.
                if all((cy - s[2][0]) ** 2 + (cx - s[2][1]) ** 2 > (r + s[2][2]) ** 2
                       for s in shapes):
                    name = CLASSES[int(rng.integers(0, len(CLASSES)))]
                    color = tuple(int(c) for c in rng.integers(0, 256, 3))
                    shapes.append((name, color, (cy, cx, r)))
                    break
        return shapes

    def load_image(self, image_id: int) -> np.ndarray:
        """RGB uint8 [H, W, 3]: noisy background plus the shapes."""
        info = self.image_info[image_id]
        rng = np.random.default_rng(info["noise_seed"])
        h, w = info["height"], info["width"]
        image = np.ones((h, w, 3), np.float32) * np.asarray(info["bg_color"], np.float32)
        image += rng.normal(0.0, 12.0, (h, w, 3))
        image = np.clip(image, 0, 255).astype(np.uint8)
        for name, color, dims in info["shapes"]:
            self._draw(image, name, dims, color)
        return image

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """bool [H, W, N] masks (occlusion by later shapes removed) and class ids [N]."""
        info = self.image_info[image_id]
        shapes = info["shapes"]
        h, w = info["height"], info["width"]
        masks = np.zeros((h, w, len(shapes)), np.uint8)
        for i, (name, _, dims) in enumerate(shapes):
            layer = np.zeros((h, w), np.uint8)
            self._draw(layer, name, dims, 1)
            masks[:, :, i] = layer
        # Later shapes are drawn on top: remove what they cover from earlier masks.
        occlusion = np.zeros((h, w), bool)
        for i in range(len(shapes) - 1, -1, -1):
            masks[:, :, i] = masks[:, :, i] * ~occlusion
            occlusion |= masks[:, :, i].astype(bool)
        class_ids = np.array([CLASSES.index(s[0]) + 1 for s in shapes], np.int32)
        return masks.astype(bool), class_ids

    @staticmethod
    def _draw(image: np.ndarray, name: str, dims: tuple[int, int, int], color) -> None:
        """Draw one filled shape centred at (cy, cx) with half-size r."""
        cy, cx, r = dims
        if name == "square":
            cv2.rectangle(image, (cx - r, cy - r), (cx + r, cy + r), color, -1)
        elif name == "circle":
            cv2.circle(image, (cx, cy), r, color, -1)
        else:
            points = np.array([[(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)]], np.int32)
            cv2.fillPoly(image, points, color)


def make_shapes(count: int, seed: int, size: int = 128, **kwargs) -> ShapesDataset:
    """A prepared ShapesDataset."""
    dataset = ShapesDataset()
    dataset.load_shapes(count, size=size, seed=seed, **kwargs)
    dataset.prepare()
    return dataset
