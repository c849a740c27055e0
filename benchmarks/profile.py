"""Where our inference time goes: cumulative sub-models cut at each stage of the graph.

Times the graph up to the FPN outputs (backbone), the RPN head, the proposal layer (top-k,
NMS), the classifier head (ROIAlign + box head), the detection layer, the whole network
(+ mask ROIAlign and mask head), then numpy molding and unmolding; each stage's cost is the
difference between consecutive cuts (medians of several calls).

    python -m benchmarks.profile --backbone r50 --size 512 [--batch 1] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks import common

# (stage name, output layer names of the cut that ends the stage)
CUTS = (
    ("backbone (trunk + FPN)", ("fpn_p2", "fpn_p3", "fpn_p4", "fpn_p5", "fpn_p6")),
    ("RPN head", ("rpn_class", "rpn_bbox")),
    ("proposals (top-k, decode, NMS)", ("ROI",)),
    ("ROIAlign + box head", ("mrcnn_class", "mrcnn_bbox")),
    ("detection layer (refine, NMS)", ("mrcnn_detection",)),
    ("mask ROIAlign + mask head", ("mrcnn_mask_unfold",)),
)


def _median_time(fn: Any, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)  # the least disturbed call (shared machine)


def run(backbone: str, size: int, batch: int, repeats: int) -> dict[str, Any]:
    """Stage times (seconds per call of `batch` images) for our TF/JAX inference model."""
    import keras

    from benchmarks import models
    from mrcnn.detection import unmold_detections

    config = models.our_config(backbone, size, batch)
    model = models.build_ours(config)
    km = model.keras_model
    images = models.our_images(size, batch)
    molded, metas, windows = model.mold_inputs(images)
    feed = {"input_image": molded.astype(np.float32), "input_image_meta": metas.astype(np.float32)}
    cumulative = []
    for name, outputs in CUTS:
        sub = keras.Model(km.inputs, [km.get_layer(n).output for n in outputs])
        fn = keras.backend.backend() == "jax"
        sub.compile(jit_compile="auto" if fn else False)
        cumulative.append((name, _median_time(lambda sub=sub: sub.predict_on_batch(feed),
                                              repeats)))
    stages = {}
    previous = 0.0
    for name, total in cumulative:
        stages[name] = total - previous
        previous = total
    out = km.predict_on_batch(feed)
    detections, masks = np.asarray(out["detections"]), np.asarray(out["mrcnn_mask"])
    stages["mold (numpy)"] = _median_time(lambda: model.mold_inputs(images), repeats)
    stages["unmold (numpy)"] = _median_time(
        lambda: [unmold_detections(detections[i], masks[i], images[i].shape, molded[i].shape,
                                   windows[i]) for i in range(batch)], repeats)
    stages["detect() total"] = _median_time(lambda: model.detect(images), repeats)
    return {"backend": keras.backend.backend(), "backbone": backbone, "size": size,
            "batch": batch, "stages_s": stages, "network_s": previous, "load": common.load()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="r50")
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    result = run(args.backbone, args.size, args.batch, args.repeats)
    for name, seconds in result["stages_s"].items():
        print(f"{name:34s} {seconds:8.3f} s")
    if args.json:
        common.write_json(args.json, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
