"""How much the ignore regions protect unlabelled vertebrae from being taught as background.

Phantoms carry exact labels for every body, S1 included. Each is relabelled like a
research volume (L1-L5 only: T12 and above and S1 hidden), then its central slices go
through the training targets (spine.dataset + mrcnn.data.build_rpn_targets, no subsampling)
with and without the ignore regions. Counted: RPN anchors that overlap a hidden body
(IoU >= 0.3, i.e. anchors that look at a real vertebra) but are labelled negative.

    python -m benchmarks.ignore_regions [--phantoms 10]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np


def hide_outside_lumbar(phantom) -> tuple[np.ndarray, list[int]]:
    """Phantom label volume with only L1-L5 kept (renumbered 1..5) and the hidden labels."""
    labels = np.asarray(phantom.labels.dataobj).astype(np.int32)
    keep = [i + 1 for i, lv in enumerate(phantom.levels) if lv.startswith("L")]
    hidden = [i + 1 for i, lv in enumerate(phantom.levels) if not lv.startswith("L")]
    out = np.zeros_like(labels)
    for new, old in enumerate(keep, start=1):
        out[labels == old] = new
    return out, hidden


def count_negatives_on_hidden(phantoms: int, seed: int = 2000) -> dict[str, float]:
    import nibabel as nib

    from mrcnn import boxes
    from mrcnn.data import build_rpn_targets, load_image_gt
    from mrcnn.utils import extract_bboxes
    from spine.config import SpineConfig
    from spine.dataset import SpineDataset
    from spine.phantom import make_phantom
    from spine.volume import load_label_map, load_volume, save_nifti

    config = SpineConfig.from_toml(
        Path(__file__).resolve().parents[1] / "configs" / "demo.toml",
        NUM_CLASSES=3, RPN_TRAIN_ANCHORS_PER_IMAGE=10**6,
    )  # fmt: skip
    totals = {"ignore": 0, "no_ignore": 0, "hidden_anchors": 0, "slices": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(phantoms):
            ph = make_phantom(seed + k, size=256, label_sacrum=True)
            partial, hidden = hide_outside_lumbar(ph)
            image_path = save_nifti(ph.image, Path(tmp) / f"p{k}.nii.gz")
            label_path = save_nifti(
                nib.Nifti1Image(partial, ph.labels.affine), Path(tmp) / f"p{k}_vertebrae.nii.gz"
            )
            full = load_label_map(ph.labels, like=load_volume(image_path))
            for ignore in (True, False):
                ds = SpineDataset(with_s1=True, ignore_unlabelled=ignore)
                ds.load_volumes([(image_path, label_path)])
                ds.prepare()
                for image_id in ds.image_ids:
                    info = ds.image_info[image_id]
                    image, meta, class_ids, bbox, _ = load_image_gt(ds, config, image_id)
                    anchors = boxes.generate_pyramid_anchors(
                        config.RPN_ANCHOR_SCALES, config.RPN_ANCHOR_RATIOS,
                        boxes.compute_backbone_shapes(config, image.shape),
                        config.BACKBONE_STRIDES, config.RPN_ANCHOR_STRIDE,
                    )  # fmt: skip
                    match, _ = build_rpn_targets(image.shape, anchors, class_ids, bbox, config)
                    # Hidden bodies on this slice, in the network's input frame.
                    scale, (top, left) = meta[11], (meta[7], meta[8])  # compose_image_meta
                    hidden_masks = np.stack([full[info["slice"]] == h for h in hidden], -1)
                    hb = extract_bboxes(hidden_masks).astype(np.float64)
                    hb = hb[(hb[:, 2] > hb[:, 0])] * scale + [top, left, top, left]
                    if not len(hb):
                        continue
                    on_hidden = boxes.compute_overlaps(anchors, hb).max(axis=1) >= 0.3
                    key = "ignore" if ignore else "no_ignore"
                    totals[key] += int((match[on_hidden] == -1).sum())
                    if ignore:
                        totals["hidden_anchors"] += int(on_hidden.sum())
                        totals["slices"] += 1
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", type=int, default=10)
    args = parser.parse_args()
    totals = count_negatives_on_hidden(args.phantoms)
    print(json.dumps(totals, indent=1))
    n = max(totals["hidden_anchors"], 1)
    print(
        f"anchors on hidden vertebrae taught as background: without ignore regions "
        f"{totals['no_ignore']} of {n} ({totals['no_ignore'] / n:.1%}), with "
        f"{totals['ignore']} ({totals['ignore'] / n:.1%}), over {totals['slices']} slices"
    )


if __name__ == "__main__":
    main()
