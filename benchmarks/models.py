"""The two models under test, built with the same sizes and counts.

Ours: mrcnn.model.MaskRCNN in inference mode. Theirs: torchvision's Mask R-CNN with the same
trunk (ResNet-50/101, or the light demo trunk rebuilt at the same width), the same FPN, box and
mask head widths, the same image size (no resize), proposal and detection counts.

Both are random-init, which makes the data-dependent counts differ: random box regressors
collapse or blow up boxes (torchvision's NMS then keeps ~200 of 1000 proposals), and a
random classifier keeps a random number of detections. So on both sides, without changing
any computation: the RPN and box-head regressors output zero deltas (proposals are the
anchors with the highest random objectness, detections are their ROIs), and the classifier
outputs a constant "foreground, score 0.73". Each model then carries POST_NMS_ROIS
proposals through its box head and exactly DETECTION_MAX_INSTANCES boxes through its mask
head and mask pasting.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from benchmarks.common import REPO_ROOT

DEMO_TOML = REPO_ROOT / "configs" / "demo.toml"
# torchvision's default rpn_pre_nms_top_n_test: a count PER PYRAMID LEVEL.
TV_PRE_NMS_PER_LEVEL = 1000
POST_NMS_ROIS = 1000
DETECTIONS = 100
NUM_CLASSES = 2  # background + vertebra
STRIDES = (4, 8, 16, 32, 64)
ANCHORS_PER_LOCATION = 3


def pre_nms_total(size: int, per_level: int = TV_PRE_NMS_PER_LEVEL) -> int:
    """Candidates torchvision keeps before its RPN NMS (top-n per level, summed), so ours
    (PRE_NMS_LIMIT, a count over all levels) can be given the same number."""
    total = 0
    for stride in STRIDES:
        side = -(-size // stride)
        total += min(per_level, side * side * ANCHORS_PER_LOCATION)
    return total


MATTERPORT_RPN_SUFFIX = "-rpn512"


def base_fields(backbone: str) -> tuple[dict[str, Any], str]:
    """Architecture fields of a backbone key ("r50", "r101", "demo") and where they came from.

    The RPN's shared conv is as wide as the FPN, as torchvision's RPNHead is; a key ending in
    "-rpn512" ("r50-rpn512") keeps Matterport's 512-wide conv (what its COCO weights need).
    """
    if backbone.endswith(MATTERPORT_RPN_SUFFIX):
        fields, source = base_fields(backbone[: -len(MATTERPORT_RPN_SUFFIX)])
        return {**fields, "RPN_CONV_SHARED_CHANNELS": 512}, f"{source}, Matterport's 512-wide RPN"
    if backbone == "r50":
        return {"BACKBONE": "resnet50"}, "resnet50 (like for like with torchvision)"
    if backbone == "r101":
        return {"BACKBONE": "resnet101"}, "resnet101 (the paper's backbone)"
    if backbone == "demo":
        keep = ("BACKBONE", "BACKBONE_WIDTH", "TOP_DOWN_PYRAMID_SIZE",
                "FPN_CLASSIF_FC_LAYERS_SIZE", "MASK_HEAD_CONV_SIZE", "RPN_ANCHOR_SCALES")
        if DEMO_TOML.is_file():
            from spine.config import SpineConfig

            cfg = SpineConfig.from_toml(DEMO_TOML)
            fields = {k: getattr(cfg, k) for k in keep}
            return fields, f"configs/demo.toml ({cfg.BACKBONE} x{cfg.BACKBONE_WIDTH})"
        return ({"BACKBONE": "resnet18", "BACKBONE_WIDTH": 0.5},
                "resnet18 x0.5 (configs/demo.toml not found)")
    raise ValueError(f"unknown backbone key {backbone!r}; use r50, r101 or demo")


def our_config(backbone: str, size: int, batch: int) -> Any:
    """Our Config for one benchmark case (same counts as torchvision_model's)."""
    from mrcnn.config import Config

    fields, _ = base_fields(backbone)
    fields = dict(fields)
    fields.pop("RPN_ANCHOR_SCALES", None)  # torchvision's anchors: 32..512 (our default)
    depth = int(fields.get("TOP_DOWN_PYRAMID_SIZE", Config.TOP_DOWN_PYRAMID_SIZE))
    fields.setdefault("RPN_CONV_SHARED_CHANNELS", depth)  # torchvision's RPNHead width
    return Config(
        NAME=f"bench_{backbone}", IMAGES_PER_GPU=batch, NUM_CLASSES=NUM_CLASSES,
        IMAGE_RESIZE_MODE="square", IMAGE_MIN_DIM=size, IMAGE_MAX_DIM=size,
        PRE_NMS_LIMIT=pre_nms_total(size), POST_NMS_ROIS_INFERENCE=POST_NMS_ROIS,
        DETECTION_MAX_INSTANCES=DETECTIONS, DETECTION_MIN_CONFIDENCE=0.0,
        DETECTION_NMS_THRESHOLD=0.5, RPN_NMS_THRESHOLD=0.7, **fields,
    )


def _zero(layer: Any, foreground_bias: float | None = None) -> None:
    """Zero a layer's weights; optionally set the bias of classes 1.. (not background)."""
    weights = [np.zeros_like(w) for w in layer.get_weights()]
    if foreground_bias is not None:
        weights[1][1:] = foreground_bias
    layer.set_weights(weights)


def build_ours(config: Any, foreground_bias: float = 1.0) -> Any:
    """MaskRCNN (inference) with zero box deltas and a constant foreground classifier.

    foreground_bias 1.0: softmax([0, 1]) = (0.27, 0.73), every ROI foreground with score 0.73.
    """
    from mrcnn.model import MaskRCNN

    model = MaskRCNN(mode="inference", config=config, model_dir=str(REPO_ROOT / "logs"))
    km = model.keras_model
    _zero(km.get_layer("rpn_model").get_layer("rpn_bbox_pred"))
    _zero(km.get_layer("mrcnn_bbox_fc"))
    _zero(km.get_layer("mrcnn_class_logits"), foreground_bias)
    return model


def our_images(size: int, batch: int, seed: int = 0) -> list[np.ndarray]:
    """Random uint8 RGB slices [size, size, 3] (content does not change the work done)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(batch)]


# ------------------------------------------------------------------------------ torchvision
def _scaled(channels: int, width: float) -> int:
    """Same channel rounding as mrcnn.backbone.scaled (multiples of 8 below width 1)."""
    if width == 1.0:
        return int(channels)
    return max(8, int(round(channels * width / 8.0)) * 8)


def _torch_trunk(arch: str, width: float) -> tuple[Any, list[int]]:
    """A torchvision ResNet (random init, frozen BN) at a width multiplier, and the channels
    of its four stages."""
    import torch
    from torchvision.models import resnet
    from torchvision.ops.misc import FrozenBatchNorm2d

    spec = {"resnet18": (resnet.BasicBlock, [2, 2, 2, 2]),
            "resnet34": (resnet.BasicBlock, [3, 4, 6, 3]),
            "resnet50": (resnet.Bottleneck, [3, 4, 6, 3]),
            "resnet101": (resnet.Bottleneck, [3, 4, 23, 3])}
    block, counts = spec[arch]
    stem = _scaled(64, width)

    class ScaledResNet(resnet.ResNet):
        """torchvision's ResNet with every stage width times `width` (same rounding as ours)."""

        def _make_layer(self, block, planes, blocks, stride=1, dilate=False):  # noqa: ANN001
            if planes == 64:  # first stage: its input is the (scaled) stem
                self.inplanes = stem
            return super()._make_layer(block, _scaled(planes, width), blocks, stride, dilate)

    body = ScaledResNet(block, counts, norm_layer=FrozenBatchNorm2d)
    body.conv1 = torch.nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
    body.bn1 = FrozenBatchNorm2d(stem)
    channels = [_scaled(64 * 2**i, width) * block.expansion for i in range(4)]
    return body, channels


def torchvision_model(config: Any) -> Any:
    """torchvision MaskRCNN matching our config (trunk, widths, size, counts), eval mode."""
    import torch
    from torchvision.models.detection import MaskRCNN
    from torchvision.models.detection.backbone_utils import BackboneWithFPN
    from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
    from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    size = int(config.IMAGE_MAX_DIM)
    body, channels = _torch_trunk(config.BACKBONE, float(config.BACKBONE_WIDTH))
    depth = int(config.TOP_DOWN_PYRAMID_SIZE)
    backbone = BackboneWithFPN(
        body, return_layers={"layer1": "0", "layer2": "1", "layer3": "2", "layer4": "3"},
        in_channels_list=channels, out_channels=depth, extra_blocks=LastLevelMaxPool())
    fc, mask_conv = int(config.FPN_CLASSIF_FC_LAYERS_SIZE), int(config.MASK_HEAD_CONV_SIZE)
    model = MaskRCNN(
        backbone, num_classes=None, min_size=size, max_size=size,
        rpn_pre_nms_top_n_test=TV_PRE_NMS_PER_LEVEL,
        rpn_post_nms_top_n_test=int(config.POST_NMS_ROIS_INFERENCE),
        rpn_nms_thresh=float(config.RPN_NMS_THRESHOLD),
        box_detections_per_img=int(config.DETECTION_MAX_INSTANCES), box_score_thresh=0.0,
        box_nms_thresh=float(config.DETECTION_NMS_THRESHOLD),
        box_head=TwoMLPHead(depth * 7 * 7, fc),
        box_predictor=FastRCNNPredictor(fc, config.NUM_CLASSES),
        mask_head=MaskRCNNHeads(depth, [mask_conv] * 4, 1),
        mask_predictor=MaskRCNNPredictor(mask_conv, mask_conv, config.NUM_CLASSES),
    )
    with torch.no_grad():  # the same zero regressors and constant classifier as build_ours
        for layer in (model.rpn.head.bbox_pred, model.roi_heads.box_predictor.bbox_pred,
                      model.roi_heads.box_predictor.cls_score):
            layer.weight.zero_()
            layer.bias.zero_()
        model.roi_heads.box_predictor.cls_score.bias[1:] = 1.0
    return model.eval()


def torch_images(size: int, batch: int, seed: int = 0) -> list[Any]:
    """The same random slices as our_images, as float [3, H, W] in 0..1 (torchvision input)."""
    import torch

    return [torch.from_numpy(im.transpose(2, 0, 1).astype(np.float32) / 255.0)
            for im in our_images(size, batch, seed)]


# ------------------------------------------------------------------------------ calls
def our_call(config: Any, size: int, batch: int) -> Any:
    """A zero-argument call of our full detect() on `batch` random slices."""
    ours, images = build_ours(config), our_images(size, batch)
    return lambda: ours.detect(images)


def torchvision_call(config: Any, size: int, batch: int) -> tuple[Any, Any]:
    """(model, zero-argument call) of torchvision's model on the same slices."""
    import torch

    model, tensors = torchvision_model(config), torch_images(size, batch)

    def call() -> Any:
        with torch.inference_mode():
            return model(tensors)

    return model, call
