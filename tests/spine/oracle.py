"""OracleModel: a stand-in for MaskRCNN whose detect() returns the true bodies of each slice
it is shown, so the pipeline, evaluation, exports and CLIs can be tested exactly and in a
second, without a network (or TensorFlow).

It recognises a slice by the bytes of the model input the pipeline builds for it
(spine.pipeline.model_stack), so it answers for the scans it was given and fails loudly
(KeyError) on any other input.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np

from mrcnn.utils import extract_bboxes
from spine import pipeline
from spine.volume import label_instances

Scores = Callable[[np.ndarray], np.ndarray]


def constant_scores(value: float = 0.9) -> Scores:
    """Every detection scores value."""
    return lambda ids: np.full(len(ids), value, np.float32)


class OracleModel:
    """model.detect for known scans.

    scans: (volume, label map int [S, H, W]) pairs. class_of: label value -> class id (1, a
    plain body, where absent). scores: label values [n] of a slice -> scores [n] (default 0.9
    each). shuffle: return a slice's detections in a random order, as the network does (the
    order is sorted by label value otherwise). calls records the batch size of every call.
    """

    def __init__(
        self,
        scans: Iterable[tuple[object, np.ndarray]],
        class_of: dict[int, int] | None = None,
        scores: Scores | None = None,
        shuffle: bool = False,
    ) -> None:
        self.lookup: dict[bytes, np.ndarray] = {}  # model input of a slice -> its labels
        for volume, labels in scans:
            stack = pipeline.model_stack(volume)  # what the pipeline feeds the model
            for i in range(volume.num_slices):
                self.lookup[stack[i].tobytes()] = labels[i]
        self.class_of = class_of or {}
        self.scores = scores or constant_scores()
        self.shuffle = shuffle
        self.calls: list[int] = []

    def detect(self, images, verbose=0):
        self.calls.append(len(images))
        rng = np.random.default_rng(len(self.calls))
        out = []
        for image in images:
            assert image.dtype == np.uint8 and image.shape[-1] == 3
            labels = self.lookup[np.ascontiguousarray(image[..., 0]).tobytes()]
            masks, ids = label_instances(labels)
            if self.shuffle:
                order = rng.permutation(len(ids))
                masks, ids = masks[..., order], ids[order]
            out.append(
                {
                    "rois": extract_bboxes(masks),
                    "class_ids": np.array([self.class_of.get(int(i), 1) for i in ids], np.int32),
                    "scores": np.asarray(self.scores(ids), np.float32),
                    "masks": masks,
                }
            )
        return out


def shuffled_oracle(
    volume, labels: np.ndarray, class_of: dict[int, int] | None = None
) -> OracleModel:
    """The oracle for one scan, its detections in a random order with distinct scores."""
    return OracleModel(
        [(volume, labels)], class_of, scores=lambda ids: 0.99 - 0.01 * ids, shuffle=True
    )
