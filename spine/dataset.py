"""SpineDataset: the mrcnn Dataset for vertebrae, from slice images + VIA JSON, PNG label
folders or volumes.

Two classes: "vertebra" (id 1, a body above the sacrum) and "S1" (id 2, the top sacral body),
so that level names can be counted up from S1 (spine.levels). Vertebrae a dataset does not
label (T12 and above in clinical_t1, S1 in the research volumes) are not background: each
such range becomes an ignore (crowd, class id -1) region, see unlabelled_regions. Three ways
to fill it:
- load_via_folder(folder): the paper's layout, a folder of slice images with via_region_data.json;
- load_png_folder(folder): images/ + masks/ PNGs (spine.png_folder), one slice each, shown to
  the network as a single-slice input (neighbours replicated, like an edge slice);
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
from mrcnn.utils import extract_bboxes
from spine.errors import AnnotationError
from spine.folders import VIA_FILENAME
from spine.model_input import ModelInput
from spine.via import read_via, regions_to_masks
from spine.volume import (
    label_instances,
    labelled_slices,
    load_label_map,
    load_volume,
)

logger = logging.getLogger(__name__)

SOURCE = "spine"
CLASS_NAME = "vertebra"
BODY_CLASS_ID = 1
S1_CLASS_NAME = "S1"
S1_CLASS_ID = 2
CROWD_CLASS_ID = -1


class SpineDataset(Dataset):
    """Vertebra instances for Mask R-CNN (class 'vertebra' id 1, and 'S1' id 2 when
    with_s1; crowd regions -1)."""

    def __init__(
        self,
        neighbour_channels: bool = False,
        with_s1: bool = False,
        ignore_unlabelled: bool = True,
    ) -> None:
        super().__init__()
        self.add_class(SOURCE, BODY_CLASS_ID, CLASS_NAME)
        if with_s1:
            self.add_class(SOURCE, S1_CLASS_ID, S1_CLASS_NAME)
        self.with_s1 = with_s1
        self.ignore_unlabelled = ignore_unlabelled
        self.neighbour_channels = neighbour_channels
        # What the network is shown (spine.model_input), the same as spine.pipeline builds.
        self.model_input = ModelInput(neighbour_channels=neighbour_channels)
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

    # ------------------------------------------------------------------ PNG label folders

    def load_png_folder(
        self, folder: str | Path, patients: Iterable[str] | None = None, repeat: int = 1
    ) -> int:
        """Add the slices of an images/ + masks/ folder (spine.png_folder), optionally only
        those of the given patients; repeat > 1 adds each slice that many times (weights a
        small source up). Returns the number of images added."""
        from spine.png_folder import read_png_folder

        wanted = None if patients is None else set(patients)
        added = 0
        for item in read_png_folder(folder):
            if wanted is not None and item.patient not in wanted:
                continue
            with Image.open(item.image_path) as pil:
                width, height = pil.size
            for copy in range(max(1, repeat)):
                self.add_image(
                    SOURCE, image_id=f"{item.name}#{copy}", path=str(item.image_path),
                    png=item, width=width, height=height,
                )  # fmt: skip
                added += 1
        logger.info("%s: %d labelled PNG slices", folder, added)
        return added

    # ------------------------------------------------------------------ volumes

    def load_volumes(
        self,
        pairs: Iterable[Any],
        min_area: int = 0,
        empty_slices: int = 0,
    ) -> int:
        """Add every sagittal slice that contains vertebrae from (image, label map) NIfTI pairs
        (2-tuples of paths, or spine.prepare.VolumePair).

        min_area: instances smaller than this (pixels) are ignored (slices left without any
        are treated as empty). empty_slices: also add up to this many slices without vertebrae
        per volume (evenly spread). Windowed once per volume by self.model_input.
        Returns the number of images added.
        """
        from spine.phantom import read_levels

        added = 0
        for pair in pairs:
            image_path, label_path = (pair.image, pair.labels) if hasattr(pair, "labels") else pair
            volume = load_volume(image_path)
            labels = load_label_map(label_path, like=volume)
            if volume.name in self._stacks:
                raise ValueError(f"volume name {volume.name!r} added twice")
            stack = self.model_input.stack(volume.data)  # [S, H, W] uint8
            dtype = np.uint8 if labels.max() < 256 else np.int32
            self._stacks[volume.name] = (stack, labels.astype(dtype))
            levels = read_levels(label_path) or []  # phantoms name their bodies
            for s in labelled_slices(labels, min_area, empty_slices):
                self.add_image(
                    SOURCE, image_id=f"{volume.name}:{s}", path=str(image_path),
                    volume=volume.name, slice=s, width=stack.shape[2], height=stack.shape[1],
                    min_area=min_area, spacing=volume.spacing, levels=levels,
                )  # fmt: skip
                added += 1
        return added

    # ------------------------------------------------------------------ Dataset API

    def load_image(self, image_id: int) -> np.ndarray:
        """RGB uint8 [H, W, 3] (volume slices windowed per volume, with their neighbours in R
        and B if neighbour_channels; files as stored)."""
        info = self.image_info[image_id]
        if "volume" in info:
            return self.model_input.image(self._stacks[info["volume"]][0], info["slice"])
        if "png" in info:  # one slice: its neighbours are itself (as at a volume's edge)
            # Windowed as spine.pipeline windows a one-slice volume of it.
            stack = self.model_input.stack(info["png"].load_image()[None].astype(np.float32))
            return self.model_input.image(stack, 0)
        return super().load_image(image_id)

    def load_mask(self, image_id: int) -> tuple[np.ndarray, np.ndarray]:
        """Instance masks bool [H, W, N] (top to bottom for volumes and PNG folders) and class
        ids int32 [N]: 1 body, 2 S1 (with_s1), -1 ignore regions over unlabelled vertebrae."""
        info = self.image_info[image_id]
        if "volume" in info:
            labels = self._stacks[info["volume"]][1][info["slice"]]
            masks, values = label_instances(labels, info.get("min_area", 0))
            named = info.get("levels")
            if named:  # phantoms: every body in view labelled, by level
                levels = [named[int(v) - 1] if int(v) <= len(named) else "" for v in values]
                above, below = False, "S1" not in named
            else:  # research volumes: a run of bodies ending at L5; above and below unknown
                levels = [""] * masks.shape[-1]
                above, below = True, True
        elif "png" in info:
            bodies = info["png"].load_bodies()
            masks, _ = label_instances(bodies.labels)
            levels, above, below = bodies.levels, bodies.unlabelled_above, bodies.unlabelled_below
        else:
            masks = regions_to_masks(info.get("regions", []), (info["height"], info["width"]))
            masks = masks[..., masks.reshape(-1, masks.shape[-1]).any(axis=0)]
            return masks, np.ones(masks.shape[-1], np.int32)
        class_ids = np.array(
            [S1_CLASS_ID if self.with_s1 and lv == "S1" else BODY_CLASS_ID for lv in levels],
            np.int32,
        )
        if self.ignore_unlabelled and masks.shape[-1]:
            crowd = unlabelled_regions(masks, above, below)
            masks = np.concatenate([masks, crowd], axis=-1)
            class_ids = np.concatenate([class_ids, np.full(crowd.shape[-1], CROWD_CLASS_ID)])
        return masks, class_ids.astype(np.int32)

    def image_reference(self, image_id: int) -> str:
        """'file.nii.gz slice 7' for volume slices, the image path otherwise."""
        info = self.image_info[image_id]
        if "volume" in info:
            return f"{info['path']} slice {info['slice']}"
        return str(info["path"])


def unlabelled_regions(
    masks: np.ndarray, above: bool, below: bool, below_heights: float = 1.5
) -> np.ndarray:
    """Ignore regions (bool [H, W, k], k <= 2) over the vertebrae a dataset leaves unlabelled.

    masks: the labelled bodies bool [H, W, N], top to bottom. Above: a box from the image top
    down to the top body, as wide as the two highest bodies plus half a body width each side
    (the spine continues up, tilting little over one or two levels). Below: a box from the
    lowest body's bottom edge down by below_heights body heights (S1, under L5), as wide as
    the two lowest bodies plus the same margin. Anchors and ROIs touching these boxes are
    never trained as background (Matterport's crowd rule in mrcnn.data / mrcnn.targets).
    """
    height, width = masks.shape[:2]
    boxes = extract_bboxes(masks)  # [N, (y1, x1, y2, x2)], y2/x2 exclusive
    body_h = float(np.median(boxes[:, 2] - boxes[:, 0]))
    body_w = float(np.median(boxes[:, 3] - boxes[:, 1]))
    regions = []

    def box_mask(y1: float, y2: float, group: np.ndarray) -> None:
        x1 = int(max(0, group[:, 1].min() - body_w / 2))
        x2 = int(min(width, group[:, 3].max() + body_w / 2))
        y1, y2 = int(max(0, y1)), int(min(height, y2))
        if y2 - y1 >= 2 and x2 - x1 >= 2:
            region = np.zeros((height, width), bool)
            region[y1:y2, x1:x2] = True
            regions.append(region)

    order = np.argsort((boxes[:, 0] + boxes[:, 2]) / 2.0, kind="stable")
    top, bottom = boxes[order[:2]], boxes[order[-2:]]
    if above:
        box_mask(0, top[0, 0], top)
    if below:
        y = bottom[-1, 2]
        box_mask(y, y + below_heights * body_h, bottom)
    if not regions:
        return np.zeros((height, width, 0), bool)
    return np.stack(regions, axis=-1)

