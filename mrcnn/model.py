"""MaskRCNN: builds the training or inference graph and wraps training, detection and weights.

The stages live in their own modules (backbone, rpn, roi_align, targets, heads, losses,
detection, weights); this module composes them and holds Matterport's public API.
"""

from __future__ import annotations

import datetime
import importlib.util
import logging
import os
import re
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from mrcnn import boxes as box_utils
from mrcnn import checkpoints as C
from mrcnn import losses as L
from mrcnn import weights as W
from mrcnn.backbone import build_backbone
from mrcnn.detection import DetectionLayer, unmold_detections
from mrcnn.heads import build_fpn_mask_graph, fpn_classifier_graph
from mrcnn.rpn import ProposalLayer, build_rpn_model
from mrcnn.targets import AddGtToProposals, DetectionTargetLayer

logger = logging.getLogger(__name__)

# Matterport's regular expressions for the layers to train.
LAYER_REGEX = {
    "heads": r"(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "3+": r"(res3.*)|(bn3.*)|(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "4+": r"(res4.*)|(bn4.*)|(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "5+": r"(res5.*)|(bn5.*)|(mrcnn\_.*)|(rpn\_.*)|(fpn\_.*)",
    "all": ".*",
}
LOSS_NAMES = ("rpn_class_loss", "rpn_bbox_loss", "mrcnn_class_loss", "mrcnn_bbox_loss",
              "mrcnn_mask_loss")
# image_meta columns: id(1) original shape(3) image shape(3) window(4) scale(1) active ids(C)
ACTIVE_CLASS_IDS_COLUMN = 12


class NormBoxes(layers.Layer):
    """Pixel boxes [B, G, 4] -> normalized boxes [B, G, 4] for a fixed image (h, w)."""

    def __init__(self, image_shape: tuple[int, int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.image_shape = tuple(int(v) for v in image_shape[:2])

    def call(self, boxes: Any) -> Any:
        return box_utils.norm_boxes_graph(boxes, self.image_shape)

    def get_config(self) -> dict:
        return {**super().get_config(), "image_shape": self.image_shape}


class DetectionBoxes(layers.Layer):
    """detections [B, N, 6] -> their boxes [B, N, 4] (to crop the mask head's inputs)."""

    def call(self, detections: Any) -> Any:
        return ops.stop_gradient(detections[..., :4])


class MaskRCNNTrainingModel(keras.Model):
    """The training graph with its loss: five Mask R-CNN losses plus L2 weight decay.

    Built as a functional model (inputs/outputs given to __init__), so all layers keep their
    Matterport names. Losses are computed in compute_loss and tracked as keras.metrics.Mean,
    so the progress bar shows each of them (and val_* during validation).
    """

    def __init__(self, *args: Any, loss_weights: dict | None = None,
                 weight_decay: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.loss_weights_map = dict(loss_weights or {})
        self.weight_decay = float(weight_decay)
        self.loss_trackers = [keras.metrics.Mean(name=name) for name in LOSS_NAMES]

    def compute_loss(self, x: Any = None, y: Any = None, y_pred: Any = None,
                     sample_weight: Any = None, training: bool = True) -> Any:
        """Total loss of a batch. x: the input dict; y_pred: the output dict; y unused."""
        active = x["input_image_meta"][:, ACTIVE_CLASS_IDS_COLUMN:]  # [B, num_classes]
        values = [
            L.rpn_class_loss(x["input_rpn_match"], y_pred["rpn_class_logits"]),
            L.rpn_bbox_loss(x["input_rpn_bbox"], x["input_rpn_match"], y_pred["rpn_bbox"]),
            L.mrcnn_class_loss(y_pred["target_class_ids"], y_pred["mrcnn_class_logits"], active),
            L.mrcnn_bbox_loss(y_pred["target_bbox"], y_pred["target_class_ids"],
                              y_pred["mrcnn_bbox"]),
            L.mrcnn_mask_loss(y_pred["target_mask"], y_pred["target_class_ids"],
                              y_pred["mrcnn_mask"]),
        ]
        total = 0.0
        for name, value, tracker in zip(LOSS_NAMES, values, self.loss_trackers, strict=True):
            tracker.update_state(value)
            total = total + float(self.loss_weights_map.get(name, 1.0)) * value
        if self.weight_decay:
            total = total + self.weight_decay * self.l2_penalty()
        return total

    def l2_penalty(self) -> Any:
        """Matterport's L2 term: sum over trainable kernels of mean(w^2) (gamma/beta excluded)."""
        terms = [ops.mean(ops.square(w)) for w in self.trainable_weights if w.name == "kernel"]
        return ops.sum(ops.stack(terms)) if terms else 0.0


def _inputs(config: Any, mode: str) -> dict[str, Any]:
    """The model's keras.Input tensors (static batch size, so shapes stay static)."""
    batch = int(config.BATCH_SIZE)
    h, w, c = (int(v) for v in config.IMAGE_SHAPE)
    inputs = {
        "input_image": keras.Input((h, w, c), batch_size=batch, name="input_image"),
        "input_image_meta": keras.Input((config.IMAGE_META_SIZE,), batch_size=batch,
                                        name="input_image_meta"),
    }
    if mode == "training":
        num_anchors = box_utils.get_anchors(config, (h, w)).shape[0]
        mask_hw = tuple(config.MINI_MASK_SHAPE) if config.USE_MINI_MASK else (h, w)
        max_gt = int(config.MAX_GT_INSTANCES)
        inputs.update(
            input_rpn_match=keras.Input((num_anchors, 1), batch_size=batch, dtype="int32",
                                        name="input_rpn_match"),
            input_rpn_bbox=keras.Input((config.RPN_TRAIN_ANCHORS_PER_IMAGE, 4), batch_size=batch,
                                       name="input_rpn_bbox"),
            input_gt_class_ids=keras.Input((max_gt,), batch_size=batch, dtype="int32",
                                           name="input_gt_class_ids"),
            input_gt_boxes=keras.Input((max_gt, 4), batch_size=batch, name="input_gt_boxes"),
            input_gt_masks=keras.Input((*mask_hw, max_gt), batch_size=batch, dtype="bool",
                                       name="input_gt_masks"),
        )
    return inputs


def build_model(config: Any, mode: str) -> keras.Model:
    """The Keras model of one mode. Outputs (a dict):

    training: rpn_class_logits [B, A, 2], rpn_class, rpn_bbox [B, A, 4], rpn_rois [B, P, 4],
      output_rois [B, T, 4], target_class_ids [B, T], target_bbox [B, T, 4],
      target_mask [B, T, mh, mw], mrcnn_class_logits / mrcnn_class [B, T, C],
      mrcnn_bbox [B, T, C, 4], mrcnn_mask [B, T, mh, mw, C].
    inference: detections [B, D, (y1, x1, y2, x2, class_id, score)] normalized,
      mrcnn_class [B, P, C], mrcnn_bbox [B, P, C, 4], mrcnn_mask [B, D, mh, mw, C],
      rpn_rois [B, P, 4], rpn_class [B, A, 2], rpn_bbox [B, A, 4].
    """
    if mode not in ("training", "inference"):
        raise ValueError(f"mode must be 'training' or 'inference', got {mode!r}")
    if not config.USE_RPN_ROIS:
        raise NotImplementedError("USE_RPN_ROIS=False (externally supplied ROIs) is not supported")
    h, w = int(config.IMAGE_SHAPE[0]), int(config.IMAGE_SHAPE[1])
    if h % 64 or w % 64:
        raise ValueError(f"image size must be divisible by 64 (2^6), got {h}x{w}")
    inputs = _inputs(config, mode)
    p2, p3, p4, p5, p6 = build_backbone(inputs["input_image"], config)
    rpn_feature_maps = [p2, p3, p4, p5, p6]
    mrcnn_feature_maps = [p2, p3, p4, p5]

    depth = int(config.TOP_DOWN_PYRAMID_SIZE)
    rpn = build_rpn_model(config.RPN_ANCHOR_STRIDE, len(config.RPN_ANCHOR_RATIOS), depth,
                          shared_channels=config.RPN_CONV_SHARED_CHANNELS or 2 * depth)
    level_outputs = [rpn(p) for p in rpn_feature_maps]
    rpn_class_logits, rpn_class, rpn_bbox = (
        layers.Concatenate(axis=1, name=name)([o[i] for o in level_outputs])
        for i, name in enumerate(("rpn_class_logits", "rpn_class", "rpn_bbox"))
    )
    proposal_count = config.POST_NMS_ROIS_TRAINING if mode == "training" \
        else config.POST_NMS_ROIS_INFERENCE
    rpn_rois = ProposalLayer(
        proposal_count=proposal_count, nms_threshold=config.RPN_NMS_THRESHOLD,
        pre_nms_limit=config.PRE_NMS_LIMIT, rpn_bbox_std_dev=config.RPN_BBOX_STD_DEV,
        image_shape=(h, w), anchor_scales=config.RPN_ANCHOR_SCALES,
        anchor_ratios=config.RPN_ANCHOR_RATIOS, backbone_strides=config.BACKBONE_STRIDES,
        anchor_stride=config.RPN_ANCHOR_STRIDE, batch_size=config.BATCH_SIZE, name="ROI",
        feature_shapes=box_utils.compute_backbone_shapes(config, (h, w)),
    )(rpn_class, rpn_bbox)
    head_args = dict(image_shape=(h, w), num_classes=config.NUM_CLASSES,
                     train_bn=config.TRAIN_BN)

    if mode == "training":
        gt_boxes = NormBoxes((h, w), name="norm_gt_boxes")(inputs["input_gt_boxes"])
        target_proposals = rpn_rois
        if config.ADD_GT_TO_PROPOSALS:
            target_proposals = AddGtToProposals(name="add_gt_to_proposals")(
                rpn_rois, inputs["input_gt_class_ids"], gt_boxes)  # [B, G + P, 4]
        rois, target_class_ids, target_bbox, target_mask = DetectionTargetLayer(
            train_rois_per_image=config.TRAIN_ROIS_PER_IMAGE,
            roi_positive_ratio=config.ROI_POSITIVE_RATIO, bbox_std_dev=config.BBOX_STD_DEV,
            mask_shape=config.MASK_SHAPE, use_mini_mask=config.USE_MINI_MASK,
            batch_size=config.BATCH_SIZE, name="proposal_targets",
        )(target_proposals, inputs["input_gt_class_ids"], gt_boxes, inputs["input_gt_masks"])
        class_logits, class_probs, bbox = fpn_classifier_graph(
            rois, mrcnn_feature_maps, pool_size=config.POOL_SIZE,
            fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE, **head_args)
        masks = build_fpn_mask_graph(rois, mrcnn_feature_maps, pool_size=config.MASK_POOL_SIZE,
                                     conv_size=config.MASK_HEAD_CONV_SIZE, **head_args)
        outputs = dict(
            rpn_class_logits=rpn_class_logits, rpn_class=rpn_class, rpn_bbox=rpn_bbox,
            rpn_rois=rpn_rois, output_rois=rois, target_class_ids=target_class_ids,
            target_bbox=target_bbox, target_mask=target_mask, mrcnn_class_logits=class_logits,
            mrcnn_class=class_probs, mrcnn_bbox=bbox, mrcnn_mask=masks,
        )
        return MaskRCNNTrainingModel(
            inputs=inputs, outputs=outputs, name="mask_rcnn",
            loss_weights=config.LOSS_WEIGHTS, weight_decay=config.WEIGHT_DECAY,
        )

    class_logits, class_probs, bbox = fpn_classifier_graph(
        rpn_rois, mrcnn_feature_maps, pool_size=config.POOL_SIZE,
        fc_layers_size=config.FPN_CLASSIF_FC_LAYERS_SIZE, **head_args)
    detections = DetectionLayer(
        bbox_std_dev=config.BBOX_STD_DEV, min_confidence=config.DETECTION_MIN_CONFIDENCE,
        nms_threshold=config.DETECTION_NMS_THRESHOLD,
        max_instances=config.DETECTION_MAX_INSTANCES, image_shape=(h, w),
        batch_size=config.BATCH_SIZE, score=config.DETECTION_SCORE, name="mrcnn_detection",
    )(rpn_rois, class_probs, bbox, inputs["input_image_meta"])
    detection_boxes = DetectionBoxes(name="detection_boxes")(detections)
    masks = build_fpn_mask_graph(detection_boxes, mrcnn_feature_maps,
                                 pool_size=config.MASK_POOL_SIZE,
                                 conv_size=config.MASK_HEAD_CONV_SIZE, **head_args)
    outputs = dict(detections=detections, mrcnn_class=class_probs, mrcnn_bbox=bbox,
                   mrcnn_mask=masks, rpn_rois=rpn_rois, rpn_class=rpn_class, rpn_bbox=rpn_bbox)
    return keras.Model(inputs=inputs, outputs=outputs, name="mask_rcnn")


@keras.saving.register_keras_serializable(package="mrcnn")
class LinearWarmup(keras.optimizers.schedules.LearningRateSchedule):
    """learning_rate * (step + 1) / warmup_steps for the first warmup_steps, then constant."""

    def __init__(self, learning_rate: float, warmup_steps: int) -> None:
        self.learning_rate = float(learning_rate)
        self.warmup_steps = int(warmup_steps)

    def __call__(self, step: Any) -> Any:
        fraction = (ops.cast(step, "float32") + 1.0) / float(max(self.warmup_steps, 1))
        return self.learning_rate * ops.minimum(fraction, 1.0)

    def get_config(self) -> dict:
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps}


OPTIMIZERS = ("sgd", "adam", "adamw")


def build_optimizer(config: Any, learning_rate: float,
                    momentum: float | None = None) -> keras.optimizers.Optimizer:
    """config.OPTIMIZER ("sgd" as Matterport, "adam" or "adamw") with per-variable gradient
    clipping at GRADIENT_CLIP_NORM and a linear warm-up over LEARNING_RATE_WARMUP_STEPS."""
    name = str(config.OPTIMIZER).lower()
    if name not in OPTIMIZERS:
        raise ValueError(f"OPTIMIZER must be one of {OPTIMIZERS}, got {name!r}")
    warmup = int(config.LEARNING_RATE_WARMUP_STEPS or 0)
    lr: Any = LinearWarmup(learning_rate, warmup) if warmup > 0 else float(learning_rate)
    clip = config.GRADIENT_CLIP_NORM
    if name == "sgd":
        momentum = config.LEARNING_MOMENTUM if momentum is None else momentum
        return keras.optimizers.SGD(learning_rate=lr, momentum=momentum, clipnorm=clip)
    if name == "adam":
        return keras.optimizers.Adam(learning_rate=lr, clipnorm=clip)
    optimizer = keras.optimizers.AdamW(learning_rate=lr, weight_decay=config.WEIGHT_DECAY,
                                       clipnorm=clip)
    # Matterport's decay skips BatchNorm gamma/beta; biases are left alone too.
    optimizer.exclude_from_weight_decay(var_names=["gamma", "beta", "bias"])
    return optimizer


def _jit_compile() -> bool | str:
    """XLA on TF lacks crop_and_resize, so TF runs graph mode; JAX always jits."""
    return "auto" if keras.backend.backend() == "jax" else False


class MaskRCNN:
    """Matterport's MaskRCNN API on Keras 3: mode "training" or "inference"."""

    def __init__(self, mode: str, config: Any, model_dir: str | os.PathLike) -> None:
        if mode not in ("training", "inference"):
            raise ValueError(f"mode must be 'training' or 'inference', got {mode!r}")
        self.mode = mode
        self.config = config
        self.model_dir = str(model_dir)
        self.epoch = 0
        self._resume_from: str | None = None  # checkpoint whose optimizer state train() loads
        self.set_log_dir()
        self.keras_model = build_model(config, mode)
        if mode == "inference":
            self.keras_model.compile(jit_compile=_jit_compile())

    # ------------------------------------------------------------------ run folders
    @property
    def _name(self) -> str:
        return C.run_name(self.config)

    def set_log_dir(self, model_path: str | os.PathLike | None = None) -> None:
        """Set the run folder and epoch; from a checkpoint path, resume its run and epoch."""
        self.epoch = 0
        self._resume_from = None
        now = datetime.datetime.now()
        if model_path:
            regex = (r".*[/\\][\w-]+(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})[/\\]"
                     r"mask\_rcnn\_[\w-]+(\d{4})\.(?:weights\.)?h5$")
            m = re.match(regex, str(model_path))
            if m:
                now = datetime.datetime(*(int(m.group(i)) for i in range(1, 6)))
                # The file's epoch is 1-based; training resumes at the next one.
                self.epoch = int(m.group(6))
                self._resume_from = str(model_path)
                logger.info("re-starting from epoch %d", self.epoch)
        self.log_dir = os.path.join(self.model_dir, f"{self._name}{now:%Y%m%dT%H%M}")
        self.checkpoint_path = os.path.join(
            self.log_dir, f"mask_rcnn_{self._name}_{{epoch:04d}}.weights.h5")

    def find_last(self) -> str:
        """Path of the newest readable checkpoint of the newest run of this config's NAME
        (an unreadable one, e.g. cut short by a full disk, is skipped with a warning)."""
        def skip(path: os.PathLike, reason: str) -> None:
            logger.warning("skipping unreadable checkpoint %s: %s", path, reason)

        return str(C.find_last_good(self.model_dir, self._name, on_skip=skip))

    # ---------------------------------------------------------------------- weights
    def load_weights(self, filepath: str | os.PathLike, by_name: bool = False,
                     exclude: list[str] | None = None) -> None:
        """Load weights (ours, a legacy Keras-2/Matterport .h5, or a native Keras 3 file)."""
        W.load_weights(self.keras_model, filepath, by_name=by_name, exclude=exclude)
        self.set_log_dir(filepath)

    def save_weights(self, filepath: str | os.PathLike) -> None:
        """Save every layer's weights by layer name (atomic, backend-independent)."""
        W.save_weights(self.keras_model, filepath)

    def get_imagenet_weights(self, weights_dir: str | os.PathLike) -> str:
        """Path of the ImageNet ResNet weights for this backbone in weights_dir (never
        downloads)."""
        return W.get_imagenet_weights(self.config.BACKBONE, weights_dir)

    # --------------------------------------------------------------------- training
    def set_trainable(self, layer_regex: str, keras_model: keras.Model | None = None,
                      indent: int = 0) -> None:
        """Make the layers whose name fully matches layer_regex trainable, freeze the rest."""
        layer_regex = LAYER_REGEX.get(layer_regex, layer_regex)
        model = keras_model or self.keras_model
        for layer in model.layers:
            if isinstance(layer, keras.Model):
                self.set_trainable(layer_regex, layer, indent + 4)
                continue
            if not layer.weights:
                continue
            trainable = bool(re.fullmatch(layer_regex, layer.name))
            layer.trainable = trainable
            logger.debug("%s%-20s (%s) trainable=%s", " " * indent, layer.name,
                         type(layer).__name__, trainable)

    def compile(self, learning_rate: float, momentum: float) -> None:
        """The config's optimizer (SGD with momentum by default) with gradient clipping and
        optional linear warm-up; the loss lives in the model."""
        optimizer = build_optimizer(self.config, learning_rate, momentum)
        if isinstance(self.keras_model, MaskRCNNTrainingModel):
            # AdamW decays the weights itself: no L2 term in the loss then.
            decoupled = str(self.config.OPTIMIZER).lower() == "adamw"
            self.keras_model.weight_decay = 0.0 if decoupled else float(self.config.WEIGHT_DECAY)
        self.keras_model.compile(optimizer=optimizer, jit_compile=_jit_compile())

    def train(self, train_dataset: Any, val_dataset: Any, learning_rate: float, epochs: int,
              layers: str, augmentation: Any = None,
              custom_callbacks: list | None = None) -> keras.callbacks.History:
        """Train the layers selected by `layers` ("heads", "3+", "4+", "5+", "all" or a regex)
        from self.epoch up to `epochs`, writing a checkpoint per epoch into self.log_dir.
        """
        from mrcnn.data import DataSequence  # late import: data.py builds on boxes/utils

        if self.mode != "training":
            raise ValueError("train() needs a model created in training mode")
        stage = {"layers": layers, "learning_rate": float(learning_rate),
                 "optimizer": str(self.config.OPTIMIZER).lower()}
        stage_start, state = self._resume_state(stage)
        # Batches are a function of (seed, epoch within the stage): a resumed stage keeps the
        # seed its first epoch had and continues the epoch count, so it sees what the
        # uninterrupted run would have seen.
        train_seq = DataSequence(train_dataset, self.config, shuffle=True,
                                 augmentation=augmentation, seed=stage_start,
                                 steps=self.config.STEPS_PER_EPOCH)
        train_seq.epoch = self.epoch - stage_start
        val_seq = None
        if val_dataset is not None:
            val_seq = DataSequence(val_dataset, self.config, shuffle=True,
                                   steps=self.config.VALIDATION_STEPS)
        os.makedirs(self.log_dir, exist_ok=True)
        callbacks: list[keras.callbacks.Callback] = [
            W.AtomicCheckpoint(self.keras_model, self.checkpoint_path,
                               state_info={**stage, "stage_start": stage_start}),
            keras.callbacks.CSVLogger(os.path.join(self.log_dir, "history.csv"), append=True),
        ]
        if importlib.util.find_spec("tensorboard") is not None:
            callbacks.append(keras.callbacks.TensorBoard(log_dir=self.log_dir,
                                                         write_graph=False))
        else:
            logger.warning("tensorboard is not installed: TensorBoard logging disabled")
        callbacks += list(custom_callbacks or [])

        logger.info("Starting at epoch %d. LR=%s. Checkpoint path: %s", self.epoch,
                    learning_rate, self.checkpoint_path)
        self.set_trainable(layers)
        self.compile(learning_rate, self.config.LEARNING_MOMENTUM)
        if state is not None:
            try:
                count = W.restore_training_state(self.keras_model, state)
                iteration = keras.ops.convert_to_numpy(self.keras_model.optimizer.iterations)
                logger.info("restored the optimizer state (%d variables, iteration %d)",
                            count, int(iteration))
            except ValueError as exc:
                logger.warning("optimizer state not restored (%s): it starts afresh", exc)
                self.compile(learning_rate, self.config.LEARNING_MOMENTUM)
        # shuffle=False: train_seq permutes each epoch itself, from (seed, epoch). Keras'
        # own shuffle would reorder the batches again with Python's global `random`, whose
        # state a resumed process does not share with the run it continues.
        history = self.keras_model.fit(
            train_seq, initial_epoch=self.epoch, epochs=epochs, shuffle=False,
            steps_per_epoch=self.config.STEPS_PER_EPOCH, callbacks=callbacks,
            validation_data=val_seq,
            validation_steps=self.config.VALIDATION_STEPS if val_seq is not None else None,
            verbose=1 if logger.isEnabledFor(logging.INFO) else 2,
        )
        self.epoch = max(self.epoch, epochs)
        return history

    def _resume_state(self, stage: dict[str, Any]) -> tuple[int, dict[str, Any] | None]:
        """(first epoch of the stage, saved optimizer arrays or None) for a train() call.

        The checkpoint loaded last (load_weights) has its optimizer state beside it. It is
        used when that checkpoint was written by this same stage (layers, learning rate,
        optimizer) at self.epoch: an interrupted stage continues with its momenta, iteration
        count and warm-up where they were. A checkpoint that ended the previous stage starts
        this one afresh, as the uninterrupted schedule does. Used once.
        """
        source, self._resume_from = self._resume_from, None
        if source is None:
            return self.epoch, None
        loaded = W.load_training_state(C.optimizer_state_path(source))
        if loaded is None:
            return self.epoch, None
        info, arrays = loaded
        same_stage = all(info.get(key) == value for key, value in stage.items())
        if not same_stage or info.get("epoch") != self.epoch:
            logger.info("checkpoint %s is from another stage (%s): the optimizer starts afresh",
                        os.path.basename(source), info.get("layers"))
            return self.epoch, None
        return int(info.get("stage_start", self.epoch)), arrays

    # -------------------------------------------------------------------- inference
    def mold_inputs(self, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Images [H, W, 3] -> molded [N, h, w, 3] f32, image_metas [N, META], windows [N, 4]."""
        from mrcnn import utils

        molded, metas, windows = [], [], []
        zero_ids = np.zeros([self.config.NUM_CLASSES], dtype=np.int32)
        for image in images:
            resized, window, scale, padding, crop = utils.resize_image(
                image, min_dim=self.config.IMAGE_MIN_DIM, max_dim=self.config.IMAGE_MAX_DIM,
                min_scale=self.config.IMAGE_MIN_SCALE, mode=self.config.IMAGE_RESIZE_MODE)
            molded.append(utils.mold_image(resized, self.config))
            metas.append(utils.compose_image_meta(0, image.shape, resized.shape, window, scale,
                                                  zero_ids))
            windows.append(window)
        return np.stack(molded), np.stack(metas), np.stack(windows)

    def detect(self, images: list[np.ndarray], verbose: int = 0) -> list[dict[str, np.ndarray]]:
        """Detect instances in any number of RGB images [H, W, 3].

        Returns one dict per image: rois int32 [N, (y1, x1, y2, x2)], class_ids int32 [N],
        scores float32 [N], masks bool [H, W, N], all at the image's original size, and
        class_probs float32 [N, NUM_CLASSES]: each detection's class probabilities (its
        score is class_probs[i, class_ids[i]] unless config.DETECTION_SCORE is "foreground").
        """
        if self.mode != "inference":
            raise ValueError("detect() needs a model created in inference mode")
        batch = int(self.config.BATCH_SIZE)
        results: list[dict[str, np.ndarray]] = []
        for start in range(0, len(images), batch):
            chunk = [np.asarray(im) for im in images[start:start + batch]]
            molded, metas, windows = self.mold_inputs(chunk)
            count = len(chunk)
            if count < batch:  # pad the last batch with copies of its last image
                reps = batch - count
                molded = np.concatenate([molded, np.repeat(molded[-1:], reps, axis=0)])
                metas = np.concatenate([metas, np.repeat(metas[-1:], reps, axis=0)])
            if verbose:
                logger.info("Processing %d images (molded %s)", count, molded.shape)
            out = self.keras_model.predict_on_batch(
                {"input_image": molded.astype(np.float32),
                 "input_image_meta": metas.astype(np.float32)})
            detections = np.asarray(out["detections"])
            mrcnn_mask = np.asarray(out["mrcnn_mask"])
            for i, image in enumerate(chunk):
                rois, class_ids, scores, masks, class_probs = unmold_detections(
                    detections[i], mrcnn_mask[i], image.shape, molded[i].shape, windows[i])
                results.append({"rois": rois, "class_ids": class_ids, "scores": scores,
                                "masks": masks, "class_probs": class_probs})
        return results
