"""spine-train: the paper's training schedule (network heads first, then all layers).

    spine-train --data DIR [--config TOML] [--weights none|coco|imagenet|last|PATH]

DIR is either the paper's layout written by spine-prepare (DIR/train and DIR/val, each a
folder of slice images with via_region_data.json) or a folder of volumes (NAME.nii.gz +
NAME_vertebrae.nii.gz), which is split by subject exactly as spine-prepare splits it.
Every config field can be overridden with --set KEY=VALUE. A checkpoint is written after
every epoch, with the optimizer's state beside it; `--weights last` resumes the newest run
at the epoch where it stopped (its newest readable checkpoint), momenta, iteration count and
warm-up included. Every argument is checked before TensorFlow is loaded.
"""

from __future__ import annotations

import argparse
import ast
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spine import bundled
from spine.errors import MissingWeightsError, SpineInputError
from spine.folders import SPLIT_FILENAME, find_pairs, folder_kind, split_subjects

if TYPE_CHECKING:
    from spine.model_input import ModelInput

logger = logging.getLogger(__name__)

# Pretrained files you copy in yourself (COCO, ImageNet) go in the bundled weights folder
# (weights/ in a checkout; see its README): package data, never downloaded.
WEIGHTS_DIR = bundled.weights_dir()
COCO_WEIGHTS = WEIGHTS_DIR / "mask_rcnn_coco.h5"
# Matterport's COCO heads are for 81 classes: they are re-initialised for ours.
COCO_EXCLUDE = ["mrcnn_class_logits", "mrcnn_bbox_fc", "mrcnn_bbox", "mrcnn_mask"]


@dataclass
class Schedule:
    """Epoch counts per stage. Epoch numbers are cumulative, as in Matterport's train()."""

    heads_epochs: int = 20
    all_epochs: int = 20
    # Optional stage 3: all layers for a few more epochs at a tenth of the learning rate.
    finetune_epochs: int = 0

    def stages(self) -> list[tuple[str, int, float]]:
        """[(layers, last epoch of the stage, learning-rate factor)] in training order,
        empty stages dropped."""
        stages = []
        last = 0
        for layers, epochs, factor in (
            ("heads", self.heads_epochs, 1.0),
            ("all", self.all_epochs, 1.0),
            ("all", self.finetune_epochs, 0.1),
        ):
            if epochs > 0:
                last += epochs
                stages.append((layers, last, factor))
        return stages


