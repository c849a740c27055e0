"""Mask R-CNN configuration with Matterport's field names and defaults.

Subclass Config (or load a TOML file from configs/) and override what differs. Derived
fields (BATCH_SIZE, IMAGE_SHAPE, IMAGE_META_SIZE) are recomputed on construction, so a
Config is always self-consistent.
"""

from __future__ import annotations

import difflib
import logging
import tomllib
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

# Fields computed from the others; never read from or written to TOML.
DERIVED_FIELDS = ("BATCH_SIZE", "IMAGE_SHAPE", "IMAGE_META_SIZE")
# GPU_COUNT was removed: there is no multi-device path behind it (BATCH_SIZE is simply
# IMAGES_PER_GPU). TOML files written before (bundled configs of old checkouts, the config a
# running training saved beside its checkpoints) still carry gpu_count; from_toml drops that
# one legacy key with a warning, folding a count above 1 into IMAGES_PER_GPU so the batch
# stays the size it was. Anywhere else (Config(), replace(), overrides) it is unknown.
LEGACY_GPU_COUNT = "GPU_COUNT"

BACKBONES = ("resnet18", "resnet34", "resnet50", "resnet101")
DETECTION_SCORES = ("class", "foreground")  # Config.DETECTION_SCORE


class Config:
    """Base configuration. Values follow Matterport's mrcnn/config.py."""

    # Name of the configuration (used in log folder names).
    NAME: str | None = None

    # Images per training/inference batch (Matterport's name; one device): BATCH_SIZE.
    IMAGES_PER_GPU = 2

    STEPS_PER_EPOCH = 1000
    VALIDATION_STEPS = 50

    # Backbone trunk: resnet50 / resnet101 (bottleneck blocks, Matterport layer names) or
    # resnet18 / resnet34 (basic blocks; the light, fast option).
    BACKBONE = "resnet101"
    # Multiplies the channel widths of the trunk (1.0 = standard ResNet). < 1 for light models.
    BACKBONE_WIDTH = 1.0
    COMPUTE_BACKBONE_SHAPE = None
    # Strides of the FPN levels P2..P6 relative to the input image.
    BACKBONE_STRIDES = [4, 8, 16, 32, 64]

    # Width of the fully connected layers of the classifier head.
    FPN_CLASSIF_FC_LAYERS_SIZE = 1024
    # Channels of the FPN top-down pyramid (and of everything built on it).
    TOP_DOWN_PYRAMID_SIZE = 256
    # Channels of the four 3x3 convolutions in the mask head.
    MASK_HEAD_CONV_SIZE = 256

    # Number of classes including background.
    NUM_CLASSES = 1

    # Anchor side lengths in pixels, one per pyramid level, and width/height ratios.
    RPN_ANCHOR_SCALES = (32, 64, 128, 256, 512)
    RPN_ANCHOR_RATIOS = [0.5, 1, 2]
    RPN_ANCHOR_STRIDE = 1
    RPN_NMS_THRESHOLD = 0.7
    RPN_TRAIN_ANCHORS_PER_IMAGE = 256
    # Channels of the RPN's shared 3x3 conv. None = 2 x TOP_DOWN_PYRAMID_SIZE, Matterport's
    # layout (512 for FPN 256), which its COCO weights need. torchvision uses the FPN width
    # (256), which halves the RPN's work: 26 -> 13 GMAC for ResNet-50 at 512 px.
    RPN_CONV_SHARED_CHANNELS = None
    PRE_NMS_LIMIT = 6000
    POST_NMS_ROIS_TRAINING = 2000
    POST_NMS_ROIS_INFERENCE = 1000

    # Store instance masks cropped to their box at this size to save memory.
    USE_MINI_MASK = True
    MINI_MASK_SHAPE = (56, 56)

    # "none" | "square" | "pad64" | "crop" (Matterport's modes).
    IMAGE_RESIZE_MODE = "square"
    IMAGE_MIN_DIM = 800
    IMAGE_MAX_DIM = 1024
    IMAGE_MIN_SCALE = 0
    IMAGE_CHANNEL_COUNT = 3

    # RGB mean subtracted from input images.
    MEAN_PIXEL = np.array([123.7, 116.8, 103.9])

    TRAIN_ROIS_PER_IMAGE = 200
    ROI_POSITIVE_RATIO = 0.33

    POOL_SIZE = 7
    MASK_POOL_SIZE = 14
    MASK_SHAPE = [28, 28]

    MAX_GT_INSTANCES = 100

    RPN_BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])
    BBOX_STD_DEV = np.array([0.1, 0.1, 0.2, 0.2])

    DETECTION_MAX_INSTANCES = 100
    DETECTION_MIN_CONFIDENCE = 0.7
    DETECTION_NMS_THRESHOLD = 0.3
    # What a detection's score is (the number DETECTION_MIN_CONFIDENCE keeps or drops, NMS
    # and AP rank): "class" (Matterport) the probability of the most probable class, the
    # background included, with NMS per class; "foreground" 1 - P(background), the class
    # being the most probable of the others, with NMS across classes. With classes that split
    # one kind of object (a vertebral body vs S1), "class" drops an object the classifier is
    # sure of but cannot place (P = 0.01 / 0.19 / 0.80 scores 0.80; "foreground" 0.99).
    # Either way detect() also returns every detection's class probabilities (class_probs).
    DETECTION_SCORE = "class"

    LEARNING_RATE = 0.001
    LEARNING_MOMENTUM = 0.9
    WEIGHT_DECAY = 0.0001

    LOSS_WEIGHTS = {
        "rpn_class_loss": 1.0,
        "rpn_bbox_loss": 1.0,
        "mrcnn_class_loss": 1.0,
        "mrcnn_bbox_loss": 1.0,
        "mrcnn_mask_loss": 1.0,
    }

    # Optimizer: "sgd" (Matterport: SGD with LEARNING_MOMENTUM), "adam" or "adamw" (Adam with
    # decoupled weight decay WEIGHT_DECAY instead of the L2 loss term). Adam at ~1e-3 trains
    # much faster from scratch; SGD stays the default for Matterport-style fine-tuning.
    OPTIMIZER = "sgd"
    # Linear learning-rate warm-up over the first N steps of each train() call (0 = none).
    # Protects a freshly initialised RPN from dying (dead ReLUs) at higher learning rates.
    LEARNING_RATE_WARMUP_STEPS = 0
    # Add the ground-truth boxes to the RPN proposals before sampling the heads' training ROIs
    # (as Detectron and torchvision do; Matterport does not). Early in training the proposals
    # are poor, and without this the heads see few or no positive ROIs.
    ADD_GT_TO_PROPOSALS = True
    # Skip training images without instances (Matterport's behaviour) or train on them as
    # pure negatives (False): every anchor and ROI of such an image is background, which
    # teaches the model where objects end (e.g. the lateral slices past the last vertebra).
    SKIP_EMPTY_IMAGES = True

    USE_RPN_ROIS = True
    # Train BatchNorm layers? False freezes them (small batches make their statistics noisy).
    TRAIN_BN = False
    GRADIENT_CLIP_NORM = 5.0

    def __init__(self, **overrides: Any) -> None:
        check_fields(type(self), overrides)
        for key, value in overrides.items():
            setattr(self, key, value)
        self._derive()

    def _derive(self) -> None:
        """Recompute the derived fields from the primary ones."""
        self.BATCH_SIZE = self.IMAGES_PER_GPU
        self.MEAN_PIXEL = np.asarray(self.MEAN_PIXEL, dtype=np.float64)
        self.RPN_BBOX_STD_DEV = np.asarray(self.RPN_BBOX_STD_DEV, dtype=np.float64)
        self.BBOX_STD_DEV = np.asarray(self.BBOX_STD_DEV, dtype=np.float64)
        if self.IMAGE_RESIZE_MODE == "crop":
            self.IMAGE_SHAPE = np.array(
                [self.IMAGE_MIN_DIM, self.IMAGE_MIN_DIM, self.IMAGE_CHANNEL_COUNT]
            )
        else:
            self.IMAGE_SHAPE = np.array(
                [self.IMAGE_MAX_DIM, self.IMAGE_MAX_DIM, self.IMAGE_CHANNEL_COUNT]
            )
        # image_id(1) + original_image_shape(3) + image_shape(3) + window(4) + scale(1)
        # + active_class_ids(NUM_CLASSES)
        self.IMAGE_META_SIZE = 1 + 3 + 3 + 4 + 1 + self.NUM_CLASSES
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for settings the model cannot be built with."""
        if self.BACKBONE not in BACKBONES and not callable(self.BACKBONE):
            raise ValueError(f"BACKBONE must be one of {BACKBONES}, got {self.BACKBONE!r}")
        if self.NUM_CLASSES < 1:
            raise ValueError("NUM_CLASSES counts the background too: it must be >= 1")
        if self.IMAGE_RESIZE_MODE not in ("none", "square", "pad64", "crop"):
            raise ValueError(f"unknown IMAGE_RESIZE_MODE {self.IMAGE_RESIZE_MODE!r}")
        if self.DETECTION_SCORE not in DETECTION_SCORES:
            raise ValueError(
                f"DETECTION_SCORE must be one of {DETECTION_SCORES}, got {self.DETECTION_SCORE!r}"
            )
        if self.IMAGE_RESIZE_MODE in ("square", "crop") and self.IMAGE_MAX_DIM % 64:
            raise ValueError(
                "IMAGE_MAX_DIM must be divisible by 64 (2^6) so the FPN levels align; "
                f"got {self.IMAGE_MAX_DIM}"
            )
        if len(self.RPN_ANCHOR_SCALES) != len(self.BACKBONE_STRIDES):
            raise ValueError("RPN_ANCHOR_SCALES needs one scale per BACKBONE_STRIDES level")

    # ----------------------------------------------------------------------------- views
    def to_dict(self) -> dict[str, Any]:
        """All fields (primary and derived) as plain Python values."""
        return {key: _plain(getattr(self, key)) for key in _all_fields(self)}

    def display(self) -> str:
        """A readable table of every field; also printed, as Matterport's display() does."""
        lines = ["Configurations:"]
        for key, value in self.to_dict().items():
            lines.append(f"{key:30} {value}")
        text = "\n".join(lines)
        print(text)
        return text

    # ----------------------------------------------------------------------------- TOML
    def save_toml(self, path: str | Path) -> None:
        """Write the primary fields to a TOML file (derived fields are recomputed on load)."""
        import tomli_w

        data = {
            k: v for k, v in self.to_dict().items() if k not in DERIVED_FIELDS and v is not None
        }
        from mrcnn.atomic import write_bytes_atomic

        write_bytes_atomic(path, tomli_w.dumps(data))

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> Config:
        """Build a config from a TOML file of field = value pairs, then apply overrides.

        Keys may be written in any case (backbone or BACKBONE). Unknown keys are an error,
        so a typo never silently falls back to a default. A [schedule] table is skipped:
        it holds the training schedule, read by the training CLI (load_schedule).
        """
        with open(path, "rb") as f:
            data = tomllib.load(f)
        # A [schedule] table (epochs per stage, ...) belongs to the training scripts.
        data.pop("schedule", None)
        fields = {key.upper(): value for key, value in data.items()}
        _drop_legacy_gpu_count(cls, fields, path)
        fields.update({key.upper(): value for key, value in overrides.items()})
        check_fields(cls, fields, where=f"{path}: ")
        for tuple_field in ("RPN_ANCHOR_SCALES", "MINI_MASK_SHAPE"):
            if tuple_field in fields:
                fields[tuple_field] = tuple(fields[tuple_field])
        return cls(**fields)

    def replace(self, **overrides: Any) -> Config:
        """A copy of this config with some fields changed (keys in any case; an unknown or
        derived key is an error, as in from_toml)."""
        changes = {k.upper(): v for k, v in overrides.items()}
        check_fields(type(self), changes)
        fields = {k: v for k, v in self.to_dict().items() if k not in DERIVED_FIELDS}
        fields.update(changes)
        new = type(self).__new__(type(self))
        for key, value in fields.items():
            setattr(new, key, value)
        new._derive()
        return new


