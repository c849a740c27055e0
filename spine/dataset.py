"""SpineDataset: the mrcnn Dataset for vertebrae, from slice images + VIA JSON or from volumes.

One class, "vertebra" (id 1). Two ways to fill it:
- load_via_folder(folder): the paper's layout, a folder of slice images with via_region_data.json;
- load_volumes(pairs): (image NIfTI, label NIfTI) pairs; every sagittal slice with vertebrae
  becomes an image (windowed once per volume), each label value an instance. With
  neighbour_channels the image's R and B channels hold the slices on either side
  (spine.config.SpineConfig.NEIGHBOUR_CHANNELS); VIA images are used as stored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mrcnn.data import Dataset
from spine.errors import AnnotationError
from spine.via import VIA_FILENAME, read_via, regions_to_masks
from spine.volume import (
    label_instances,
    labelled_slices,
    load_label_map,
    load_volume,
    slice_channels,
    window_percentile,
)

logger = logging.getLogger(__name__)

SOURCE = "spine"
CLASS_NAME = "vertebra"
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")


class SpineDataset(Dataset):
    """Vertebra instances for Mask R-CNN (class 'vertebra', id 1)."""

    def __init__(self, class_map: dict | None = None, neighbour_channels: bool = False) -> None:
        super().__init__(class_map)
        self.add_class(SOURCE, 1, CLASS_NAME)
        self.neighbour_channels = neighbour_channels
        # Volume-backed images: name -> (windowed uint8 [S, H, W], labels [S, H, W]).
        self._stacks: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    # ------------------------------------------------------------------ VIA folders

    def load_via_folder(
        self, folder: str | Path, attribute: str | None = None, skip_empty: bool = False
    ) -> int:
        """Add the images of a folder annotated in VIA (via_region_data.json, or the folder's
        single *.json). Returns the number of images added. Missing image files, or grey images
        in a neighbour_channels dataset -> AnnotationError.
        """
        folder = Path(folder)
        json_path = folder / VIA_FILENAME
        if not json_path.is_file():
            candidates = sorted(folder.glob("*.json")) if folder.is_dir() else []
            if len(candidates) != 1:
                raise AnnotationError(
                    f"No {VIA_FILENAME} in {folder}; put the VIA export JSON there with that name"
                )
            json_path = candidates[0]
        images = read_via(json_path, attribute)
        missing = [im.filename for im in images if not (folder / im.filename).is_file()]
        if missing:
            raise AnnotationError(
                f"{len(missing)} image(s) named in {json_path.name} are not in {folder}: "
                f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}"
            )
        added = 0
        for im in images:
            if skip_empty and not im.regions:
                continue
            path = folder / im.filename
            with Image.open(path) as pil:
                width, height = pil.size
                single_channel = len(pil.getbands()) == 1
            if self.neighbour_channels and single_channel:
                # A grey image cannot carry the slices on either side: the model would be
                # trained on something other than what spine.pipeline shows it.
                raise AnnotationError(
                    f"{path} is a single-channel image, but this dataset needs the "
                    "neighbouring slices in R and B; write the images with "
                    "spine-prepare --neighbour-channels, or train from the volumes"
                )
            self.add_image(
                SOURCE, image_id=im.filename, path=str(path), width=width, height=height,
                regions=im.regions,
            )  # fmt: skip
            added += 1
        logger.info("%s: %d annotated images", folder, added)
        return added

    # ------------------------------------------------------------------ volumes

    def load_volumes(
        self,
        pairs: Iterable[Any],
        min_area: int = 0,
        empty_slices: int = 0,
        low: float = 0.5,
        high: float = 99.5,
    ) -> int:
        """Add every sagittal slice that contains vertebrae from (image, label map) NIfTI pairs
        (2-tuples of paths, or spine.prepare.VolumePair).

        min_area: instances smaller than this (pixels) are ignored (slices left without any
        are treated as empty). empty_slices: also add up to this many slices without vertebrae
        per volume (evenly spread). Windowing: percentiles low..high over the whole volume.
        Returns the number of images added.
        """
        added = 0
        for pair in pairs:
            image_path, label_path = (pair.image, pair.labels) if hasattr(pair, "labels") else pair
            volume = load_volume(image_path)
            labels = load_label_map(label_path, like=volume)
            if volume.name in self._stacks:
                raise ValueError(f"volume name {volume.name!r} added twice")
            stack = window_percentile(volume.data, low, high)  # [S, H, W] uint8
            dtype = np.uint8 if labels.max() < 256 else np.int32
            self._stacks[volume.name] = (stack, labels.astype(dtype))
            for s in labelled_slices(labels, min_area, empty_slices):
                self.add_image(
                    SOURCE, image_id=f"{volume.name}:{s}", path=str(image_path),
                    volume=volume.name, slice=s, width=stack.shape[2], height=stack.shape[1],
                    min_area=min_area, spacing=volume.spacing,
                )  # fmt: skip
                added += 1
        return added

    # ------------------------------------------------------------------ Dataset API

    def load_image(self, image_id: int) -> np.ndarray:
        """RGB uint8 [H, W, 3] (volume slices windowed per volume, with their neighbours in R
        and B if neighbour_channels; files as stored)."""
        info = self.image_info[image_id]
        if "volume" in info:
            stack = self._stacks[info["volume"]][0]
            return slice_channels(stack, info["slice"], self.neighbour_channels)
        return super().load_image(image_id)

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance masks bool [H, W, N] (top to bottom for volumes) and class ids int32 [N]."""
        info = self.image_info[image_id]
        if "volume" in info:
            labels = self._stacks[info["volume"]][1][info["slice"]]
            masks = label_instances(labels, info.get("min_area", 0))
        else:
            masks = regions_to_masks(info.get("regions", []), (info["height"], info["width"]))
            masks = masks[..., masks.reshape(-1, masks.shape[-1]).any(axis=0)]
        return masks, np.ones(masks.shape[-1], np.int32)

    def image_reference(self, image_id: int) -> str:
        """'file.nii.gz slice 7' for volume slices, the image path otherwise."""
        info = self.image_info[image_id]
        if "volume" in info:
            return f"{info['path']} slice {info['slice']}"
        return str(info["path"])