def split_setting(pair: str, option: str, form: str) -> tuple[str, str]:
    """"NAME=VALUE" from the command line -> (NAME, VALUE), split at the first "="; a user
    error naming the option and the expected form otherwise."""
    if "=" not in pair:
        raise SpineInputError(f"{option} expects {form}, got {pair!r}")
    name, value = pair.split("=", 1)
    return name, value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """["IMAGE_MAX_DIM=512", "backbone=resnet50"] -> {"IMAGE_MAX_DIM": 512, "BACKBONE": "resnet50"}.

    Values are read as Python literals where possible (numbers, lists, booleans), otherwise
    kept as strings.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, raw = split_setting(pair, "--set", "KEY=VALUE")
        try:
            value = ast.literal_eval(raw)
        except (ValueError, SyntaxError):
            value = raw
        overrides[key.strip().upper()] = value
    return overrides


def load_training_config(config_path: Path, overrides: dict[str, Any]):
    """Config + schedule from a TOML file; overrides apply to both (HEADS_EPOCHS, ALL_EPOCHS)."""
    from mrcnn.config import load_schedule
    from spine.config import SpineConfig

    if not config_path.is_file():
        raise SpineInputError(f"config file not found: {config_path}")
    schedule_fields = load_schedule(config_path)
    for key in ("HEADS_EPOCHS", "ALL_EPOCHS", "FINETUNE_EPOCHS"):
        if key in overrides:
            schedule_fields[key.lower()] = int(overrides.pop(key))
    try:
        config = SpineConfig.from_toml(config_path, **overrides)
    except ValueError as err:
        raise SpineInputError(str(err)) from err
    return config, Schedule(**schedule_fields)


def load_datasets(
    data_dir: Path,
    seed: int = 0,
    extra_train: list[Path] | None = None,
    empty_slices: int = 0,
    neighbour_channels: bool = False,
    with_s1: bool = False,
    png_repeat: int = 1,
    ignore_unlabelled: bool = True,
):
    """(train, val) SpineDatasets from the paper's layout or from a folder of volumes.

    extra_train: more folders (volume pairs or VIA image folders) whose images all go to the
    training set, e.g. phantoms from spine.phantom. empty_slices: slices without vertebrae to
    keep per volume (volume folders only; spine-prepare --empty-per-volume does it for the
    paper's layout); they are trained on as negatives when SKIP_EMPTY_IMAGES is false.
    neighbour_channels: volume slices carry their neighbours in R and B
    (SpineConfig.NEIGHBOUR_CHANNELS). An images/ + masks/ PNG folder (spine.png_folder), as
    data_dir or extra, is split by patient (75/25, seed) into train and val; png_repeat
    weights the training slices of extra PNG folders up. with_s1: S1 is a class of its own
    (NUM_CLASSES = 3). ignore_unlabelled: unlabelled vertebrae become ignore regions.
    """
    from spine.dataset import SpineDataset
    from spine.model_input import ModelInput

    kind = folder_kind(data_dir)  # raises SpineInputError for a missing folder
    train_dir, val_dir = data_dir / "train", data_dir / "val"
    options = dict(
        neighbour_channels=neighbour_channels, with_s1=with_s1,
        ignore_unlabelled=ignore_unlabelled,
    )  # fmt: skip
    train = SpineDataset(**options)
    val = SpineDataset(**options)
    if kind == "png":
        add_png_split(train, val, data_dir, seed)
    elif kind == "prepared":
        check_prepared_input(data_dir, ModelInput(neighbour_channels=neighbour_channels))
        train.load_via_folder(train_dir)
        val.load_via_folder(val_dir)
    else:
        pairs = find_pairs(data_dir)  # raises SpineInputError when there are none
        split = split_subjects(pairs, seed=seed)
        train.load_volumes(
            [p for p in pairs if p.subject in split["train"]], empty_slices=empty_slices
        )
        val.load_volumes([p for p in pairs if p.subject in split["val"]])
    for folder in extra_train or []:
        folder = Path(folder)
        if folder.is_dir() and folder_kind(folder) == "png":
            added = add_png_split(train, val, folder, seed, png_repeat)
        else:
            added = _load_any_folder(train, folder, empty_slices)
        logger.info("%s: %d extra training slices", folder, added)
    train.prepare()
    val.prepare()
    if train.num_images == 0 or val.num_images == 0:
        raise SpineInputError(f"{data_dir}: no annotated slices in train or val")
    return train, val


def add_png_split(train, val, folder: Path, seed: int, repeat: int = 1) -> int:
    """Add a PNG folder's training patients to train (each slice `repeat` times) and its
    validation patients to val; returns the training images added."""
    from spine.png_folder import split_patients

    split = split_patients(folder, seed)
    added = train.load_png_folder(folder, split["train"], repeat=repeat)
    val.load_png_folder(folder, split["val"])
    return added


def check_prepared_input(data_dir: Path, expected: ModelInput) -> None:
    """Refuse a spine-prepare folder whose images were made for another model input than the
    config's (spine.model_input: neighbouring slices in R and B or grey slices, and the
    intensity window): the model would learn from one kind of image and be shown the other
    by spine.pipeline. split.json records the input; a user's own VIA folders without one
    are taken as grey slices."""
    import json

    from spine.model_input import ModelInput

    summary_path = data_dir / SPLIT_FILENAME
    if not summary_path.is_file():
        if not expected.neighbour_channels:
            return  # a user's own VIA folders: images are used as stored
        prepared = ModelInput()
    else:
        summary = json.loads(summary_path.read_text())
        # split.json from before "input" was recorded: its images had the default window.
        prepared = ModelInput.from_description(
            summary.get("input", {"neighbour_channels": summary.get("neighbour_channels")})
        )
    differences = expected.mismatch(prepared)
    if not differences:
        return
    if prepared.neighbour_channels != expected.neighbour_channels:
        flag = "with" if expected.neighbour_channels else "without"
        raise SpineInputError(
            f"{data_dir}: the config has neighbour_channels = "
            f"{str(expected.neighbour_channels).lower()} but the images "
            f"{'do not hold' if expected.neighbour_channels else 'hold'} neighbouring "
            f"slices; run spine-prepare {flag} --neighbour-channels, or train from the volume "
            "folder itself"
        )
    raise SpineInputError(
        f"{data_dir}: the images were prepared for another model input than the config's "
        f"(config vs images: {'; '.join(differences)}); run spine-prepare again, or train "
        "from the volume folder itself"
    )


def _load_any_folder(dataset, folder: Path, empty_slices: int) -> int:
    """Add a VIA image folder or a folder of volume pairs to dataset; returns images added."""
    if not folder.is_dir():
        raise SpineInputError(f"extra training folder not found: {folder}")
    if folder_kind(folder) == "via":
        return dataset.load_via_folder(folder)
    return dataset.load_volumes(find_pairs(folder), empty_slices=empty_slices)


def check_arguments(args: argparse.Namespace, config: Any) -> Path | None:
    """Check the folders and the starting weights before TensorFlow is loaded; returns the
    checkpoint `--weights last` resumes from (None for the other choices).

    A weights file must read whole (a truncated or garbage file is refused here, in one
    line); `last` takes the newest readable checkpoint of the newest run, saying which
    unreadable ones it skipped.
    """
    from mrcnn import checkpoints
    from spine.cli import check_input_folder, check_output_folder

    check_input_folder(Path(args.data), "data folder")
    for folder in args.extra_train or []:
        check_input_folder(Path(folder), "extra training folder")
    check_output_folder(Path(args.logs), "logs folder")
    choice = args.weights
    try:
        if choice == "last":
            def skip(path: Path, reason: str) -> None:
                logger.warning("skipping unreadable checkpoint %s: %s", path.name, reason)

            try:
                return checkpoints.find_last_good(
                    args.logs, checkpoints.run_name(config), on_skip=skip
                )
            except FileNotFoundError as err:
                raise MissingWeightsError(
                    f"--weights last: no checkpoint to resume under {args.logs} ({err})"
                ) from None
        if choice == "coco":
            if not COCO_WEIGHTS.is_file():
                raise coco_missing()
            checkpoints.check_weights_file(COCO_WEIGHTS)
        elif choice not in ("none", "imagenet"):
            if not Path(choice).is_file():
                raise MissingWeightsError(f"weights file not found: {choice}")
            checkpoints.check_weights_file(choice)
    except checkpoints.UnreadableWeightsError as err:
        raise MissingWeightsError(str(err)) from None
    return None


def coco_missing() -> MissingWeightsError:
    """What to do when --weights coco is asked for and the file is not there."""
    return MissingWeightsError(
        f"--weights coco needs Matterport's COCO file at {COCO_WEIGHTS}. It cannot be "
        "downloaded from here: get mask_rcnn_coco.h5 (Matterport Mask_RCNN release "
        "v2.0) on a connected machine and copy it there, or use --weights imagenet/none."
    )


def initial_weights(model, choice: str, last: str | Path | None = None) -> None:
    """Load the starting weights named by --weights (coco, imagenet, last, a path, none).

    last: the checkpoint `last` resumes (check_arguments found it); default: model.find_last().
    """
    if choice == "none":
        logger.info("training from random initialisation")
    elif choice == "coco":
        if not COCO_WEIGHTS.is_file():
            raise coco_missing()
        model.load_weights(str(COCO_WEIGHTS), by_name=True, exclude=COCO_EXCLUDE)
    elif choice == "imagenet":
        try:
            path = model.get_imagenet_weights(WEIGHTS_DIR)
        except FileNotFoundError as err:
            raise MissingWeightsError(str(err)) from err
        model.load_weights(path, by_name=True)
    elif choice == "last":
        try:
            path = str(last) if last is not None else model.find_last()
        except FileNotFoundError as err:
            raise MissingWeightsError(
                f"--weights last: no checkpoint to resume under {model.model_dir} ({err})"
            ) from err
        model.load_weights(path, by_name=True)
        logger.info("resuming %s at epoch %d", path, model.epoch)
    else:
        path = Path(choice)
        if not path.is_file():
            raise MissingWeightsError(f"weights file not found: {path}")
        try:
            model.load_weights(str(path), by_name=True)
        except ValueError as err:
            if "NUM_CLASSES" not in str(err):
                raise MissingWeightsError(f"{path} does not fit this config: {err}") from err
            # A model with other classes (e.g. no S1 class yet): keep the trunk, RPN and
            # shared head layers, start the class-specific outputs afresh.
            model.load_weights(str(path), by_name=True, exclude=COCO_EXCLUDE)
            logger.info("%s: other classes; class-specific head layers re-initialised", path)
        # A path is a starting point, not a resume (that is `last`): Matterport's loader
        # takes a checkpoint's run folder and epoch from its name, which would make a
        # fine-tune from epoch 28 of another run skip every stage ending at or before 28.
        model.set_log_dir()
        logger.info("starting a new run from %s at epoch 0", path)


def make_augmentation(recipe: str | None, seed: int = 0, settings: list[str] | None = None):
    """The training augmentation by name: "default", "heavy" (SpineAugmenter.heavy) or None,
    with settings ["p_resample=0.3", ...] changed (SpineAugmenter.with_settings)."""
    from spine.augment import SpineAugmenter

    if recipe is None:
        if settings:
            raise SpineInputError("--augment-set needs augmentation (drop --no-augment)")
        return None
    if recipe == "heavy":
        augmenter = SpineAugmenter.heavy(seed=seed)
    elif recipe == "default":
        augmenter = SpineAugmenter(seed=seed)
    else:
        raise ValueError(f"augmentation recipe {recipe!r}: use 'default', 'heavy' or None")
    changes: dict[str, str] = {}
    for pair in settings or []:
        name, value = split_setting(pair, "--augment-set", "NAME=VALUE")
        changes[name.strip()] = value.strip()
    try:
        return augmenter.with_settings(changes)
    except ValueError as err:
        raise SpineInputError(str(err)) from None


def train_model(
    config: Any,
    schedule: Schedule,
    train_set: Any,
    val_set: Any,
    *,
    logs: str | Path,
    weights: str | Path = "none",
    resume_from: str | Path | None = None,
    augmentation: Any = None,
):
    """Train a MaskRCNN through `schedule` on prepared datasets; returns the model.

    The library call under spine-train (and the notebook): config is a (Spine)Config;
    schedule a Schedule (stages of layers, last epoch, LR factor); train_set / val_set come
    from load_datasets (with neighbour_channels=uses_neighbours(config), so that the images
    are what the model takes); weights: "none", "coco", "imagenet", "last" or a file;
    resume_from: the checkpoint "last" resumes (default: the model's newest);
    augmentation: make_augmentation(...) or None.
    """
    from mrcnn.checkpoints import UnreadableWeightsError
    from mrcnn.model import MaskRCNN

    model = MaskRCNN(mode="training", config=config, model_dir=str(logs))
    try:
        initial_weights(model, str(weights), resume_from)
    except UnreadableWeightsError as err:  # imagenet, or a file damaged since it was checked
        raise MissingWeightsError(str(err)) from None
    for layers, last_epoch, lr_factor in schedule.stages():
        if model.epoch >= last_epoch:
            logger.info("stage %s already done (epoch %d)", layers, model.epoch)
            continue
        model.train(
            train_set,
            val_set,
            learning_rate=config.LEARNING_RATE * lr_factor,
            epochs=last_epoch,
            layers=layers,
            augmentation=augmentation,
        )
    return model


def train(args: argparse.Namespace):
    """spine-train's arguments -> checked inputs, datasets, train_model; returns the model."""
    from spine.config import uses_neighbours

    config, schedule = load_training_config(Path(args.config), parse_overrides(args.set or []))
    if args.heads_epochs is not None:
        schedule.heads_epochs = args.heads_epochs
    if args.all_epochs is not None:
        schedule.all_epochs = args.all_epochs
    if args.finetune_epochs is not None:
        schedule.finetune_epochs = args.finetune_epochs
    if args.steps_per_epoch is not None:
        config = config.replace(STEPS_PER_EPOCH=args.steps_per_epoch)
    last = check_arguments(args, config)
    recipe = None if args.no_augment else args.augment
    augmentation = make_augmentation(recipe, args.seed, args.augment_set)  # fails before loading
    from spine.cli import quiet_tensorflow

    quiet_tensorflow(getattr(args, "verbose", False))  # the datasets import Keras
    train_set, val_set = load_datasets(
        Path(args.data),
        seed=args.split_seed,
        extra_train=[Path(p) for p in args.extra_train or []],
        empty_slices=args.empty_slices,
        neighbour_channels=uses_neighbours(config),
        with_s1=config.NUM_CLASSES >= 3,
        png_repeat=args.png_repeat,
        ignore_unlabelled=not args.no_ignore,
    )
    logger.info(
        "train: %d slices, val: %d slices; stages (layers, last epoch): %s",
        train_set.num_images,
        val_set.num_images,
        schedule.stages(),
    )

    return train_model(
        config, schedule, train_set, val_set, logs=args.logs, weights=args.weights,
        resume_from=last,
        augmentation=augmentation,
    )  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from spine.cli import add_verbose, non_negative_int, positive_int

    parser = argparse.ArgumentParser(prog="spine-train", description=__doc__.split("\n")[0])
    parser.add_argument("--data", required=True, help="spine-prepare output or a volume folder")
    parser.add_argument(
        "--config", default=str(bundled.paper_config()),
        help="config TOML (default: the bundled configs/paper.toml)",
    )  # fmt: skip
    # Default none, not coco: Matterport's COCO file is not shipped (weights/README.md), so
    # a coco default would fail for everyone who has not copied it in.
    parser.add_argument(
        "--weights", default="none",
        help="starting weights: none (random initialisation; the default) | coco (Matterport's "
        "mask_rcnn_coco.h5, not shipped: copy it into weights/ first) | imagenet (a ResNet "
        "file you copied into weights/) | last (resume the newest run) | PATH (.weights.h5/.h5,"
        " a new run from it, e.g. the bundled model with --config configs/demo.toml)",
    )  # fmt: skip
    parser.add_argument(
        "--logs", default="logs", help="run folders go here (default: ./logs)"
    )
    parser.add_argument("--set", action="append", metavar="KEY=VALUE", help="config override")
    parser.add_argument(
        "--heads-epochs", type=non_negative_int, help="epochs of stage 1 (heads)"
    )
    parser.add_argument(
        "--all-epochs", type=non_negative_int, help="epochs of stage 2 (all layers)"
    )
    parser.add_argument(
        "--finetune-epochs", type=non_negative_int,
        help="epochs of stage 3 (all layers at LR/10)",
    )  # fmt: skip
    parser.add_argument(
        "--steps-per-epoch", type=positive_int, help="batches per epoch (config STEPS_PER_EPOCH)"
    )
    parser.add_argument(
        "--extra-train",
        action="append",
        metavar="DIR",
        help="more training data (volume pairs or a VIA folder), e.g. phantoms; repeatable",
    )
    parser.add_argument(
        "--empty-slices",
        type=non_negative_int,
        default=0,
        help="slices without vertebrae kept per volume (volume folders; negatives when "
        "SKIP_EMPTY_IMAGES=false)",
    )
    parser.add_argument(
        "--split-seed",
        type=int,
        default=0,
        help="subject split of a volume folder (spine-prepare's seed; keep it fixed, or "
        "validation subjects leak into training)",
    )
    parser.add_argument("--seed", type=int, default=0, help="augmentation seed")
    parser.add_argument("--no-augment", action="store_true", help="train without augmentation")
    parser.add_argument(
        "--augment",
        choices=("default", "heavy"),
        default="default",
        help="augmentation recipe: heavy = contrast and geometry randomisation across sources",
    )
    parser.add_argument(
        "--augment-set", action="append", metavar="NAME=VALUE",
        help="change one setting of the recipe (spine.augment.SpineAugmenter), e.g. "
        "p_resample=0.3 or scale=0.8,1.2; repeatable",
    )  # fmt: skip
    parser.add_argument(
        "--png-repeat", type=positive_int, default=1,
        help="training slices of extra images/+masks/ folders count this many times",
    )  # fmt: skip
    parser.add_argument(
        "--no-ignore",
        action="store_true",
        help="teach unlabelled vertebrae as background (no ignore regions; for comparison)",
    )
    add_verbose(parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: 0 when the schedule ran, 2 on a user error (one line, no traceback)."""
    from spine.cli import fail, setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.verbose, level=logging.INFO)  # epochs and checkpoints are news here
    try:
        train(args)
    except SpineInputError as err:
        return fail("spine-train", err)
    return 0


if __name__ == "__main__":
    sys.exit(main())