def check_fields(cls: type, keys: Any, where: str = "") -> None:
    """Raise ValueError unless every key is a primary field of the config class cls: the one
    check behind Config(), replace() and from_toml, so a typo never falls back to a default."""
    known = [k for k in _all_fields(cls) if k not in DERIVED_FIELDS]
    unknown = sorted(k for k in keys if k not in known)
    if not unknown:
        return
    hints = []
    for key in unknown:
        if key in DERIVED_FIELDS:
            hints.append(f"{key} (derived from the other fields; set those instead)")
            continue
        close = difflib.get_close_matches(key, known, n=1)
        hints.append(f"{key} (did you mean {close[0]}?)" if close else key)
    raise ValueError(f"{where}unknown config field(s): {', '.join(hints)}")


def _drop_legacy_gpu_count(cls: type, fields: dict[str, Any], path: str | Path) -> None:
    """Remove GPU_COUNT read from an older TOML file (see LEGACY_GPU_COUNT), keeping its
    batch size: IMAGES_PER_GPU x GPU_COUNT images per batch, as it was."""
    if LEGACY_GPU_COUNT not in fields:
        return
    count = fields.pop(LEGACY_GPU_COUNT)
    message = f"{path}: ignoring legacy gpu_count = {count} (GPU_COUNT was removed)"
    if isinstance(count, int) and count > 1:
        per_batch = int(fields.get("IMAGES_PER_GPU", cls.IMAGES_PER_GPU))
        fields["IMAGES_PER_GPU"] = per_batch * count
        message += f"; images_per_gpu = {per_batch * count} keeps its batch size"
    logger.warning(message)


def _all_fields(obj: Any) -> list[str]:
    """Upper-case attribute names of a config class or instance, in definition order."""
    names: list[str] = []
    classes = type(obj).__mro__ if not isinstance(obj, type) else obj.__mro__
    for klass in reversed(classes):
        for key in vars(klass):
            if key.isupper() and key not in names:
                names.append(key)
    if not isinstance(obj, type):
        for key in vars(obj):
            if key.isupper() and key not in names:
                names.append(key)
    return names


def _plain(value: Any) -> Any:
    """numpy arrays/scalars and tuples -> lists and Python scalars (for TOML and display)."""
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    return value


def load_schedule(path: str | Path) -> dict[str, Any]:
    """The [schedule] table of a config TOML file ({} if it has none)."""
    with open(path, "rb") as f:
        return dict(tomllib.load(f).get("schedule", {}))
