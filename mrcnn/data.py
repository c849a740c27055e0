"""Datasets: Matterport's Dataset base class (and, below it, the training batch sequence)."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


class Dataset:
    """Base class for datasets, with Matterport's API.

    Subclass it, call add_class() and add_image() while loading, then prepare(). Override
    load_image() (RGB uint8 [H, W, 3]) and load_mask() (bool [H, W, N], class_ids int32 [N]).

        class ShapesDataset(Dataset):
            def load_shapes(self, count):
                self.add_class("shapes", 1, "square")
                self.add_image("shapes", image_id=0, path=None, width=128, height=128)
    """

    def __init__(self, class_map: dict | None = None) -> None:
        self._image_ids: np.ndarray = np.array([], dtype=np.int64)
        self.image_info: list[dict[str, Any]] = []
        # Background is always the first class.
        self.class_info: list[dict[str, Any]] = [{"source": "", "id": 0, "name": "BG"}]
        self.source_class_ids: dict[str, list[int]] = {}

    def add_class(self, source: str, class_id: int, class_name: str) -> None:
        """Register a class of a source; a (source, id) pair already known is ignored."""
        assert "." not in source, "Source name cannot contain a dot"
        for info in self.class_info:
            if info["source"] == source and info["id"] == class_id:
                return
        self.class_info.append({"source": source, "id": class_id, "name": class_name})

    def add_image(self, source: str, image_id: Any, path: Any, **kwargs: Any) -> None:
        """Register an image; kwargs are kept in image_info for load_image/load_mask."""
        info = {"id": image_id, "source": source, "path": path}
        info.update(kwargs)
        self.image_info.append(info)

    def image_reference(self, image_id: int) -> str:
        """A human-readable reference to the image (its path by default)."""
        return str(self.image_info[image_id].get("path", ""))

    def prepare(self, class_map: dict | None = None) -> None:
        """Build the internal lookup tables. Call after adding classes and images."""

        def clean_name(name: str) -> str:
            return ",".join(name.split(",")[:1])

        self.num_classes = len(self.class_info)
        self.class_ids = np.arange(self.num_classes)
        self.class_names = [clean_name(c["name"]) for c in self.class_info]
        self.num_images = len(self.image_info)
        self._image_ids = np.arange(self.num_images)

        # Map "source.id" -> internal class id / image id.
        self.class_from_source_map = {
            f"{info['source']}.{info['id']}": cid
            for info, cid in zip(self.class_info, self.class_ids)
        }
        self.image_from_source_map = {
            f"{info['source']}.{info['id']}": iid
            for info, iid in zip(self.image_info, self._image_ids)
        }

        self.sources = sorted({c["source"] for c in self.class_info})
        self.source_class_ids = {}
        for source in self.sources:
            self.source_class_ids[source] = [
                i for i, info in enumerate(self.class_info) if i == 0 or source == info["source"]
            ]

    def map_source_class_id(self, source_class_id: str) -> int:
        """'coco.12' -> internal class id."""
        return self.class_from_source_map[source_class_id]

    def get_source_class_id(self, class_id: int, source: str) -> int:
        """Internal class id -> the id in its source dataset."""
        info = self.class_info[class_id]
        assert info["source"] == source
        return info["id"]

    @property
    def image_ids(self) -> np.ndarray:
        return self._image_ids

    def source_image_link(self, image_id: int) -> Any:
        """The path or URL of the image in its source."""
        return self.image_info[image_id]["path"]

    def load_image(self, image_id: int) -> np.ndarray:
        """The image as RGB uint8 [H, W, 3]; grayscale is repeated, alpha dropped."""
        import skimage.io

        image = skimage.io.imread(self.image_info[image_id]["path"])
        return to_rgb_uint8(image)

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance masks bool [H, W, N] and class ids int32 [N]. Override in subclasses.

        The base class has no annotations, so it returns no instances (with a warning).
        """
        logger.warning(
            "Dataset.load_mask is not overridden: %s has no instances",
            self.image_reference(image_id),
        )
        return np.empty([0, 0, 0], dtype=bool), np.empty([0], np.int32)


def to_rgb_uint8(image: np.ndarray) -> np.ndarray:
    """[H, W] or [H, W, 1|3|4] -> RGB [H, W, 3] uint8 (grayscale repeated, alpha dropped)."""
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    elif image.shape[-1] == 1:
        image = np.concatenate([image] * 3, axis=-1)
    elif image.shape[-1] == 4:
        image = image[..., :3]
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    return image
